"""DefaultRestorePolicy as a pure function: where and when each try of a restore goes."""

import random

import pytest

from unbroken.client.options import RestoreOptions
from unbroken.client.policy import DefaultRestorePolicy, NextTry, RestoreContext
from unbroken.protocol.faults import TRY_ELSEWHERE, Fault

URLS = ("http://a", "http://b", "http://c")


def policy(**knobs) -> DefaultRestorePolicy:
    return DefaultRestorePolicy(RestoreOptions(jitter=0.0, **knobs), random.Random(1))


def plans(p: DefaultRestorePolicy, fault, last_url, n: int, prefer_url=None) -> list:
    return [p.next_try(RestoreContext(fault, tries, URLS, last_url, prefer_url))
            for tries in range(n)]


def test_starting_tries_every_url_at_once_then_waits_by_the_backoff():
    p = policy(backoff_ms=(0, 25, 50), timeout_ms=1000)
    assert plans(p, None, None, 7) == [
        NextTry(0.0, "http://a", 1), NextTry(0.0, "http://b", 1), NextTry(0.0, "http://c", 1),
        NextTry(0.025, "http://a", 2), NextTry(0.0, "http://b", 2), NextTry(0.0, "http://c", 2),
        NextTry(0.05, "http://a", 3)]


def test_after_an_ordinary_fault_the_same_node_comes_first():
    first = policy().next_try(RestoreContext(Fault.MISSING_PINGS, 0, URLS, "http://b"))
    assert first == NextTry(0.0, "http://b", 1)
    assert [t.url for t in plans(policy(), Fault.BITRATE_ZERO, "http://c", 4)] == [
        "http://c", "http://a", "http://b", "http://c"]


@pytest.mark.parametrize("fault", sorted(TRY_ELSEWHERE))
def test_after_a_try_elsewhere_fault_the_next_url_comes_first(fault):
    assert [t.url for t in plans(policy(), fault, "http://c", 3)] == [
        "http://a", "http://b", "http://c"]


def test_a_preferred_url_comes_first_whatever_the_fault():
    tried = plans(policy(), Fault.PUBLISHER_MOVED, "http://a", 2, prefer_url="http://c")
    assert [t.url for t in tried] == ["http://c", "http://a"]


def test_an_unlisted_last_url_starts_from_the_first():
    assert policy().next_try(RestoreContext(Fault.NODE_DRAINING, 0, URLS, "http://x")).url \
        == "http://a"


def test_gives_up_after_max_tries_passes_over_the_list():
    p = policy(max_tries=2)
    assert p.next_try(RestoreContext(None, 5, URLS)) is not None
    assert p.next_try(RestoreContext(None, 6, URLS)) is None
    assert p.next_try(RestoreContext(None, 0, ())) is None


def test_waits_are_capped_by_the_timeout_and_continue_at_it():
    p = policy(backoff_ms=(0, 500, 3000), timeout_ms=1000)
    assert [p.wait(r) for r in range(5)] == [0.0, 0.5, 1.0, 1.0, 1.0]


def test_jitter_spreads_waits_within_bounds_and_repeats_with_the_same_seed():
    options = RestoreOptions(backoff_ms=(0, 100), timeout_ms=100, jitter=0.2)
    first, second = (DefaultRestorePolicy(options, random.Random(7)) for _ in range(2))
    one = [first.wait(r) for r in range(1, 6)]
    two = [second.wait(r) for r in range(1, 6)]
    assert one == two
    assert all(0.08 <= w <= 0.12 for w in one) and len(set(one)) > 1
    assert DefaultRestorePolicy(options, random.Random(7)).wait(0) == 0.0  # at once stays


def test_the_default_is_todays_schedule():
    p = DefaultRestorePolicy()
    o = p.options
    assert (o.backoff_ms, o.timeout_ms, o.max_tries) == ((0, 25, 50, 100, 200, 400), 1000, 100)
    assert p.next_try(RestoreContext(None, 0, ("http://a",))) == NextTry(0.0, "http://a", 1)
