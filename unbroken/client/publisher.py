"""Publisher: publishes a stream over WHIP and brings publishing back after every fault."""

from __future__ import annotations

import asyncio
import time

from aiortc import MediaStreamTrack

from unbroken.protocol.faults import Fault as FaultName

from .events import PUBLISHING, UNPUBLISHED
from .restorer import Attempt, Fault, RestoringClient
from .sources import TrackFactory, testsrc
from .signaling import Signaling
from .watchdogs import StallWatchdog
from .whip import WhipPublisher


class PublishAttempt(Attempt):
    media_proves_health = False  # bytes "sent" into a dead path still count up

    def __init__(self, client: "Publisher", url: str, replaces: str | None = None) -> None:
        super().__init__(url)
        self.client = client
        self.replaces = replaces
        self.codec = client.codec
        self.session: WhipPublisher | None = None
        self.signaling: Signaling | None = None
        self.tracks: list[MediaStreamTrack] = []

    async def open(self) -> None:
        client = self.client
        self.tracks = client.source()
        self.signaling = Signaling(client.signaling, self.url, client.stream, client.token,
                                   client.options, self._on_server_event, self.report_fault)
        self.session = await self.signaling.publish(self.tracks, self.codec, self._on_state,
                                                    self.replaces)
        self._watch_media()

    def _watch_media(self) -> None:
        """Media "arrives" when the sender's byte count grows; the bitrate check (seed 004)
        reports a stall when it stops growing."""
        options = self.client.options
        senders = [s for s in self.session.pc.getSenders() if s.track is not None]
        watched = next((s for s in senders if s.kind == "video"), senders[0] if senders else None)
        if watched is None:
            return

        last_sent = 0

        async def bytes_sent() -> int:
            nonlocal last_sent
            stats = await watched.getStats()
            sent = sum(s.bytesSent for s in stats.values() if s.type == "outbound-rtp")
            if sent > last_sent:
                last_sent = sent
                self.media_arrived()
            return sent

        interval = options.bitrate_check_interval_ms / 1000
        tries = options.bitrate_max_tries if options.bitrate_check else 10 ** 9
        watchdog = StallWatchdog(FaultName.BITRATE_ZERO, bytes_sent, interval, tries,
                                 self.report_fault)
        watchdog.start()
        self._watchers.append(watchdog)
        # until the first sample, poll faster so the restore is seen promptly
        self._tasks.append(asyncio.create_task(self._poll_first_media(bytes_sent)))

    async def _poll_first_media(self, bytes_sent) -> None:
        while self.first_media_at is None:
            await bytes_sent()
            await asyncio.sleep(0.01)

    def _on_state(self, state: str) -> None:
        if state in ("failed", "closed"):
            self.report_fault(f"connection_{state}", self.last_media_at)

    def _on_server_event(self, event: str, data: dict) -> None:
        if event == "reconnect":
            self.report_fault(FaultName.NODE_DRAINING, time.monotonic())

    async def close(self) -> None:
        self._stop_background()
        if self.session:
            await self.session.stop()
        if self.signaling:
            await self.signaling.close()
        for track in self.tracks:
            track.stop()


class Publisher(RestoringClient):
    """Publishes `source` (a TrackFactory, see sources.py) to `stream` on the first URL
    that takes it, and restores publishing by itself after faults. `signaling`:
    "http" (WHIP) or "session" (the session channel)."""

    role = "publisher"
    live_state = PUBLISHING
    stopped_state = UNPUBLISHED

    def __init__(self, urls, stream: str, source: TrackFactory | None = None,
                 codec: str = "h264", signaling: str = "http", **kwargs) -> None:
        super().__init__(urls, stream, **kwargs)
        self.signaling = signaling
        self.source = source or testsrc()
        self.codec = codec

    def _new_attempt(self, url: str) -> Attempt:
        previous = self.attempt
        replaces = None
        if previous is not None and previous.url == url and previous.session is not None:
            replaces = previous.session.location  # take over from our own old session
        return PublishAttempt(self, url, replaces)

    def _after_fault(self, fault: Fault) -> bool:
        if fault.name == FaultName.BITRATE_ZERO and self.options.change_codec:
            if self.codec == "vp8":
                return False  # VP8 stalled too: give up and report (seed 004)
            self.codec = "vp8"
        return True

    def _report_extra(self) -> dict:
        return {"codec": self.codec}

    def stats(self) -> dict:
        attempt = self.attempt
        return {"state": self.state, "url": self.url, "codec": self.codec,
                "restores": len(self.restores),
                "connection": attempt.session.connection_state
                if attempt and attempt.session else "new"}
