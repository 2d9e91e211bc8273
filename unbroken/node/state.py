"""The node's live state: its streams and media sessions, and how sessions start and end."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from unbroken.media.peer import Peer, PublisherPeer, SubscriberPeer
from unbroken.media.stream import Source, Stream, StreamChange
from unbroken.protocol import session as proto
from unbroken.protocol.endings import Ending
from unbroken.protocol.states import ACTIVE_STATE, Kind, StreamState
from unbroken.protocol.whip_whep import SseEvent

from .config import NodeConfig
from .live_waiters import LiveWaiters
from .media_session import MediaSession
from .media_start import announce_media_start
from .metrics import NodeMetrics
from .watchdog import Watchdog

log = logging.getLogger("unbroken.node")

# at most one viewercount event per stream this often (s): the first change is told at once,
# later ones within the interval as one event with the number at its end (a burst of N
# joins costs O(N) events, not N²/2)
VIEWERCOUNT_INTERVAL = 0.25


class StreamBusy(Exception):
    """The stream already has a live publisher."""


class NotLive(Exception):
    """The stream has no publisher."""


class StreamPuller(Protocol):
    """How an edge gets a stream it does not have (the relay, ``node.relay.Relay``)."""

    async def pull(self, name: str, wait: float) -> None:
        """Start pulling `name` if needed; return once it is live here, or the wait
        (0: the puller's own set-up wait) is over."""

    def hold(self, name: str) -> None:
        """A viewer is joining `name`: keep its pull (restart the linger)."""

    def describe(self, name: str) -> dict | None:
        """The API's ``upstream`` figures of a pulled stream, or None."""

    def upstream_urls(self) -> dict[str, str]:
        """Each stream pulled now and the base URL of the upstream it comes from."""


class NodeState:
    """Owns the node's streams and media sessions: starts publishes and plays, ends them,
    turns their changes into session events, and drains. Who may start one is decided by
    ``Admission``; timeouts by the ``Watchdog``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.metrics = NodeMetrics()
        self.streams: dict[str, Stream] = {}
        self.sessions: dict[str, MediaSession] = {}
        self.draining = False
        self.redirect: str | None = None  # where draining sends clients (relative URL)
        # the drain's deadline (monotonic) once a drain was asked for (SIGTERM or the
        # admin API); `shutdown` is set then, and the server drains and exits
        self.drain_until: float | None = None
        self.shutdown = asyncio.Event()
        # called with the node_draining fields when the node starts draining
        self.drain_listeners: list[Callable[[dict], None]] = []
        # called with (session, state) on every stream state change of a media session
        self.state_listeners: list[Callable[[MediaSession, StreamState], None]] = []
        # added to every new stream's listeners (the HLS service)
        self.stream_listeners: list = []
        self.started_at = time.time()
        self.live_waiters = LiveWaiters()
        self.watchdog = Watchdog(self)
        # set on an edge: pulls streams its viewers ask for from upstream
        self.puller: StreamPuller | None = None
        # per stream name: when its viewer count was last told, and the pending telling
        self._viewercount_told: dict[str, float] = {}
        self._viewercount_pending: dict[str, asyncio.TimerHandle] = {}

    # lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        self.watchdog.start()

    async def stop(self) -> None:
        self.watchdog.stop()
        for pending in self._viewercount_pending.values():
            pending.cancel()
        self._viewercount_pending.clear()
        await asyncio.gather(*(self.end(s, Ending.NODE_SHUTDOWN, "node shutting down")
                               for s in list(self.sessions.values())),
                             return_exceptions=True)

    # sessions ------------------------------------------------------------
    def stream(self, name: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None:
            stream = Stream(name)
            stream.listeners += [self._on_stream_change, *self.stream_listeners]
            self.streams[name] = stream
        return stream

    async def publish(self, name: str, offer: str, remote_ice,
                      replaces: str | None = None) -> MediaSession:
        """`replaces`: the id of this publisher's previous session on the stream (its
        unguessable Location proves it): a restoring publisher takes over at once instead
        of waiting for the old session's media timeout."""
        stream = self.stream(name)

        def refused() -> bool:
            return (stream.live and self.config.on_publisher_conflict == "reject"
                    and not (replaces and stream.source.id == replaces))

        if refused():
            raise StreamBusy(name)
        peer = PublisherPeer(_new_id(), stream)
        try:
            answer = await peer.answer(offer)
        except BaseException:
            await peer.close("negotiation failed")
            self.forget_idle(stream)
            raise
        previous = None
        if stream.live:
            if refused():
                await peer.close("stream busy")
                raise StreamBusy(name)
            previous = self.sessions.get(stream.source.id)
        session = self._register(MediaSession(peer.id, Kind.PUBLISH, stream, peer, remote_ice,
                                              answer))
        # attach before the previous publisher closes: the stream is never left empty
        self.attach_source(stream, peer.source)
        if previous:
            await self.end(previous, Ending.REPLACED, "replaced by a new publisher")
        log.info("publisher started", extra={"stream": name, "session": peer.id,
                                             "codecs": codec_names(stream)})
        return session

    async def play(self, name: str, offer: str, remote_ice,
                   wait_live: float = 0.0) -> MediaSession:
        stream = self.streams.get(name)
        if stream is None or not stream.live:
            if self.puller is not None:
                await self.puller.pull(name, wait_live)
            elif wait_live > 0:
                await self.live_waiters.wait(name, wait_live)
            stream = self.streams.get(name)
        elif self.puller is not None:
            self.puller.hold(name)
        if stream is None or not stream.live:
            raise NotLive(name)
        peer = SubscriberPeer(_new_id(), stream)
        try:
            answer = await peer.answer(offer)
        except BaseException:
            await peer.close("negotiation failed")
            raise
        session = self._register(MediaSession(peer.id, Kind.PLAY, stream, peer, remote_ice,
                                              answer))
        stream.subscriber_ids.add(peer.id)
        self._push_viewer_count(stream)
        log.info("subscriber started", extra={"stream": name, "session": peer.id})
        return session

    def _register(self, session: MediaSession) -> MediaSession:
        self.sessions[session.id] = session
        self.watchdog.watch(session)
        session.peer.on_close = self._on_peer_closed
        self.metrics.sessions_created.labels(session.kind).inc()
        asyncio.ensure_future(announce_media_start(
            session, lambda s: self._set_state(s, ACTIVE_STATE[s.kind])))
        return session

    def _set_state(self, session: MediaSession, state: StreamState,
                   code: str | None = None, reason: str | None = None) -> None:
        session.state = state
        session.events.push(SseEvent.STREAM_STATE,
                            proto.state_data(session.stream.name, state, code, reason))
        for listener in list(self.state_listeners):
            try:
                listener(session, state)
            except Exception:
                log.exception("state listener failed")

    async def end(self, session: MediaSession, ending: Ending, reason: str) -> None:
        """End a session; `ending` becomes its final state's code, `reason` its text."""
        if session.ending is None and not session.peer.closed.is_set():
            session.ending = ending
        await session.peer.close(reason)

    def _on_peer_closed(self, peer: Peer) -> None:
        session = self.sessions.pop(peer.id, None)
        if session is None:
            return
        state, ending = session.final_state()
        self._set_state(session, state, ending, peer.close_reason)
        session.events.close()
        stream = session.stream
        stream.subscriber_ids.discard(peer.id)
        self.metrics.sessions_closed.labels(session.kind, ending).inc()
        log.info("session closed", extra={"stream": stream.name, "session": peer.id,
                                          "kind": session.kind, "reason": peer.close_reason})
        if session.kind == Kind.PLAY:
            self._push_viewer_count(stream)
        self.forget_idle(stream)

    def attach_source(self, stream: Stream, source: Source) -> None:
        """Make `source` (a publisher's, or a pull's) feed `stream`; wake its waiters."""
        stream.attach(source)
        self.live_waiters.wake(stream.name)

    def forget_idle(self, stream: Stream) -> None:
        """Drop `stream` once it has neither source nor subscribers."""
        if stream.idle and self.streams.get(stream.name) is stream:
            del self.streams[stream.name]
            self._viewercount_told.pop(stream.name, None)
            pending = self._viewercount_pending.pop(stream.name, None)
            if pending is not None:
                pending.cancel()

    def request_drain(self, timeout_s: float) -> float:
        """Ask the node to drain and exit within `timeout_s` (a deadline already set is
        only ever shortened); returns the seconds left until the deadline."""
        now = time.monotonic()
        until = now + max(0.0, timeout_s)
        if self.drain_until is None or until < self.drain_until:
            self.drain_until = until
        self.shutdown.set()
        return max(0.0, self.drain_until - now)

    def drain_left(self) -> float:
        """Seconds left until the drain's deadline (the configured timeout before one)."""
        if self.drain_until is None:
            return self.config.drain_timeout
        return max(0.0, self.drain_until - time.monotonic())

    def begin_drain(self, redirect: str | None = None) -> None:
        """Take no new sessions; tell every session (and session socket) to move on,
        to `redirect` (a relative URL) when given."""
        if self.draining:
            return
        self.draining = True
        self.redirect = redirect
        self.metrics.draining.set(1)
        info = self.draining_info()
        for session in list(self.sessions.values()):
            # with a redirect (a manager in front), a session's own offer path
            where = (f"/{session.kind.path}/{session.stream.name}" if redirect is not None
                     else None)
            session.events.push(SseEvent.RECONNECT, {"reason": "node draining",
                                              "code": proto.DRAINING, "redirect": where})
            session.events.push(SseEvent.NODE_DRAINING, {**info, "redirect": where})
        for listener in list(self.drain_listeners):
            try:
                listener(info)
            except Exception:
                log.exception("drain listener failed")

    async def end_unwatched_publishers(self) -> None:
        """While draining: a publisher whose stream nobody here plays any more (its
        viewers and the edges pulling it have moved on) has nothing left to feed: end it.
        Until then it stays, so no viewer of it misses a frame."""
        for session in list(self.sessions.values()):
            if session.kind == Kind.PUBLISH and not session.stream.subscriber_ids:
                await self.end(session, Ending.NODE_SHUTDOWN, "node drained")

    def draining_info(self) -> dict:
        """The node_draining fields (with the redirect the drain was given)."""
        return proto.draining_data(redirect=self.redirect, ends_in=round(self.drain_left(), 3))

    # events --------------------------------------------------------------
    def _on_stream_change(self, change: StreamChange, stream: Stream) -> None:
        if change in (StreamChange.ACTIVE, StreamChange.INACTIVE):
            event = SseEvent.ACTIVE if change is StreamChange.ACTIVE else SseEvent.INACTIVE
            for session in self._subscribers(stream):
                session.events.push(event)
        elif change is StreamChange.CODEC:
            # the publisher's codec changed: viewers negotiated for the old one renegotiate
            codecs = stream.codecs()
            for session in self._subscribers(stream):
                if any(kind in codecs and t.mime != codecs[kind].mimeType.lower()
                       for kind, t in session.peer.downtracks.items()):
                    session.events.push(SseEvent.RECONNECT, {"reason": "codec changed",
                                                      "code": Ending.CODEC_CHANGED})
                    asyncio.ensure_future(self.end(session, Ending.CODEC_CHANGED,
                                                   "codec changed"))

    def _subscribers(self, stream: Stream) -> list[MediaSession]:
        return [self.sessions[i] for i in list(stream.subscriber_ids) if i in self.sessions]

    def _push_viewer_count(self, stream: Stream) -> None:
        """Tell the stream's viewers their number: now, or at the end of the current
        VIEWERCOUNT_INTERVAL (then with the number as it is at that moment)."""
        name = stream.name
        if name in self._viewercount_pending:
            return  # the pending one will tell the number as it is then
        loop = asyncio.get_running_loop()
        wait = self._viewercount_told.get(name, -VIEWERCOUNT_INTERVAL) \
            + VIEWERCOUNT_INTERVAL - loop.time()
        if wait <= 0:
            self._tell_viewer_count(stream)
        else:
            self._viewercount_pending[name] = loop.call_later(
                wait, self._tell_viewer_count, stream)

    def _tell_viewer_count(self, stream: Stream) -> None:
        name = stream.name
        self._viewercount_pending.pop(name, None)
        self._viewercount_told[name] = asyncio.get_running_loop().time()
        count = len(stream.subscriber_ids)
        for session in self._subscribers(stream):
            session.events.push(SseEvent.VIEWERCOUNT, {"viewercount": count})


def codec_names(stream: Stream) -> dict[str, str]:
    return {kind: c.mimeType.split("/")[1] for kind, c in stream.codecs().items()}


def _new_id() -> str:
    return secrets.token_urlsafe(18)
