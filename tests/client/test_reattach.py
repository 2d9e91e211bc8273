"""ReattachPolicy as a pure function: what a lost, proxied event stream does next."""

import pytest

from unbroken.client.reattach import ReattachPolicy

POLICY = ReattachPolicy(waits_ms=(0, 100, 250), max_ms=2000)


def test_waits_grow_then_repeat_the_last_one():
    assert [POLICY.next_wait(None, n, 0.1, True) for n in range(5)] == [0, 0.1, 0.25, 0.25, 0.25]


def test_not_now_answers_are_retried_and_no_such_session_is_final():
    assert POLICY.next_wait(503, 1, 0.1, True) == 0.1
    assert POLICY.next_wait(429, 1, 0.1, True) == 0.1
    for final in (400, 401, 403, 404, 410, 500, 502, 504):
        assert POLICY.next_wait(final, 1, 0.1, True) is None


def test_dead_media_or_the_time_limit_give_the_session_up():
    assert POLICY.next_wait(None, 0, 0.0, False) is None
    assert POLICY.next_wait(None, 3, 2.0, True) is None
    assert POLICY.next_wait(None, 3, 1.9, True) == pytest.approx(0.1)  # never past the limit


def test_zero_means_never():
    assert ReattachPolicy(max_ms=0).next_wait(None, 0, 0.0, True) is None
