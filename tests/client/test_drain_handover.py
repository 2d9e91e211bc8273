"""Make-before-break on a drain notice (the Python twin of web/restore.js): the old
session stays open, and keeps counting media, until the new session's first frame;
other faults still close the old session first."""

from __future__ import annotations

import asyncio

import pytest

from unbroken.client.attempt import Attempt
from unbroken.client.options import RestoreOptions
from unbroken.client.restorer import RestoringClient
from unbroken.protocol.faults import Fault
from unbroken.protocol.states import Kind

pytestmark = pytest.mark.timeout(10)

FIRST_FRAME_S = 0.3  # the new session's first frame comes this long after it opens


class Session(Attempt):
    """A session that delivers frames every 20 ms once open (the first after a delay for
    all but the first session) until closed; records when it opened and closed."""

    def __init__(self, url: str, log: list, delay: float) -> None:
        super().__init__(url)
        self.log, self.delay = log, delay
        self.closed_at: float | None = None

    async def open(self) -> None:
        self.log.append(("open", self.url, asyncio.get_running_loop().time()))
        self.run_in_background(self._frames())

    async def _frames(self) -> None:
        await asyncio.sleep(self.delay)
        while True:
            self.media_arrived()
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.stop_background()
        self.closed_at = asyncio.get_running_loop().time()
        self.log.append(("close", self.url, self.closed_at))


class Viewer(RestoringClient):
    role = "subscriber"
    kind = Kind.PLAY
    live_state = "PLAYING"
    stopped_state = "STOPPED"

    def __init__(self) -> None:
        super().__init__(["http://a", "http://b"], "cam",
                         options=RestoreOptions(network_watch=False, jitter=0))
        self.log: list = []
        self.sessions: list[Session] = []

    def _new_attempt(self, url: str) -> Attempt:
        session = Session(url, self.log, 0.0 if not self.sessions else FIRST_FRAME_S)
        self.sessions.append(session)
        return session


async def _restored(client: Viewer) -> None:
    while True:
        event = await client.next_event(5)
        if event.kind == "restored":
            return


async def test_drain_keeps_the_old_session_until_the_new_one_plays():
    client = Viewer()
    await client.start()
    old = client.sessions[0]
    await asyncio.sleep(0.1)
    old.report_fault(Fault.NODE_DRAINING)
    await asyncio.wait_for(_restored(client), 5)
    new = client.sessions[-1]
    await asyncio.sleep(0.05)  # the background close runs
    assert new.url == "http://b" and old.closed_at is not None
    # the old session was still open, and still delivering, when the new one's first frame came
    assert old.closed_at >= new.first_media_at - 0.01
    assert old.last_media_at >= new.first_media_at - 0.1
    report = client.restores[-1]
    assert report.fault == Fault.NODE_DRAINING and report.gap_ms == 0.0
    await client.stop()


async def test_other_faults_break_before_make():
    client = Viewer()
    await client.start()
    old = client.sessions[0]
    await asyncio.sleep(0.1)
    old.report_fault(Fault.CONNECTION_FAILED)
    await asyncio.wait_for(_restored(client), 5)
    new = client.sessions[-1]
    assert old.closed_at is not None and old.closed_at < new.first_media_at
    assert client.restores[-1].gap_ms > 0
    await client.stop()
