"""Session-channel client: one WebSocket to a node (``GET /ws``), with ping answering,
missing-ping detection, and publish/play over the socket.

    client = await SessionClient(url, missing_pings=4, ping_period=1.0).connect()
    publisher = await client.publish("cam", [TestPatternVideoTrack()], video_codec="vp8")
    viewer = await client.play("cam")
    await viewer.wait_state("PLAYING", 5)
    ...
    await client.close()  # DISCONNECTED: a manual close, never restored

Session states (seed 004): ``ESTABLISHED`` once welcomed; ``DISCONNECTED`` after
``close()``; ``FAILED`` when the session is lost: ``missing_pings`` pings in a row did not
arrive (no ping for ``ping_period`` seconds: the "pings check period"), the socket broke,
or the node closed it (``failure`` holds the code and reason, e.g. ``missing_pings``,
``connection_lost``, ``ping_timeout``, ``node_shutdown``). The client asks the node to ping
every ``ping_period / missing_pings`` seconds (or ``ping_interval`` if given), so a dead
node or path is found within ``ping_period``.

Publish and play negotiate with aiortc exactly like the WHIP/WHEP clients (they are the
same classes; only the offer/answer goes over the socket instead of HTTP), so a
``SessionViewer`` counts and decodes frames like a ``WhepViewer``. Each stream keeps the
node's ``stream_state`` and ``stream_event`` messages: ``state``, ``code``, ``reason``,
``states`` (history), ``active``, ``viewercount``. This module is the base the Python SDK
with auto-restore builds on: it reports, it does not restore.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp

from unbroken.client.reattach import ReattachPolicy
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher
from unbroken.protocol import session as proto
from unbroken.protocol.states import Kind

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
NEW = "NEW"
MESSAGE_HISTORY = 1000


class SessionError(Exception):
    """The session could not be established (``code``, ``reason`` from the node or local)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class StreamFailed(Exception):
    """A publish or play was refused (``code`` e.g. ``not_live``, ``stream_busy``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def ws_url(url_base: str) -> str:
    base = url_base.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return base + proto.PATH


class SessionClient:
    """One session with a node. ``on_state(state, code, reason)`` on session state
    changes; ``on_message(message)`` for every message from the node (after it is
    handled: node_draining, session_closing, errors, stream states, ...)."""

    def __init__(self, url_base: str, token: str | None = None, *,
                 missing_pings: int = proto.DEFAULT_MISSING_PINGS, ping_period: float = 1.0,
                 ping_interval: float | None = None,
                 on_state: Callable[[str, str | None, str | None], None] | None = None,
                 on_message: Callable[[dict], None] | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, client_name: str = "unbroken-python",
                 http: aiohttp.ClientSession | None = None) -> None:
        if missing_pings < 0 or ping_period <= 0:
            raise ValueError("missing_pings must be >= 0 and ping_period > 0")
        self.url_base = url_base.rstrip("/")
        self.url = ws_url(url_base)
        self.token = token
        self.missing_pings = missing_pings
        self.ping_period = ping_period
        if ping_interval is None:
            ping_interval = ping_period / missing_pings if missing_pings else None
        self.requested_interval = ping_interval  # seconds, or None for the node's default
        self.on_state = on_state
        self.on_message = on_message
        self.connect_timeout = connect_timeout
        self.client_name = client_name
        self.state = NEW
        self.id: str | None = None  # the node's session id
        self.welcome: dict | None = None
        self.ping_interval: float | None = None  # seconds, as the node pings
        self.check_period: float | None = None  # no ping for this long = FAILED
        self.failure: tuple[str, str] | None = None  # (code, reason) when FAILED
        self.failed_at: float | None = None
        self.established_at: float | None = None
        self.last_ping_at: float | None = None
        self.pings: deque[tuple[int, float]] = deque(maxlen=MESSAGE_HISTORY)  # (seq, arrival)
        self.messages: deque[dict] = deque(maxlen=MESSAGE_HISTORY)
        self.draining: dict | None = None  # the node_draining message, once received
        self.closing: dict | None = None  # the session_closing message, once received
        self.answer_pings = True  # False: stop answering (tests: a client gone silent)
        self.streams: dict[str, SessionStream] = {}
        # resume the session when a socket through a proxy breaks (see reattach.py):
        # the policy, and what proves our media alive meanwhile
        self.reattach: ReattachPolicy | None = None
        self.media_alive: Callable[[], Awaitable[bool] | bool] | None = None
        self.resuming = False
        self.resumed = 0  # times another socket took the session over
        self._http = http
        self._own_http = http is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task] = []
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()

    # -- connecting and closing -------------------------------------------------------
    async def connect(self) -> "SessionClient":
        """Open the socket, say hello, wait for welcome; returns self (ESTABLISHED)."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        interval_ms = None if self.requested_interval is None else \
            round(self.requested_interval * 1000)
        try:
            welcome = await self._open_socket(proto.hello(
                interval_ms, self.missing_pings or None, self.token, self.client_name))
        except BaseException:
            await self._discard()
            raise
        self.welcome = welcome
        self.id = welcome["session"]
        self.ping_interval = welcome["ping_interval"] / 1000
        if self.missing_pings:
            # never shorter than the pings the node really sends allow
            self.check_period = max(self.ping_period, self.missing_pings * self.ping_interval)
        self.established_at = self.last_ping_at = time.monotonic()
        self._set_state(proto.ESTABLISHED)
        self._tasks.append(asyncio.ensure_future(self._read_loop()))
        if self.check_period:
            self._tasks.append(asyncio.ensure_future(self._watch_pings()))
        return self

    async def _open_socket(self, hello: dict) -> dict:
        """Open the socket (``self._ws``), send `hello`; the node's welcome."""
        previous, self._ws = self._ws, None
        if previous is not None and not previous.closed:
            asyncio.ensure_future(previous.close())  # broken: bounded by ws_close
        url = self.url
        if "resume" in hello and self.welcome and self.welcome.get("node"):
            url = f"{url}?node={quote(self.welcome['node'], safe='')}"  # the node keeping it
        self._ws = await self._http.ws_connect(
            url, heartbeat=None, autoping=True, max_msg_size=4 * 1024 * 1024,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0), receive_timeout=None)
        await self._ws.send_str(proto.encode(hello))
        return await self._first_message()

    def _can_resume(self) -> bool:
        welcome = self.welcome or {}
        return (self.reattach is not None and bool(welcome.get("proxied"))
                and bool(welcome.get("resume_token")) and bool(self.streams))

    async def _resume(self, code: str, reason: str) -> None:
        """The socket through a proxy broke: open another one that resumes this session
        (the node keeps its streams meanwhile) while the policy and our media allow;
        FAILED with the original code otherwise."""
        self.resuming = True
        lost_at = time.monotonic()
        status: int | None = None
        tries = 0
        logger.info("session %s: socket lost (%s), resuming", self.id, reason)
        while True:
            alive = self.media_alive() if self.media_alive is not None else False
            if asyncio.iscoroutine(alive):
                alive = await alive
            wait = self.reattach.next_wait(status, tries, time.monotonic() - lost_at, alive)
            if wait is None:
                logger.info("session %s: not resumed (last answer %s, media alive %s, "
                            "%d tries)", self.id, status, alive, tries)
                self.resuming = False
                self._fail(code, reason)
                return
            await asyncio.sleep(wait)
            tries += 1
            hello = proto.hello(round(self.ping_interval * 1000), self.missing_pings or None,
                                self.token, self.client_name,
                                resume=(self.id, self.welcome["resume_token"]))
            try:
                welcome = await self._open_socket(hello)
            except aiohttp.WSServerHandshakeError as exc:
                status = exc.status
                continue
            except (aiohttp.ClientError, OSError, TimeoutError, SessionError) as exc:
                logger.debug("session %s: resume try failed: %r", self.id, exc)
                status = None
                continue
            self.resuming = False
            if not welcome.get("resumed"):
                self._fail(code, "the node no longer keeps the session")
                return
            self.welcome = welcome
            self.closing = None
            self.resumed += 1
            self.last_ping_at = time.monotonic()
            logger.info("session %s: resumed after %.3f s", self.id, self.last_ping_at - lost_at)
            self._tasks.append(asyncio.ensure_future(self._read_loop()))
            return

    async def _first_message(self) -> dict:
        try:
            async with asyncio.timeout(self.connect_timeout):
                while True:
                    msg = await self._ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise SessionError(
                            "closed", f"socket closed before welcome ({self._ws.close_code})")
                    message = proto.parse_server_message(msg.data)
                    self.messages.append(message)
                    if message["type"] == "welcome":
                        return message
                    if message["type"] in ("error", "session_closing"):
                        raise SessionError(message.get("code", "error"),
                                           message.get("reason", ""))
        except TimeoutError:
            raise SessionError("timeout", f"no welcome within {self.connect_timeout} s") from None
        except proto.ProtocolError as exc:
            raise SessionError(exc.code, exc.reason) from None

    async def close(self, stop_streams: bool = True) -> None:
        """Close on purpose: DISCONNECTED (streams stopped first unless told otherwise)."""
        if self.state == NEW:
            await self._discard()
            return
        if stop_streams:
            await asyncio.gather(*(s.stop() for s in list(self.streams.values())),
                                 return_exceptions=True)
        if self.state == proto.ESTABLISHED:
            self._set_state(proto.DISCONNECTED)
        await self._discard()

    async def _discard(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self._ws is not None and not self._ws.closed:
            try:
                await asyncio.wait_for(self._ws.close(), 2.0)
            except (asyncio.TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> "SessionClient":
        return await self.connect()

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # -- state ------------------------------------------------------------------------
    def _set_state(self, state: str, code: str | None = None,
                   reason: str | None = None) -> None:
        if state == self.state:
            return
        self.state = state
        if state == proto.FAILED:
            self.failure = (code or "failed", reason or "")
            self.failed_at = time.monotonic()
            for stream in list(self.streams.values()):
                stream.session_lost(code or "failed", reason or "")
        logger.debug("session %s: %s %s %s", self.id, state, code or "", reason or "")
        self._changed.set()
        if self.on_state:
            self.on_state(state, code, reason)

    def _fail(self, code: str, reason: str) -> None:
        if self.state != proto.ESTABLISHED:
            return
        self._set_state(proto.FAILED, code, reason)
        # a dead node does not answer a close handshake: drop the connection
        asyncio.ensure_future(self._discard())

    async def wait_state(self, state: str, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.state != state:
                self._changed.clear()
                await self._changed.wait()

    async def wait_message(self, predicate: Callable[[dict], bool], timeout: float,
                           since: int = 0) -> dict:
        """The first message (of ``messages``, from index ``since``) matching ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                for message in list(self.messages)[since:]:
                    if predicate(message):
                        return message
                self._changed.clear()
                await self._changed.wait()

    # -- receiving --------------------------------------------------------------------
    async def _read_loop(self) -> None:
        ws = self._ws
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        message = proto.parse_server_message(msg.data)
                    except proto.ProtocolError as exc:
                        logger.warning("session %s: unusable message: %s", self.id, exc)
                        continue
                    await self._handle(message)
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                  aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        except (aiohttp.ClientError, ConnectionError) as exc:
            if ws is self._ws:
                self._lost(repr(exc))
            return
        if ws is not self._ws:
            return  # a socket we dropped for a resume
        if self.closing is not None and self.closing.get("code") == proto.PING_TIMEOUT:
            # our pongs stopped reaching the node: through a proxy it keeps the session
            self._lost(self.closing.get("reason", ""), code=proto.PING_TIMEOUT)
        elif self.closing is not None:
            self._fail(self.closing.get("code", "closed"), self.closing.get("reason", ""))
        else:
            self._lost(f"socket closed ({ws.close_code})")

    def _lost(self, reason: str, code: str = "connection_lost") -> None:
        """The socket broke, or went silent, without the node closing the session."""
        if self.resuming:
            return
        if self.state == proto.ESTABLISHED and self._can_resume():
            self.resuming = True
            if self._ws is not None and not self._ws.closed:
                # a silent socket: drop it (its reader then ends quietly)
                asyncio.ensure_future(self._ws.close())
            self._tasks.append(asyncio.ensure_future(self._resume(code, reason)))
        else:
            self._fail(code, reason)

    async def _handle(self, message: dict) -> None:
        self.messages.append(message)
        kind = message["type"]
        if kind == "ping":
            now = time.monotonic()
            self.last_ping_at = now
            self.pings.append((message.get("seq"), now))
            if self.answer_pings:
                await self.send(proto.pong(message.get("seq", 0)))
        elif kind in ("answer", "stream_state", "stream_event") or (
                kind == "error" and message.get("ref") in self.streams):
            stream = self.streams.get(message.get("id") or message.get("ref"))
            if stream is not None:
                stream.handle_message(message)
        elif kind == "node_draining":
            self.draining = message
        elif kind == "session_closing":
            self.closing = message
        self._changed.set()
        if self.on_message:
            try:
                self.on_message(message)
            except Exception:
                logger.exception("on_message failed")

    async def _watch_pings(self) -> None:
        """FAILED when no ping arrived for ``check_period`` (``missing_pings`` in a row)."""
        while self.state == proto.ESTABLISHED:
            wait = self.last_ping_at + self.check_period - time.monotonic()
            if self.resuming:  # no pings come meanwhile: the resume decides
                wait = self.check_period
            elif wait <= 0:
                self._lost(f"{self.missing_pings} pings missing "
                           f"(none for {self.check_period:g} s)", code="missing_pings")
                continue
            await asyncio.sleep(wait)

    # -- sending ----------------------------------------------------------------------
    async def send(self, message: dict) -> None:
        """Send one message to the node (ConnectionError once the socket is closed)."""
        if self._ws is None or self._ws.closed:
            raise ConnectionError("session socket is closed")
        await self._ws.send_str(proto.encode(message))

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    @property
    def http(self) -> aiohttp.ClientSession | None:
        """The HTTP client session the socket runs on (shared with the streams)."""
        return self._http

    # -- streams ----------------------------------------------------------------------
    async def publish(self, stream: str, tracks, video_codec: str | None = "vp8",
                      **kwargs) -> "SessionPublisher":
        """Publish ``tracks`` as ``stream``; returns once answered (state comes later)."""
        return await SessionPublisher(self, stream, tracks, video_codec, **kwargs).start()

    async def play(self, stream: str, **kwargs) -> "SessionViewer":
        """Play ``stream`` (WhepViewer options: video, audio, decode, on_frame)."""
        return await SessionViewer(self, stream, **kwargs).start()

    async def negotiate(self, stream: "SessionStream", offer_sdp: str) -> tuple[str, str]:
        """Send `stream`'s publish or play offer; returns (answer SDP, resource)."""
        if self.state != proto.ESTABLISHED:
            raise StreamFailed(proto.SESSION_LOST, f"session is {self.state}")
        self.streams[stream.id] = stream
        if stream.kind == Kind.PUBLISH:
            message = proto.publish(stream.id, stream.stream, offer_sdp,
                                    replaces=stream.replaces)
        else:
            message = proto.play(stream.id, stream.stream, offer_sdp,
                                 wait_live_ms=stream.wait_live_ms)
        await self.send(message)
        await stream.wait_answered()
        if stream.refused is not None:
            self.streams.pop(stream.id, None)
            raise StreamFailed(*stream.refused)
        return stream.answer_message["sdp"], stream.answer_message["resource"]


class SessionStream:
    """What a publish and a play over the session share: the stream's state and events
    as the node reports them, and the offer/answer exchange over the socket. Mixed into
    the WHIP/WHEP clients in place of their HTTP exchange (``OfferAnswerSession``'s
    ``_post_offer`` and ``_delete_location`` hooks); it uses only their public fields."""

    kind = ""

    def _bind(self, client: SessionClient) -> None:
        self.client = client
        self.id = client.new_id(self.kind)
        self.state: str | None = None  # last stream_state
        self.code: str | None = None
        self.reason: str | None = None
        self.states: list[dict] = []  # every stream_state, in order
        self.events: list[dict] = []  # every stream_event, in order
        self.active: bool | None = None
        self.viewercount: int | None = None
        self.answer_message: dict | None = None
        self.media_session: str | None = None  # the node's media session id
        self.refused: tuple[str, str] | None = None
        self._answered = asyncio.Event()
        self._stream_changed = asyncio.Event()

    def handle_message(self, message: dict) -> None:
        """A message from the node about this stream (answer, error, state, event)."""
        kind = message["type"]
        if kind == "answer":
            self.answer_message = message
            self.media_session = message.get("session")
            self._answered.set()
        elif kind == "error":
            if not self._answered.is_set():
                self.refused = (message.get("code", "error"), message.get("reason", ""))
                self._answered.set()
        elif kind == "stream_state":
            self.states.append(message)
            self.state, self.code, self.reason = (message.get("state"), message.get("code"),
                                                  message.get("reason"))
            if self.state in proto.TERMINAL_STATES:
                self.client.streams.pop(self.id, None)
                if not self._answered.is_set():
                    self.refused = (self.code or "failed", self.reason or "")
                    self._answered.set()
        elif kind == "stream_event":
            self.events.append(message)
            if message.get("event") in ("active", "inactive"):
                self.active = message["event"] == "active"
            elif message.get("event") == "viewercount":
                self.viewercount = message.get("viewercount")
        self._stream_changed.set()

    def session_lost(self, code: str, reason: str) -> None:
        """The session failed: the node ends this stream too (reported locally)."""
        if self.state in proto.TERMINAL_STATES:
            return
        self.state, self.code, self.reason = proto.FAILED, proto.SESSION_LOST, \
            f"session failed: {code} {reason}".strip()
        self.states.append({"type": "stream_state", "id": self.id, "stream": self.stream,
                            "state": self.state, "code": self.code, "reason": self.reason,
                            "local": True})
        if not self._answered.is_set():
            self.refused = (self.code, self.reason)
            self._answered.set()
        self.client.streams.pop(self.id, None)
        self._stream_changed.set()

    async def wait_answered(self) -> None:
        """Until the node answered the offer (or refused it, see ``refused``)."""
        await self._answered.wait()

    async def wait_state(self, state: str, timeout: float) -> dict:
        """Wait until the stream's state is ``state``; returns that stream_state message."""
        async with asyncio.timeout(timeout):
            while self.state != state:
                if self.state in proto.TERMINAL_STATES:
                    raise StreamFailed(self.code or "failed",
                                       f"stream is {self.state}: {self.reason}")
                self._stream_changed.clear()
                await self._stream_changed.wait()
        return self.states[-1]

    async def wait_event(self, event: str, timeout: float, since: int = 0) -> dict:
        """The first stream_event ``event`` at or after index ``since`` of ``events``."""
        async with asyncio.timeout(timeout):
            while True:
                for message in self.events[since:]:
                    if message.get("event") == event:
                        return message
                self._stream_changed.clear()
                await self._stream_changed.wait()

    # OfferAnswerSession hooks: the offer goes over the socket, stop replaces DELETE
    async def _post_offer(self, offer_sdp: str) -> tuple[str, str]:
        self.posted_at = time.monotonic()
        try:
            async with asyncio.timeout(self.http_timeout):
                return await self.client.negotiate(self, offer_sdp)
        except TimeoutError:
            self.client.streams.pop(self.id, None)
            raise StreamFailed("timeout", f"no answer within {self.http_timeout} s") from None

    async def _delete_location(self) -> None:
        if self.state in proto.TERMINAL_STATES or self.client.state != proto.ESTABLISHED:
            return
        try:
            await self.client.send(proto.stop(self.id))
            await self.wait_state(proto.ENDED_STATE[self.kind], 2.0)
        except (ConnectionError, aiohttp.ClientError, TimeoutError, StreamFailed):
            pass


class SessionPublisher(SessionStream, WhipPublisher):
    """Publishes tracks over the session (same tracks and codec handling as WHIP)."""

    kind = Kind.PUBLISH

    def __init__(self, client: SessionClient, stream: str, tracks, video_codec="vp8",
                 **kwargs) -> None:
        WhipPublisher.__init__(self, client.url_base, stream, tracks, video_codec,
                               http=client.http, **kwargs)
        self._bind(client)


class SessionViewer(SessionStream, WhepViewer):
    """Plays a stream over the session; counts and decodes frames like ``WhepViewer``."""

    kind = Kind.PLAY

    def __init__(self, client: SessionClient, stream: str, **kwargs) -> None:
        WhepViewer.__init__(self, client.url_base, stream, http=client.http, **kwargs)
        self._bind(client)
