"""How an SDK attempt negotiates with a node and hears from it.

"http": WHIP/WHEP over HTTP, with the session's server-sent events for stream
events and liveness (keep-alives every `ping_period_ms`).
"session": the session channel (`GET /ws`): offer/answer over the socket, server
pings, stream states and node notices (see docs/session-channel.md).

Either way the attempt gets the same media session object (a WhipPublisher or
WhepViewer, or their session-channel twins) and two callbacks: `on_event(name, data)`
for stream events ("active", "inactive", "reconnect") and `on_fault(name, last_good)`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from unbroken.protocol.faults import Fault
from unbroken.protocol.states import SessionState, StreamState
from unbroken.protocol.whip_whep import SseEvent

from .options import RestoreOptions
from .reattach import ReattachPolicy
from .session import SessionClient, SessionViewer
from .watchdogs import EventStreamWatch
from .whep import WhepViewer
from .whip import OfferAnswerSession, WhipPublisher

__all__ = ["SIGNALING", "Signaling"]

SIGNALING = ("http", "session")


class Signaling:
    """Opens an attempt's publish or play over the chosen signaling, and owns what it
    hears from the node meanwhile: the event stream (HTTP) or the session channel. It
    turns both into the attempt's two callbacks; it never restores anything."""

    def __init__(self, kind: str, url: str, stream: str, token: str | None,
                 options: RestoreOptions, on_event: Callable[[str, dict], None],
                 on_fault: Callable[[str, float | None], None],
                 media_alive: Callable[[], Awaitable[bool] | bool] | None = None) -> None:
        """`media_alive()`: the session's media proves it alive now (a proxied event
        stream that breaks is re-attached meanwhile, see reattach.py)."""
        if kind not in SIGNALING:
            raise ValueError(f"signaling must be one of {SIGNALING}")
        self.kind = kind
        self.url = url
        self.stream = stream
        self.token = token
        self.options = options
        self.on_event = on_event
        self.on_fault = on_fault
        self.media_alive = media_alive
        self.channel: SessionClient | None = None
        self._watch: EventStreamWatch | None = None

    @property
    def _period(self) -> float:
        return self.options.ping_period_ms / 1000

    async def publish(self, tracks, video_codec: str | None, on_state,
                      replaces: str | None = None) -> WhipPublisher:
        """`replaces`: the Location of our previous session on this node."""
        timeout = self.options.connect_timeout_s
        if self.kind == "session":
            await self._open_channel()
            return await self.channel.publish(self.stream, tracks, video_codec,
                                              on_state=on_state, http_timeout=timeout,
                                              replaces=replaces)
        session = WhipPublisher(self.url, self.stream, tracks=tracks, video_codec=video_codec,
                                token=self.token, replaces=replaces, http_timeout=timeout,
                                on_state=on_state)
        await session.start()
        self._watch_events(session)
        return session

    async def play(self, **viewer_args) -> WhepViewer:
        """`viewer_args`: WhepViewer's keyword arguments (decode, on_frame, on_receivers...)."""
        timeout = self.options.connect_timeout_s
        if self.kind == "session":
            await self._open_channel()
            viewer = SessionViewer(self.channel, self.stream, http_timeout=timeout,
                                   **viewer_args)
            return await viewer.start()
        viewer = WhepViewer(self.url, self.stream, self.token, http_timeout=timeout,
                            **viewer_args)
        await viewer.start()
        self._watch_events(viewer)
        return viewer

    def last_heard(self) -> float | None:
        """When the node was last heard from (keep-alive, ping, any event), if we listen."""
        if self.channel is not None:
            return self.channel.last_ping_at
        if self._watch is not None:
            return self._watch.last_heard
        return None

    @property
    def reattached(self) -> int:
        """Times the signaling was attached again after its path broke (a proxy restart)."""
        if self.channel is not None:
            return self.channel.resumed
        return self._watch.reattached if self._watch is not None else 0

    async def _open_channel(self) -> None:
        o = self.options
        self.channel = SessionClient(
            self.url, self.token, missing_pings=o.missing_pings,
            ping_period=self._period * o.missing_pings, on_state=self.on_channel_state,
            on_message=self.on_channel_message, connect_timeout=o.connect_timeout_s)
        self.channel.reattach = ReattachPolicy(max_ms=o.reattach_ms)
        self.channel.media_alive = self.media_alive
        await self.channel.connect()

    def on_channel_state(self, state: str, code: str | None, reason: str | None) -> None:
        """The session channel's state: FAILED is the attempt's fault (its code, if any)."""
        if state == SessionState.FAILED:
            last_ping = self.channel.last_ping_at if self.channel else None
            self.on_fault(code or Fault.SESSION_FAILED, last_ping)

    def on_channel_message(self, message: dict) -> None:
        """A session-channel message: stream events and drain notices go to `on_event`,
        a FAILED stream state to `on_fault`."""
        kind = message.get("type")
        if kind == "stream_event":
            self.on_event(message.get("event", ""), message)
        elif kind == "node_draining":
            self.on_event(SseEvent.RECONNECT, message)  # its code says draining
        elif kind == "stream_state" and message.get("state") == StreamState.FAILED:
            self.on_fault(message.get("code") or Fault.STREAM_FAILED, time.monotonic())

    def _watch_events(self, session: OfferAnswerSession) -> None:
        if session.events_url:
            reattach = None
            if session.proxied:  # the node may outlive a broken path to the proxy
                reattach = ReattachPolicy(max_ms=self.options.reattach_ms)
            self._watch = EventStreamWatch(session.events_url, self.token, self._period,
                                           self.options.missing_pings, self.on_event,
                                           self.on_fault, reattach, self.media_alive)
            self._watch.start()

    async def close(self) -> None:
        if self._watch:
            self._watch.stop()
        if self.channel:
            await self.channel.close()

