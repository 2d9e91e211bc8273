"""The node's periodic checks: sessions that never connect or whose publisher goes silent,
and the subscribers' sender reports."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from unbroken.media.peer import PublisherPeer
from unbroken.protocol.endings import Ending

if TYPE_CHECKING:
    from .media_session import MediaSession
    from .state import NodeState

log = logging.getLogger("unbroken.node")

WATCHDOG_INTERVAL = 0.1
LATE_TICK = 0.2  # s: a watchdog tick later than this follows a stall of the event loop
# every subscriber track's RTCP sender report goes out from this one timer (RFC 3550's
# minimum interval is 5 s; browsers sync audio and video sooner with 1 s)
SENDER_REPORT_INTERVAL = 1.0


class Watchdog:
    """Owns the node's one timer: it ends sessions that time out (connect, media) and
    refreshes sender reports."""

    def __init__(self, state: "NodeState") -> None:
        self.state = state
        self._task: asyncio.Task | None = None
        # what a tick looks at: publishers, and subscribers until they connect (a node's
        # many connected viewers cost its 10 ticks a second nothing)
        self._watched: dict[str, "MediaSession"] = {}

    def watch(self, session: "MediaSession") -> None:
        self._watched[session.id] = session

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def _watch(self) -> None:
        last_reports = 0.0
        last_tick = time.monotonic()
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            now = time.monotonic()
            # after the event loop itself stalled, packets that did arrive may still wait
            # in the sockets: judge publishers' silence only on a tick that came on time
            on_time = now - last_tick < WATCHDOG_INTERVAL + LATE_TICK
            last_tick = now
            try:
                if on_time:
                    self._check_sessions(now)
                if now - last_reports >= SENDER_REPORT_INTERVAL:
                    last_reports = now
                    self._send_sender_reports()
            except Exception:
                log.exception("watchdog pass failed")

    def _check_sessions(self, now: float) -> None:
        config = self.state.config
        sessions = self.state.sessions
        for session in list(self._watched.values()):
            peer = session.peer
            if sessions.get(session.id) is not session:  # ended
                del self._watched[session.id]
            elif isinstance(peer, PublisherPeer):
                last = peer.last_packet_at()
                if last is None:
                    if now - session.created_at > config.connect_timeout:
                        self._end(session, Ending.CONNECT_TIMEOUT,
                                  "no media before connect timeout")
                elif now - last > config.media_timeout:
                    self._end(session, Ending.MEDIA_TIMEOUT, "media timeout")
            elif peer.connected_at is not None:
                del self._watched[session.id]  # a subscriber that connected: nothing to time
            elif now - session.created_at > config.connect_timeout:
                self._end(session, Ending.CONNECT_TIMEOUT, "not connected before connect timeout")

    def _end(self, session, ending: Ending, reason: str) -> None:
        asyncio.ensure_future(self.state.end(session, ending, reason))

    def _send_sender_reports(self) -> None:
        for stream in self.state.streams.values():
            stream.send_sender_reports()
