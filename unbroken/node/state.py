"""The node's live state: streams, sessions, and the watchdog that times out publishers."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

from unbroken.media.peer import Peer, PublisherPeer, SubscriberPeer
from unbroken.media.stream import Stream

from .config import NodeConfig
from unbroken.protocol import session as proto

from .events import EventChannel, final_state
from .metrics import NodeMetrics

log = logging.getLogger("unbroken.node")

WATCHDOG_INTERVAL = 0.1
MAX_LIVE_WAITERS = 1000
LATE_TICK = 0.2  # s: a watchdog tick later than this follows a stall of the event loop  # stream names with viewers waiting for a publisher
MEDIA_START_POLL = 0.02  # how often a new session is checked for media flowing
SENDER_REPORT_INTERVAL = 0.5


class StreamBusy(Exception):
    """The stream already has a live publisher."""


class NotLive(Exception):
    """The stream has no publisher."""


@dataclass
class Session:
    id: str
    kind: str  # "publish" | "play"
    stream: Stream
    peer: Peer
    remote_ice: tuple[str | None, str | None]
    answer: str = ""
    etag: str = field(default_factory=lambda: '"' + secrets.token_hex(8) + '"')
    events: EventChannel = field(default_factory=EventChannel)
    created_at: float = field(default_factory=time.monotonic)
    # stream state: "" until media flows, then PUBLISHING/PLAYING, then a terminal one
    state: str = ""


@dataclass
class LiveWaiters:
    live: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


class NodeState:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.metrics = NodeMetrics()
        self.metrics.add_live_collector(self._live_figures)
        self.streams: dict[str, Stream] = {}
        self.sessions: dict[str, Session] = {}
        self.draining = False
        # called with the node_draining fields when the node starts draining
        self.drain_listeners: list = []
        # also listening to every new stream (the HLS service)
        self.stream_listeners: list = []
        self.started_at = time.time()
        self._watchdog: asyncio.Task | None = None
        # stream name -> set when a publisher attaches (WHEP requests waiting for it)
        self._live_waiters: dict[str, LiveWaiters] = {}

    # lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        self._watchdog = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._watchdog:
            self._watchdog.cancel()
        await asyncio.gather(*(s.peer.close("node shutting down")
                               for s in list(self.sessions.values())),
                             return_exceptions=True)

    # sessions ------------------------------------------------------------
    def stream(self, name: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None:
            stream = Stream(name)
            stream.listeners += [self._on_stream_event, *self.stream_listeners]
            self.streams[name] = stream
        return stream

    def _new_id(self) -> str:
        return secrets.token_urlsafe(18)

    async def publish(self, name: str, offer: str, remote_ice,
                      replaces: str | None = None) -> Session:
        """`replaces`: the id of this publisher's previous session on the stream (its
        unguessable Location proves it): a restoring publisher takes over at once instead
        of waiting for the old session's media timeout."""
        stream = self.stream(name)

        def refused() -> bool:
            return (stream.live and self.config.on_publisher_conflict == "reject"
                    and not (replaces and stream.source.id == replaces))

        if refused():
            raise StreamBusy(name)
        peer = PublisherPeer(self._new_id(), stream)
        try:
            answer = await peer.answer(offer)
        except BaseException:
            await peer.close("negotiation failed")
            self._forget_idle(stream)
            raise
        previous = None
        if stream.live:
            if refused():
                await peer.close("stream busy")
                raise StreamBusy(name)
            previous = self.sessions.get(stream.source.id)
        session = self._register(Session(peer.id, "publish", stream, peer, remote_ice, answer))
        # attach before the previous publisher closes: the stream is never left empty
        stream.attach(peer.source)
        waiting = self._live_waiters.pop(name, None)
        if waiting is not None:
            waiting.live.set()
        if previous:
            await previous.peer.close("replaced by a new publisher")
        log.info("publisher started", extra={"stream": name, "session": peer.id,
                                             "codecs": _codec_names(stream)})
        return session

    async def play(self, name: str, offer: str, remote_ice, wait_live: float = 0.0) -> Session:
        stream = self.streams.get(name)
        if (stream is None or not stream.live) and wait_live > 0:
            await self._wait_live(name, wait_live)
            stream = self.streams.get(name)
        if stream is None or not stream.live:
            raise NotLive(name)
        peer = SubscriberPeer(self._new_id(), stream)
        try:
            answer = await peer.answer(offer)
        except BaseException:
            await peer.close("negotiation failed")
            raise
        session = self._register(Session(peer.id, "play", stream, peer, remote_ice, answer))
        stream.subscriber_ids.add(peer.id)
        self._push_viewer_count(stream)
        log.info("subscriber started", extra={"stream": name, "session": peer.id})
        return session

    async def _wait_live(self, name: str, timeout: float) -> None:
        """Wait up to `timeout` s for a publisher on `name` (a viewer that arrives while
        its publisher restores gets the stream the moment it is back)."""
        waiters = self._live_waiters.get(name)
        if waiters is None:
            if len(self._live_waiters) >= MAX_LIVE_WAITERS:
                return
            waiters = self._live_waiters[name] = LiveWaiters()
        waiters.count += 1
        try:
            await asyncio.wait_for(waiters.live.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            waiters.count -= 1
            if waiters.count == 0 and self._live_waiters.get(name) is waiters:
                del self._live_waiters[name]

    def _register(self, session: Session) -> Session:
        self.sessions[session.id] = session
        session.peer.on_close = self._on_peer_closed
        self.metrics.sessions_created.labels(session.kind).inc()
        asyncio.ensure_future(self._announce_media(session))
        return session

    async def _announce_media(self, session: Session) -> None:
        """PUBLISHING once the publisher's media arrives, PLAYING once media goes out."""
        peer = session.peer
        polls = 0
        while not peer.closed.is_set():
            if isinstance(peer, PublisherPeer):
                flowing = peer.last_packet_at() is not None
            else:
                flowing = any(t.packets for t in peer.downtracks.values())
            if flowing:
                self._set_state(session, proto.ACTIVE_STATE[session.kind])
                return
            polls += 1  # a viewer of a stream that stays inactive: look less often
            await asyncio.sleep(MEDIA_START_POLL if polls < 100 else 5 * MEDIA_START_POLL)

    def _set_state(self, session: Session, state: str, code: str | None = None,
                   reason: str | None = None) -> None:
        session.state = state
        session.events.push("stream_state",
                            proto.state_data(session.stream.name, state, code, reason))

    async def end(self, session: Session, reason: str) -> None:
        await session.peer.close(reason)

    def _on_peer_closed(self, peer: Peer) -> None:
        session = self.sessions.pop(peer.id, None)
        if session is None:
            return
        state, code = final_state(session.kind, peer.close_reason)
        self._set_state(session, state, code, peer.close_reason)
        session.events.close()
        stream = session.stream
        stream.subscriber_ids.discard(peer.id)
        self.metrics.sessions_closed.labels(session.kind, _reason_label(peer.close_reason)).inc()
        log.info("session closed", extra={"stream": stream.name, "session": peer.id,
                                          "kind": session.kind, "reason": peer.close_reason})
        if session.kind == "play":
            self._push_viewer_count(stream)
        self._forget_idle(stream)

    def _forget_idle(self, stream: Stream) -> None:
        if stream.idle and self.streams.get(stream.name) is stream:
            del self.streams[stream.name]

    def begin_drain(self, redirect: str | None = None) -> None:
        """Take no new sessions; tell every session (and session socket) to move on."""
        if self.draining:
            return
        self.draining = True
        self.metrics.draining.set(1)
        info = proto.draining_data(redirect=redirect, ends_in=self.config.drain_timeout)
        for session in list(self.sessions.values()):
            session.events.push("reconnect", {"reason": "node draining"})
            session.events.push("node_draining", info)
        for listener in list(self.drain_listeners):
            try:
                listener(info)
            except Exception:
                log.exception("drain listener failed")

    # events --------------------------------------------------------------
    def _on_stream_event(self, event: str, stream: Stream) -> None:
        if event in ("active", "inactive"):
            for session in self._subscribers(stream):
                session.events.push(event)
        elif event == "codec":
            # the publisher's codec changed: viewers negotiated for the old one renegotiate
            codecs = stream.codecs()
            for session in self._subscribers(stream):
                if any(kind in codecs and t.mime != codecs[kind].mimeType.lower()
                       for kind, t in session.peer.downtracks.items()):
                    session.events.push("reconnect", {"reason": "codec changed"})
                    asyncio.ensure_future(self.end(session, "codec changed"))

    def _subscribers(self, stream: Stream) -> list[Session]:
        return [self.sessions[i] for i in list(stream.subscriber_ids) if i in self.sessions]

    def _push_viewer_count(self, stream: Stream) -> None:
        count = len(stream.subscriber_ids)
        for session in self._subscribers(stream):
            session.events.push("viewercount", {"viewercount": count})

    # watchdog ------------------------------------------------------------
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
                    self._refresh_sender_reports()
            except Exception:
                log.exception("watchdog pass failed")

    def _check_sessions(self, now: float) -> None:
        for session in list(self.sessions.values()):
            peer = session.peer
            if isinstance(peer, PublisherPeer):
                last = peer.last_packet_at()
                if last is None:
                    if now - session.created_at > self.config.connect_timeout:
                        asyncio.ensure_future(peer.close("no media before connect timeout"))
                elif now - last > self.config.media_timeout:
                    asyncio.ensure_future(peer.close("media timeout"))
            elif peer.connected_at is None and (
                    now - session.created_at > self.config.connect_timeout):
                asyncio.ensure_future(peer.close("not connected before connect timeout"))

    def _refresh_sender_reports(self) -> None:
        for stream in self.streams.values():
            stream.update_sender_reports()

    # figures -------------------------------------------------------------
    def _live_figures(self):
        publishers = subscribers = packets = octets = 0
        for session in self.sessions.values():
            if session.kind == "publish":
                publishers += 1
            else:
                subscribers += 1
                for track in session.peer.downtracks.values():
                    packets += track.packets
                    octets += track.octets
        return len(self.streams), publishers, subscribers, packets, octets

    def stream_info(self, stream: Stream) -> dict:
        source = stream.source
        publisher = None
        if source is not None:
            session = self.sessions.get(source.id)
            publisher = {
                "session": source.id,
                "connection": session.peer.connection_state if session else "closed",
                "since": round(time.monotonic() - source.started_at, 3),
                "tracks": {kind: r.snapshot() for kind, r in source.receivers.items()},
            }
        return {
            "name": stream.name,
            "live": stream.live,
            "codecs": _codec_names(stream),
            "publisher": publisher,
            "viewers": len(stream.subscriber_ids),
        }


def _codec_names(stream: Stream) -> dict[str, str]:
    return {kind: c.mimeType.split("/")[1] for kind, c in stream.codecs().items()}


def _reason_label(reason: str) -> str:
    return reason.split(":")[0][:40] or "closed"
