"""Publisher: publishes a stream over WHIP (or the session channel) and brings publishing
back after every fault."""

from __future__ import annotations

import asyncio
import time

from aiortc import MediaStreamTrack

from unbroken.protocol.faults import Fault
from unbroken.protocol.states import Kind
from unbroken.protocol.whip_whep import SseEvent

from .attempt import Attempt, FaultRecord
from .events import PUBLISHING, UNPUBLISHED
from .options import RestoreOptions
from .restorer import RestoringClient
from .signaling import Signaling
from .sources import TrackFactory, testsrc
from .watchdogs import StallWatchdog
from .whip import WhipPublisher

__all__ = ["PublishAttempt", "Publisher"]

FIRST_SAMPLE_POLL = 0.01  # s: outbound bytes polled this often until the first ones
# the node's receiver reports come every 0.5-1.5 s: one this recent proves it receives us
REPORT_PROVES_ALIVE_S = 2.5


class PublishAttempt(Attempt):
    """One publish on one node: fresh tracks from the source, a WHIP (or session-channel)
    session, and seed 004's bitrate check on the bytes it sends."""

    media_proves_health = False  # bytes "sent" into a dead path still count up

    def __init__(self, url: str, stream: str, source: TrackFactory, codec: str,
                 signaling: str, options: RestoreOptions, token: str | None = None,
                 replaces: str | None = None) -> None:
        super().__init__(url)
        self.stream = stream
        self.source = source
        self.codec = codec
        self.signaling_kind = signaling
        self.options = options
        self.token = token
        self.replaces = replaces  # our previous session's Location on this node
        self.session: WhipPublisher | None = None
        self.signaling: Signaling | None = None
        self.tracks: list[MediaStreamTrack] = []

    async def open(self) -> None:
        self.tracks = self.source()
        self.signaling = Signaling(self.signaling_kind, self.url, self.stream, self.token,
                                   self.options, self._on_server_event, self.report_fault,
                                   self._node_receives)
        self.session = await self.signaling.publish(self.tracks, self.codec, self.connection_changed,
                                                    self.replaces)
        self._watch_bytes_sent()

    def _watch_bytes_sent(self) -> None:
        """Media "arrives" when the sender's byte count grows; the bitrate check (seed 004)
        reports a stall when it stops growing."""
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

        o = self.options
        tries = o.bitrate_max_tries if o.bitrate_check else 10 ** 9
        self.watch(StallWatchdog(Fault.BITRATE_ZERO, bytes_sent,
                                 o.bitrate_check_interval_ms / 1000, tries, self.report_fault))
        # until the first sample, poll faster so the restore is seen promptly
        self.run_in_background(self._poll_first_media(bytes_sent))

    async def _poll_first_media(self, bytes_sent) -> None:
        while self.first_media_at is None:
            await bytes_sent()
            await asyncio.sleep(FIRST_SAMPLE_POLL)

    async def _node_receives(self) -> bool:
        """The node's receiver reports say it still gets our media."""
        age = await self.session.report_age() if self.session is not None else None
        return age is not None and age < REPORT_PROVES_ALIVE_S

    def _on_server_event(self, event: str, data: dict) -> None:
        if event == SseEvent.RECONNECT:
            self.report_fault(Fault.NODE_DRAINING, time.monotonic())

    async def close(self) -> None:
        self.stop_background()
        if self.session:
            await self.session.stop()
        if self.signaling:
            await self.signaling.close()
        for track in self.tracks:
            track.stop()


class Publisher(RestoringClient):
    """Publishes `source` (a TrackFactory, see sources.py) to `stream` on the first URL
    that takes it, and restores publishing by itself after faults. `signaling`:
    "http" (WHIP) or "session" (the session channel). `policy` (a RestorePolicy) and
    `url_source` (a UrlSource) replace where and when restores try; `manager` asks stream
    managers for a route on every try (see RestoringClient)."""

    role = "publisher"
    kind = Kind.PUBLISH
    live_state = PUBLISHING
    # the draining node keeps our old session while its viewers (edges) move on
    drain_hold_s = 10.0
    stopped_state = UNPUBLISHED

    def __init__(self, urls, stream: str, source: TrackFactory | None = None,
                 codec: str = "h264", signaling: str = "http", **kwargs) -> None:
        super().__init__(urls, stream, **kwargs)
        self.signaling = signaling
        self.source = source or testsrc()
        self.codec = codec

    def _new_attempt(self, url: str) -> PublishAttempt:
        previous = self.attempt
        replaces = None
        if isinstance(previous, PublishAttempt) and previous.url == url \
                and previous.session is not None:
            replaces = previous.session.location  # take over from our own old session
        return PublishAttempt(url, self.stream, self.source, self.codec, self.signaling,
                              self.options, self.token, replaces)

    def _after_fault(self, fault: FaultRecord) -> bool:
        if fault.name == Fault.BITRATE_ZERO and self.options.change_codec:
            if self.codec == "vp8":
                return False  # VP8 stalled too: give up and report (seed 004)
            self.codec = "vp8"
        return True

    def _report_extra(self) -> dict:
        return {"codec": self.codec}

    def stats(self) -> dict:
        attempt = self.attempt
        return {"state": self.state, "url": self.url, "node": self.node, "codec": self.codec,
                "restores": len(self.restores),
                "connection": attempt.session.connection_state
                if isinstance(attempt, PublishAttempt) and attempt.session else "new"}
