"""The session channel: ``GET /ws``, one WebSocket per client session.

The protocol (messages, fields, codes) is ``unbroken.protocol.session`` and
``docs/session-channel.md``. Here: the handler, one ``SocketSession`` per socket with its
ping loop, rate limit and stream handles, and the registry that tells every socket when
the node drains or stops.

Publish and play go through ``NodeState.publish``/``play`` like WHIP/WHEP (same engine,
codecs, limits and conflicts); what the socket reports about a stream comes from the
media session's ``EventChannel`` (the source of the WHIP/WHEP server-sent events too).
One session's bad input or death never touches another: every socket has its own tasks,
its own bounded outbox and bounded handles; its streams end when it ends.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web

from unbroken.media.peer import NegotiationError
from unbroken.protocol import session as proto
from unbroken.protocol.sdp import SdpError, check_offer, offer_ice_credentials

from .http_common import STATE, HttpError, check_token
from .state import NodeState, NotLive, Session, StreamBusy

log = logging.getLogger("unbroken.node.ws")

# aiohttp's own frame limit, as a multiple of max_message_bytes: messages in between are
# read whole and refused with session_closing + 1009 (a clean close the client sees);
# beyond it aiohttp stops reading and closes at once (1009, reason set in _Socket.close)
HARD_LIMIT_FACTOR = 16
OUTBOX_LIMIT = 512  # messages waiting for a socket that does not keep up
CLOSE_TIMEOUT = 2.0  # seconds a close handshake may take
MAX_SOCKETS = 5000


@dataclass
class Limits:
    """What one session may hold and send (sent to the client in ``welcome``)."""

    max_streams: int = proto.MAX_STREAMS
    max_message_bytes: int = proto.MAX_MESSAGE_BYTES
    messages_per_second: float = proto.MESSAGES_PER_SECOND
    message_burst: int = proto.MESSAGE_BURST
    hello_timeout: float = proto.HELLO_TIMEOUT

    def public(self) -> dict:
        return {"max_streams": self.max_streams,
                "max_message_bytes": self.max_message_bytes,
                "messages_per_second": self.messages_per_second,
                "message_burst": self.message_burst}


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class Handle:
    """One publish or play of a socket session, by the client's id."""

    id: str
    kind: str  # "publish" | "play"
    stream: str
    media: Session | None = None  # once negotiated
    stop_requested: bool = False
    listener: object = None


class _Socket(web.WebSocketResponse):
    """aiohttp closes an oversized message's socket itself (1009, no reason): say why."""

    session: "SocketSession | None" = None

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"",
                    drain: bool = True) -> bool:
        session = self.session
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message and session is not None:
            hard = session.limits.max_message_bytes * HARD_LIMIT_FACTOR
            reason = f"a message exceeded {hard} bytes"
            if session.take_over_close(proto.MESSAGE_TOO_BIG, reason):
                try:
                    await self.send_str(proto.encode(
                        proto.session_closing(proto.MESSAGE_TOO_BIG, reason)))
                except (ConnectionError, RuntimeError):
                    pass
            message = reason.encode()
        return await super().close(code=code, message=message, drain=drain)


class ChannelRegistry:
    """Every open socket session of the node."""

    def __init__(self, state: NodeState, limits: Limits | None = None) -> None:
        self.state = state
        self.limits = limits or Limits()
        self.sockets: dict[str, SocketSession] = {}
        state.drain_listeners.append(self._on_drain)

    def _on_drain(self, info: dict) -> None:
        for session in list(self.sockets.values()):
            if session.welcomed:  # the others learn it in their welcome
                session.send({"type": "node_draining", **info})

    async def shutdown(self) -> None:
        """The node stops: every socket gets session_closing and a close (1001)."""
        sessions = list(self.sockets.values())
        for session in sessions:
            session.close(proto.NODE_SHUTDOWN, "node is shutting down")
        await asyncio.gather(*(s.finished.wait() for s in sessions), return_exceptions=True)

    def snapshot(self) -> list[dict]:
        return [s.snapshot() for s in self.sockets.values()]


CHANNELS = web.AppKey("session_channels", ChannelRegistry)


class SocketSession:
    def __init__(self, registry: ChannelRegistry, ws: _Socket, request: web.Request,
                 authorized: bool) -> None:
        self.registry = registry
        self.state = registry.state
        self.limits = registry.limits
        self.ws = ws
        self.request = request
        self.authorized = authorized
        self.id = secrets.token_urlsafe(12)
        self.created_at = time.monotonic()
        self.welcomed = False
        self.client = ""
        self.ping_interval = proto.DEFAULT_PING_INTERVAL_MS
        self.missing_pings = proto.DEFAULT_MISSING_PINGS
        self.seq = 0  # last ping sent
        self.acked = 0  # highest pong received
        self.ping_sent_at: dict[int, float] = {}
        self.rtt: float | None = None
        self.handles: dict[str, Handle] = {}
        self.bucket = TokenBucket(self.limits.messages_per_second, self.limits.message_burst)
        self.dropped_in_a_row = 0
        self.last_rate_error = 0.0
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.closing: tuple[str, str] | None = None  # (code, reason) of a server close
        self.ended = False  # the socket is done: no more sends, streams released
        self.finished = asyncio.Event()
        self._close_requested = asyncio.Event()
        self._pinger: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        ws.session = self

    # -- sending ----------------------------------------------------------------------
    def send(self, message: dict) -> None:
        """Queue a message; the writer task sends them in order."""
        if self.ended or self.closing is not None:
            return
        if self.outbox.qsize() >= OUTBOX_LIMIT:
            self.close(proto.SLOW_READER, "the client does not read its messages")
            return
        self.outbox.put_nowait(proto.encode(message))

    def close(self, code: str, reason: str) -> None:
        """Server-side close: session_closing, then the close frame (after queued messages)."""
        if self.ended or self.closing is not None:
            return
        self.outbox.put_nowait(proto.encode(proto.session_closing(code, reason)))
        self.closing = (code, reason)
        self.outbox.put_nowait(None)
        self._close_requested.set()
        log.info("session channel closing", extra={"channel": self.id, "code": code,
                                                   "reason": reason})

    def take_over_close(self, code: str, reason: str) -> bool:
        """aiohttp closes the socket itself (1009): the writer stops; True when the
        caller should send session_closing."""
        if self.closing is not None or self.ended:
            return False
        self.closing = (code, reason)
        self.outbox.put_nowait(None)
        log.info("session channel closing", extra={"channel": self.id, "code": code,
                                                   "reason": reason})
        return True

    async def _write_loop(self) -> None:
        """Send queued messages in order until the None that follows a server close."""
        try:
            while True:
                text = await self.outbox.get()
                if text is None:
                    return
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return

    def _abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the session ------------------------------------------------------------------
    async def run(self) -> None:
        """The session from welcome to close. A server-side close (``close()``) stops
        the reader, ends the streams, sends what is queued (session_closing last), then
        does the close handshake: aiohttp reads and discards until the client's close
        frame, so unread input cannot reset the connection under our last messages."""
        self.registry.sockets[self.id] = self
        writer = asyncio.ensure_future(self._write_loop())
        reader = asyncio.ensure_future(self._read_session())
        closer = asyncio.ensure_future(self._close_requested.wait())
        end_reason = "session closed"
        try:
            await asyncio.wait({reader, closer}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():  # closed by the node: stop reading, close below
                reader.cancel()
            results = await asyncio.gather(reader, return_exceptions=True)
            if isinstance(results[0], str):
                end_reason = results[0]
            elif isinstance(results[0], Exception):
                log.error("session channel failed", exc_info=results[0],
                          extra={"channel": self.id})
                self.close(proto.INTERNAL_ERROR, "internal error")
            if self.closing is not None:
                end_reason = f"session lost: {self.closing[0]}"
        finally:
            closer.cancel()
            if self._pinger is not None:
                self._pinger.cancel()
            await self._release(end_reason)
            if self.closing is not None:
                try:  # queued messages first, session_closing last
                    await asyncio.wait_for(asyncio.shield(writer), CLOSE_TIMEOUT)
                except asyncio.TimeoutError:
                    pass
            writer.cancel()
            for task in list(self._tasks):
                task.cancel()
            if not self.ws.closed:
                code, reason = self.closing or (proto.CLIENT_CLOSED, "")
                try:
                    await asyncio.wait_for(
                        self.ws.close(code=proto.close_code(code),
                                      message=proto.close_reason(reason).encode()),
                        CLOSE_TIMEOUT + 0.5)
                except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                    self._abort()
            self.registry.sockets.pop(self.id, None)
            self.finished.set()
            log.info("session channel closed", extra={
                "channel": self.id, "reason": end_reason,
                "age": round(time.monotonic() - self.created_at, 3)})

    async def _read_session(self) -> str:
        """Handshake, then messages until the socket ends; returns the reason its
        streams end with."""
        if not await self._handshake():
            return "session lost: no hello"
        self._pinger = asyncio.ensure_future(self._ping_loop())
        return await self._read_loop()

    async def _release(self, reason: str) -> None:
        """The socket is gone: end every stream it holds."""
        self.ended = True  # nothing more reaches the client
        sessions = []
        for handle in list(self.handles.values()):
            if handle.media is not None:
                sessions.append(handle.media)
            else:
                handle.stop_requested = True  # ended once its negotiation completes
        self.handles.clear()
        await asyncio.gather(*(self.state.end(s, reason) for s in sessions),
                             return_exceptions=True)

    def _too_big(self, data: str | bytes) -> bool:
        limit = self.limits.max_message_bytes
        if len(data) > limit or isinstance(data, str) and len(data) * 4 > limit and \
                len(data.encode()) > limit:
            self.close(proto.MESSAGE_TOO_BIG, f"a message exceeded {limit} bytes")
            return True
        return False

    async def _handshake(self) -> bool:
        """Wait for a valid hello; answer welcome. False when the session cannot start."""
        try:
            msg = await self.ws.receive(self.limits.hello_timeout)
        except asyncio.TimeoutError:
            self.close(proto.HELLO_REQUIRED,
                       f"no hello within {self.limits.hello_timeout:g} s")
            return False
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and self._too_big(msg.data):
            return False
        if msg.type != WSMsgType.TEXT:
            if msg.type == WSMsgType.BINARY:
                self.close(proto.HELLO_REQUIRED, "the first message must be a JSON hello")
            return False
        try:
            hello = proto.parse_client_message(msg.data)
        except proto.ProtocolError as exc:
            self.send(proto.error_from(exc))
            self.close(proto.HELLO_REQUIRED, "the first message must be a valid hello")
            return False
        if hello["type"] != "hello":
            self.send(proto.error(proto.HELLO_REQUIRED, "send hello first", hello["type"]))
            self.close(proto.HELLO_REQUIRED, "the first message must be hello")
            return False
        if hello["version"] not in proto.SUPPORTED_VERSIONS:
            versions = ", ".join(map(str, proto.SUPPORTED_VERSIONS))
            self.send(proto.error(proto.UNSUPPORTED_VERSION,
                                  f"protocol version {hello['version']} is not supported; "
                                  f"supported: {versions}", "hello"))
            self.close(proto.UNSUPPORTED_VERSION, f"supported versions: {versions}")
            return False
        token = self.state.config.token
        if token and not self.authorized:
            given = hello.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                self.send(proto.error(proto.UNAUTHORIZED, "missing or wrong token", "hello"))
                self.close(proto.UNAUTHORIZED, "missing or wrong token")
                return False
        self.ping_interval = proto.clamp_ping_interval(hello.get("ping_interval"))
        self.missing_pings = proto.clamp_missing_pings(hello.get("missing_pings"))
        self.client = hello.get("client", "")
        self.welcomed = True
        self.send(proto.welcome(self.id, self.ping_interval, self.missing_pings,
                                self.limits.public(), self.state.draining))
        if self.state.draining:  # became draining during the handshake
            self.send(proto.node_draining(ends_in=self.state.config.drain_timeout))
        log.info("session channel opened", extra={
            "channel": self.id, "client": self.client, "ping_interval": self.ping_interval,
            "missing_pings": self.missing_pings})
        return True

    async def _read_loop(self) -> str:
        """Handle messages until the socket ends; returns the reason the streams end with."""
        while True:
            msg = await self.ws.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and self._too_big(msg.data):
                continue  # closing: the reply to our close frame ends the loop
            if msg.type == WSMsgType.TEXT:
                self._received(msg.data)
            elif msg.type == WSMsgType.BINARY:
                if self._admit():
                    self.send(proto.error(proto.BAD_MESSAGE,
                                          "binary frames are not part of the protocol"))
            elif msg.type == WSMsgType.CLOSE:
                if self.closing is not None:
                    return f"session lost: {self.closing[0]}"
                return "session closed"
            elif msg.type == WSMsgType.ERROR:
                if self.closing is not None:
                    return f"session lost: {self.closing[0]}"
                return f"session lost: {msg.data}"
            else:  # CLOSING / CLOSED: our close, or the connection went away
                if self.closing is not None:
                    return f"session lost: {self.closing[0]}"
                if self.ws.close_code == WSCloseCode.OK:
                    return "session lost: connection ended without a close frame"
                return "session lost: connection lost"

    def _admit(self) -> bool:
        """Rate limit: False (and maybe an error or a close) when the message is dropped."""
        if self.bucket.take():
            self.dropped_in_a_row = 0
            return True
        self.dropped_in_a_row += 1
        if self.dropped_in_a_row > self.limits.message_burst:
            self.close(proto.RATE_LIMITED,
                       f"more than {self.limits.messages_per_second:g} messages per second")
            return False
        now = time.monotonic()
        if now - self.last_rate_error >= 1.0:
            self.last_rate_error = now
            self.send(proto.error(
                proto.RATE_LIMITED,
                f"more than {self.limits.messages_per_second:g} messages per second: "
                f"messages are dropped"))
        return False

    def _received(self, text: str) -> None:
        if not self._admit() or self.closing is not None:
            return
        try:
            message = proto.parse_client_message(text)
        except proto.ProtocolError as exc:
            self.send(proto.error_from(exc))
            return
        kind = message["type"]
        if kind == "pong":
            self._pong(message["seq"])
        elif kind == "ping":
            self.send(proto.pong(message["seq"]))
        elif kind in ("publish", "play"):
            self._start(message)
        elif kind == "stop":
            self._stop(message["id"])
        elif kind == "hello":
            self.send(proto.error(proto.ALREADY_WELCOMED, "the session is already established",
                                  "hello"))

    # -- pings ------------------------------------------------------------------------
    async def _ping_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.ping_interval / 1000
        start = loop.time()
        while self.closing is None and not self.ended:
            if self.seq - self.acked >= self.missing_pings:
                self.close(proto.PING_TIMEOUT,
                           f"{self.missing_pings} pings without a pong")
                return
            self.seq += 1
            self.ping_sent_at[self.seq] = time.monotonic()
            self.ping_sent_at.pop(self.seq - self.missing_pings - 2, None)
            self.send(proto.ping(self.seq, int(time.time() * 1000)))
            # fixed schedule: a slow loop does not stretch the interval
            await asyncio.sleep(max(0.0, start + self.seq * interval - loop.time()))

    def _pong(self, seq: int) -> None:
        if seq > self.seq or seq < 1:
            self.send(proto.error(proto.BAD_PONG, f"no ping with seq {seq} was sent", "pong"))
            return
        if seq > self.acked:
            self.acked = seq
            sent = self.ping_sent_at.get(seq)
            if sent is not None:
                self.rtt = time.monotonic() - sent

    # -- streams ----------------------------------------------------------------------
    def _start(self, message: dict) -> None:
        id_, kind, name = message["id"], message["type"], message["stream"]
        if id_ in self.handles:
            self.send(proto.error(proto.DUPLICATE_ID,
                                  f"id {id_!r} is already in use on this session", id_, "id"))
            return
        if len(self.handles) >= self.limits.max_streams:
            self.send(proto.stream_state(
                id_, name, proto.FAILED, proto.TOO_MANY_STREAMS,
                f"a session may hold {self.limits.max_streams} streams at a time"))
            return
        handle = Handle(id_, kind, name)
        self.handles[id_] = handle
        self._spawn(self._negotiate(handle, message["sdp"]))

    def _refuse(self, handle: Handle, code: str, reason: str) -> None:
        if self.handles.get(handle.id) is handle:
            del self.handles[handle.id]
        self.send(proto.stream_state(handle.id, handle.stream, proto.FAILED, code, reason))

    async def _negotiate(self, handle: Handle, sdp: str) -> None:
        state = self.state
        problem = proto.check_stream_name(handle.stream)
        if problem:
            return self._refuse(handle, proto.BAD_STREAM_NAME, problem)
        if state.draining:
            return self._refuse(handle, proto.DRAINING, "node is draining")
        if len(state.sessions) >= state.config.max_sessions:
            return self._refuse(handle, proto.TOO_MANY_SESSIONS,
                                "node is at its session limit")
        try:
            check_offer(sdp)
            ice = offer_ice_credentials(sdp)
            if handle.kind == "publish":
                media = await state.publish(handle.stream, sdp, ice)
            else:
                media = await state.play(handle.stream, sdp, ice)
        except SdpError as exc:
            return self._refuse(handle, proto.BAD_SDP, str(exc))
        except StreamBusy:
            return self._refuse(handle, proto.STREAM_BUSY,
                                f"stream {handle.stream!r} already has a live publisher")
        except NotLive:
            return self._refuse(handle, proto.NOT_LIVE, f"stream {handle.stream!r} is not live")
        except NegotiationError as exc:
            return self._refuse(handle, *_negotiation_failure(exc))
        except Exception:
            log.exception("negotiation failed", extra={"channel": self.id,
                                                       "stream": handle.stream})
            return self._refuse(handle, proto.INTERNAL_ERROR, "negotiation failed")
        if self.ended:  # the socket went away meanwhile
            await state.end(media, "session closed")
            return
        handle.media = media
        # no await from here to the listener: no event of the media session is missed
        self.send(proto.answer(handle.id, handle.stream, media.answer, media.id,
                               _resource(handle.kind, media)))
        handle.listener = self._listener(handle)
        media.events.listeners.append(handle.listener)
        if handle.kind == "play":
            stream = media.stream
            self.send(proto.stream_event(handle.id, handle.stream,
                                         "active" if stream.live else "inactive"))
            self.send(proto.stream_event(handle.id, handle.stream, "viewercount",
                                         viewercount=len(stream.subscriber_ids)))
        if handle.stop_requested:
            await state.end(media, "stopped by client")

    def _listener(self, handle: Handle):
        def on_event(event: str, data: dict) -> None:
            if event == "stream_state":
                self.send(proto.stream_state(handle.id, handle.stream, data["state"],
                                             data.get("code"), data.get("reason")))
                if data["state"] in proto.TERMINAL_STATES:
                    if self.handles.get(handle.id) is handle:
                        del self.handles[handle.id]
                    if handle.media is not None and handle.listener in \
                            handle.media.events.listeners:
                        handle.media.events.listeners.remove(handle.listener)
            elif event in ("active", "inactive"):
                self.send(proto.stream_event(handle.id, handle.stream, event))
            elif event == "viewercount":
                self.send(proto.stream_event(handle.id, handle.stream, event,
                                             viewercount=data.get("viewercount")))
            # "reconnect" and "node_draining" reach the socket once, as node_draining
            # (ChannelRegistry), and as FAILED codec_changed

        return on_event

    def _stop(self, id_: str) -> None:
        handle = self.handles.get(id_)
        if handle is None:
            self.send(proto.error(proto.UNKNOWN_ID, f"no stream with id {id_!r} on this session",
                                  id_, "id"))
            return
        if handle.media is None:
            handle.stop_requested = True  # stopped as soon as its negotiation completes
            return
        if not handle.stop_requested:
            handle.stop_requested = True
            self._spawn(self.state.end(handle.media, "stopped by client"))

    def snapshot(self) -> dict:
        return {"id": self.id, "client": self.client,
                "age": round(time.monotonic() - self.created_at, 3),
                "ping_interval": self.ping_interval, "missing_pings": self.missing_pings,
                "rtt": None if self.rtt is None else round(self.rtt, 4),
                "streams": {h.id: {"kind": h.kind, "stream": h.stream,
                                   "session": h.media.id if h.media else None}
                            for h in self.handles.values()}}


_NO_COMMON_CODEC = re.compile(r"Failed to set remote (\w+) description send parameters")


def _negotiation_failure(exc: NegotiationError) -> tuple[str, str]:
    """(code, reason): unsupported_codec when the offer has no codec the node can use
    (the node answers 406, or aiortc found no common codec for a media section)."""
    if exc.status == 406:
        return proto.BAD_CODEC, exc.reason
    found = _NO_COMMON_CODEC.search(exc.reason)
    if found:
        return proto.BAD_CODEC, (f"the offer's {found.group(1)} section has no codec this "
                                 f"node can use (video: VP8, H264; audio: Opus)")
    return proto.NEGOTIATION_FAILED, exc.reason


def _resource(kind: str, media: Session) -> str:
    """The media session as a WHIP/WHEP resource (relative: works behind a proxy)."""
    return f"/{'whip' if kind == 'publish' else 'whep'}/{media.stream.name}/{media.id}"


async def ws_handler(request: web.Request) -> web.StreamResponse:
    registry = request.app[CHANNELS]
    state = registry.state
    authorized = False
    if "Authorization" in request.headers:  # non-browser clients may use the header
        check_token(request, state.config.token)
        authorized = True
    ws = _Socket(max_msg_size=registry.limits.max_message_bytes * HARD_LIMIT_FACTOR,
                 heartbeat=None,
                 compress=False, timeout=CLOSE_TIMEOUT, autoping=True)
    if not ws.can_prepare(request).ok:
        raise HttpError(426, "upgrade_required", "GET /ws needs a WebSocket upgrade",
                        {"Upgrade": "websocket", "Connection": "Upgrade"})
    if state.draining:
        raise HttpError(503, "draining", "node is draining", {"Retry-After": "1"})
    if len(registry.sockets) >= MAX_SOCKETS:
        raise HttpError(503, "too_many_sessions", "node is at its session limit",
                        {"Retry-After": "1"})
    await ws.prepare(request)
    session = SocketSession(registry, ws, request, authorized)
    await session.run()
    return ws


async def list_channels(request: web.Request) -> web.Response:
    registry = request.app[CHANNELS]
    check_token(request, registry.state.config.token)
    return web.json_response({"channels": registry.snapshot()})


def setup(app: web.Application, limits: Limits | None = None) -> ChannelRegistry:
    """Add ``GET /ws`` (and ``GET /api/v1/channels``); close every socket on shutdown
    (after the node's streams ended, so their final states are sent first)."""
    registry = ChannelRegistry(app[STATE], limits)
    app[CHANNELS] = registry
    app.router.add_get(proto.PATH, ws_handler)
    app.router.add_get("/api/v1/channels", list_channels)

    async def on_shutdown(app: web.Application) -> None:
        await registry.shutdown()

    app.on_shutdown.append(on_shutdown)
    return registry
