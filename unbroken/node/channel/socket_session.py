"""One session-channel socket from its hello to its close."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

from unbroken.protocol import session as proto
from unbroken.protocol.endings import Ending

from .hello import receive_hello, too_big
from .limits import RateLimit
from .outbox import OUTBOX_LIMIT, Outbox, Socket
from .pings import Pinger
from .streams import StreamHandles

if TYPE_CHECKING:
    from .registry import ChannelRegistry

log = logging.getLogger("unbroken.node.ws")

CLOSE_TIMEOUT = 2.0  # seconds a close handshake may take


class SocketSession:
    """Owns one socket's life: handshake, reading and dispatching messages, and the
    orderly end (streams released, queued messages sent, close handshake). What it
    sends, pings, rate limit and streams are its ``Outbox``, ``Pinger``, ``RateLimit``
    and ``StreamHandles``."""

    def __init__(self, registry: "ChannelRegistry", ws: Socket, request: web.Request,
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
        self.outbox = Outbox(ws, self.id)
        self.resume_token = secrets.token_urlsafe(18)
        self.proxied = "Via" in request.headers  # a proxy (the stream manager) in between
        # while its socket is gone and its streams wait for a resume: resolved with the
        # session that took them over, or None when the wait ends without one
        self.parked: asyncio.Future[SocketSession | None] | None = None
        self._held: list[dict] = []  # messages for the client while parked
        self.rate = RateLimit(self.limits, self.send, self.close)
        self.pinger: Pinger | None = None
        self.streams = StreamHandles(registry.admission, self.limits.max_streams, self.send,
                                     self._spawn, self.id)
        self.finished = asyncio.Event()
        self._ping_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        ws.session = self

    def send(self, message: dict) -> None:
        if self.parked is not None:
            if len(self._held) < OUTBOX_LIMIT:
                self._held.append(message)
            return
        self.outbox.send(message)

    def close(self, code: str, reason: str) -> None:
        if self.parked is not None:
            if not self.parked.done():  # e.g. the node shuts down: no resume any more
                self.parked.set_result(None)
            return
        self.outbox.close(code, reason)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        """The session from welcome to close. A server-side close (``close()``) stops
        the reader, ends the streams, sends what is queued (session_closing last), then
        does the close handshake: aiohttp reads and discards until the client's close
        frame, so unread input cannot reset the connection under our last messages."""
        outbox = self.outbox
        self.registry.sockets[self.id] = self
        writer = asyncio.ensure_future(outbox.write_loop())
        reader = asyncio.ensure_future(self._read_session())
        closer = asyncio.ensure_future(outbox.close_requested.wait())
        ending, reason = Ending.SESSION_CLOSED, "session closed"
        resumable = False
        try:
            await asyncio.wait({reader, closer}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():  # closed by the node: stop reading, close below
                reader.cancel()
            results = await asyncio.gather(reader, return_exceptions=True)
            if isinstance(results[0], tuple):
                ending, reason = results[0]
            elif isinstance(results[0], Exception):
                log.error("session channel failed", exc_info=results[0],
                          extra={"channel": self.id})
                self.close(proto.INTERNAL_ERROR, "internal error")
            if outbox.closing is not None:
                ending, reason = self._lost(outbox.closing[0])
            failed = isinstance(results[0], Exception) \
                and not isinstance(results[0], asyncio.CancelledError)
            resumable = not failed and self._resumable(ending)
        finally:
            closer.cancel()
            if self._ping_task is not None:
                self._ping_task.cancel()
            outbox.ended = True  # nothing more reaches the client
        successor = None
        try:
            if resumable:
                writer.cancel()
                await self._close_socket()
                successor = await self._park()
            if successor is None:
                await self.streams.release(ending, reason)
        finally:
            if outbox.closing is not None:
                try:  # queued messages first, session_closing last
                    await asyncio.wait_for(asyncio.shield(writer), CLOSE_TIMEOUT)
                except asyncio.TimeoutError:
                    pass
            writer.cancel()
            for task in list(self._tasks):
                task.cancel()
            await self._close_socket()
            if self.registry.sockets.get(self.id) is self:
                del self.registry.sockets[self.id]
            self.finished.set()
            log.info("session channel closed", extra={
                "channel": self.id, "reason": "resumed" if successor else reason,
                "age": round(time.monotonic() - self.created_at, 3)})

    def _resumable(self, ending: Ending) -> bool:
        """A socket through a proxy broke, or stopped carrying pongs, or the proxy said it
        stops, while the session held streams: keep them for a resume (the client's
        media may well be fine; a proxy stopped or frozen looks just like that). A direct
        socket that breaks, or a direct client that stops answering pings, is a client
        gone: its streams are released at once."""
        if not self.proxied or not self.welcomed or not self.streams.handles \
                or self.limits.resume_ms <= 0:
            return False
        if ending is not Ending.SESSION_LOST:
            return False
        closing = self.outbox.closing
        return closing is None or closing[0] == proto.PING_TIMEOUT

    async def _park(self) -> "SocketSession | None":
        """Wait up to resume_ms for a socket that resumes this session; its successor."""
        self.parked = asyncio.get_running_loop().create_future()
        log.info("session channel waiting for a resume", extra={
            "channel": self.id, "streams": len(self.streams.handles),
            "resume_ms": self.limits.resume_ms})
        try:
            return await asyncio.wait_for(asyncio.shield(self.parked),
                                          self.limits.resume_ms / 1000)
        except asyncio.TimeoutError:
            return None
        finally:
            if not self.parked.done():
                self.parked.set_result(None)

    def take_over(self, parked: "SocketSession") -> None:
        """This new socket resumes `parked`: its id, streams, tasks and held messages."""
        parked.parked.set_result(self)
        if self.registry.sockets.get(self.id) is self:
            del self.registry.sockets[self.id]
        self.id, self.outbox.channel = parked.id, parked.id
        self.resume_token = parked.resume_token
        self.streams = parked.streams
        self.streams.rebind(self.send, self._spawn)
        for task in parked._tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        parked._tasks = set()
        self.registry.sockets[self.id] = self
        for message in parked._held:
            self.send(message)
        log.info("session channel resumed", extra={
            "channel": self.id, "streams": len(self.streams.handles),
            "held": len(parked._held)})

    async def _close_socket(self) -> None:
        if self.ws.closed:
            return
        code, reason = self.outbox.closing or (proto.CLIENT_CLOSED, "")
        try:
            await asyncio.wait_for(
                self.ws.close(code=proto.close_code(code),
                              message=proto.close_reason(reason).encode()),
                CLOSE_TIMEOUT + 0.5)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            transport = self.request.transport
            if transport is not None:
                transport.abort()

    @staticmethod
    def _lost(why: str) -> tuple[Ending, str]:
        return Ending.SESSION_LOST, f"session lost: {why}"

    async def _read_session(self) -> tuple[Ending, str]:
        """Handshake, then messages until the socket ends; returns why its streams end."""
        config = self.state.config
        hello = await receive_hello(self.ws, self.outbox, self.limits.hello_timeout,
                                    self.limits.max_message_bytes, config.token,
                                    self.authorized)
        if hello is None:
            return self._lost("no hello")
        self.client = hello.client
        self.pinger = Pinger(hello.ping_interval, hello.missing_pings, self.send, self.close)
        self.welcomed = True
        parked = self.registry.parked(*hello.resume) if hello.resume else None
        self.send(proto.welcome(parked.id if parked else self.id, hello.ping_interval,
                                hello.missing_pings, self.limits.public(), self.state.draining,
                                self.resume_token if parked is None else parked.resume_token,
                                resumed=parked is not None, proxied=self.proxied,
                                node=self.state.config.cluster_id if self.proxied else None))
        if parked is not None:
            self.take_over(parked)
        if self.state.draining:  # became draining during the handshake
            self.send({"type": "node_draining", **self.state.draining_info()})
        log.info("session channel opened", extra={
            "channel": self.id, "client": self.client, "ping_interval": hello.ping_interval,
            "missing_pings": hello.missing_pings})
        outbox = self.outbox
        self._ping_task = asyncio.ensure_future(
            self.pinger.run(lambda: outbox.closing is None and not outbox.ended))
        return await self._read_loop()

    def _too_big(self, data: str | bytes) -> bool:
        limit = self.limits.max_message_bytes
        if too_big(data, limit):
            self.close(proto.MESSAGE_TOO_BIG, f"a message exceeded {limit} bytes")
            return True
        return False

    async def _read_loop(self) -> tuple[Ending, str]:
        """Handle messages until the socket ends; returns why the streams end."""
        while True:
            msg = await self.ws.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and self._too_big(msg.data):
                continue  # closing: the reply to our close frame ends the loop
            if msg.type == WSMsgType.TEXT:
                self._received(msg.data)
                continue
            if msg.type == WSMsgType.BINARY:
                if self.rate.admit():
                    self.send(proto.error(proto.BAD_MESSAGE,
                                          "binary frames are not part of the protocol"))
                continue
            if self.outbox.closing is not None:
                return self._lost(self.outbox.closing[0])
            if msg.type == WSMsgType.CLOSE:
                if msg.data == proto.close_code(proto.PROXY_GONE):
                    return self._lost("the proxy in between went away")
                return Ending.SESSION_CLOSED, "session closed"
            if msg.type == WSMsgType.ERROR:
                return self._lost(str(msg.data))
            # CLOSING / CLOSED: the connection went away
            if self.ws.close_code == WSCloseCode.OK:
                return self._lost("connection ended without a close frame")
            return self._lost("connection lost")

    def _received(self, text: str) -> None:
        if not self.rate.admit() or self.outbox.closing is not None:
            return
        try:
            message = proto.parse_client_message(text)
        except proto.ProtocolError as exc:
            self.send(proto.error_from(exc))
            return
        kind = message["type"]
        if kind == "pong":
            self.pinger.pong(message["seq"])
        elif kind == "ping":
            self.send(proto.pong(message["seq"]))
        elif kind in ("publish", "play"):
            self.streams.start(message)
        elif kind == "stop":
            self.streams.stop(message["id"])
        elif kind == "hello":
            self.send(proto.error(proto.ALREADY_WELCOMED, "the session is already established",
                                  "hello"))

    def snapshot(self) -> dict:
        pinger = self.pinger
        return {"id": self.id, "client": self.client,
                "age": round(time.monotonic() - self.created_at, 3),
                "ping_interval": pinger.interval_ms if pinger else proto.DEFAULT_PING_INTERVAL_MS,
                "missing_pings": pinger.missing if pinger else proto.DEFAULT_MISSING_PINGS,
                "rtt": None if pinger is None or pinger.rtt is None else round(pinger.rtt, 4),
                "streams": self.streams.snapshot()}
