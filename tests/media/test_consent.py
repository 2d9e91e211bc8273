"""Node-wide ICE consent freshness (unbroken.media.consent): real aioice connections over
the machine's own address, their consent checked from one timer; a peer that stops
answering loses consent, and its connection closes."""

import asyncio

import pytest
from aioice import Connection

from unbroken.media import rtc_internals
from unbroken.media.consent import ConsentFreshness

pytestmark = pytest.mark.timeout(30)


async def connected_pair() -> tuple[Connection, Connection]:
    a = Connection(ice_controlling=True, components=1, use_ipv6=False)
    b = Connection(ice_controlling=False, components=1, use_ipv6=False)
    await asyncio.gather(a.gather_candidates(), b.gather_candidates())
    for here, there in ((a, b), (b, a)):
        for candidate in there.local_candidates:
            await here.add_remote_candidate(candidate)
        await here.add_remote_candidate(None)
        here.remote_username, here.remote_password = there.local_username, there.local_password
    await asyncio.gather(a.connect(), b.connect())
    return a, b


async def until(predicate, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
async def checker():
    consent = ConsentFreshness(interval=0.2, failures_allowed=3, timeout=0.15, tick=0.05)
    consent.start()
    rtc_internals.use_consent_freshness(consent)
    yield consent
    rtc_internals.use_consent_freshness(None)
    await consent.stop()


async def test_answered_checks_keep_consent_and_a_silent_peer_loses_it(checker):
    a, b = await connected_pair()
    try:
        await until(lambda: checker.watching == 2, 5)
        await asyncio.sleep(1.0)  # ≈ 5 rounds each way, all answered
        assert checker.sent >= 6 and checker.failed == 0 and checker.expired == 0
        # no task per connection ticks: the connections' consent tasks just wait
        assert not a._query_consent_task.done() and not b._query_consent_task.done()
        assert rtc_internals.consent_freshness() is checker

        await b.close()  # b's socket is gone: a's checks go unanswered
        await until(lambda: checker.expired == 1, 5)
        assert checker.failed >= 3
        await until(lambda: checker.watching == 0, 2)  # a closed, as aioice's own check does
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(a.recv(), 1)
    finally:
        await a.close()
        await b.close()


async def test_without_a_checker_aioice_checks_each_connection(checker):
    rtc_internals.use_consent_freshness(None)
    a, b = await connected_pair()
    try:
        await asyncio.sleep(0.3)
        assert checker.watching == 0 and checker.sent == 0
        assert not a._query_consent_task.done()  # aioice's own loop, asleep for ≈ 5 s
    finally:
        await a.close()
        await b.close()
