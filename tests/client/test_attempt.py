"""Attempt: the first fault wins, media narrows when the fault happened, waits are bounded."""

import asyncio

import pytest

from unbroken.client.attempt import Attempt
from unbroken.protocol.faults import Fault


async def test_the_first_fault_wins_and_media_narrows_last_good():
    attempt = Attempt("http://a")
    attempt.media_arrived()
    attempt.report_fault(Fault.MEDIA_SILENCE, last_good_at=0.0)
    attempt.report_fault(Fault.NETWORK_CHANGE)
    fault = await asyncio.wait_for(attempt.wait_fault(), 1)
    assert fault.name == Fault.MEDIA_SILENCE and attempt.faulted
    assert fault.last_good_at == attempt.last_media_at == fault.last_media_at


async def test_waiting_for_media_ends_with_media_a_fault_or_a_timeout():
    attempt = Attempt("http://a")
    with pytest.raises(TimeoutError):
        await attempt.wait_media(0.02)
    attempt.report_fault(Fault.CONNECTION_FAILED)
    with pytest.raises(ConnectionError, match="connection_failed"):
        await attempt.wait_media(1)
    playing = Attempt("http://b")
    playing.media_arrived()
    await playing.wait_media(0.01)


async def test_another_attempts_media_and_fault_become_its_own():
    outer, inner = Attempt("http://a"), Attempt("http://a")
    inner.media_arrived()
    outer.take_media(inner)
    await outer.wait_media(0.01)
    inner.report_fault(Fault.HLS_ERROR)
    outer.take_fault(await inner.wait_fault())
    assert (await outer.wait_fault()).name == Fault.HLS_ERROR
