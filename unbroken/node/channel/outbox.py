"""A session socket's outgoing side: messages in order, and the server-side close."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, web

from unbroken.protocol import session as proto

if TYPE_CHECKING:
    from .socket_session import SocketSession

log = logging.getLogger("unbroken.node.ws")

OUTBOX_LIMIT = 512  # messages waiting for a socket that does not keep up
# aiohttp's own frame limit, as a multiple of max_message_bytes: messages in between are
# read whole and refused with session_closing + 1009 (a clean close the client sees);
# beyond it aiohttp stops reading and closes at once (1009, reason set in Socket.close)
HARD_LIMIT_FACTOR = 16


class Outbox:
    """Owns what a socket sends: a bounded queue written in order by one task, and the
    server-side close (session_closing last, then the close frame)."""

    def __init__(self, ws: web.WebSocketResponse, channel: str) -> None:
        self.ws = ws
        self.channel = channel
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.closing: tuple[str, str] | None = None  # (code, reason) of a server close
        self.ended = False  # the socket is done: no more sends
        self.close_requested = asyncio.Event()

    def send(self, message: dict) -> None:
        """Queue a message; the writer task sends them in order."""
        if self.ended or self.closing is not None:
            return
        if self.queue.qsize() >= OUTBOX_LIMIT:
            self.close(proto.SLOW_READER, "the client does not read its messages")
            return
        self.queue.put_nowait(proto.encode(message))

    def close(self, code: str, reason: str) -> None:
        """Server-side close: session_closing, then the close frame (after queued messages)."""
        if self.ended or self.closing is not None:
            return
        self.queue.put_nowait(proto.encode(proto.session_closing(code, reason)))
        self.closing = (code, reason)
        self.queue.put_nowait(None)
        self.close_requested.set()
        self._log_closing()

    def take_over_close(self, code: str, reason: str) -> bool:
        """aiohttp closes the socket itself (1009): the writer stops; True when the
        caller should send session_closing."""
        if self.closing is not None or self.ended:
            return False
        self.closing = (code, reason)
        self.queue.put_nowait(None)
        self._log_closing()
        return True

    def _log_closing(self) -> None:
        code, reason = self.closing
        log.info("session channel closing", extra={"channel": self.channel, "code": code,
                                                   "reason": reason})

    async def write_loop(self) -> None:
        """Send queued messages in order until the None that follows a server close."""
        try:
            while True:
                text = await self.queue.get()
                if text is None:
                    return
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return


class Socket(web.WebSocketResponse):
    """aiohttp closes an oversized message's socket itself (1009, no reason): say why."""

    session: "SocketSession | None" = None

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"",
                    drain: bool = True) -> bool:
        session = self.session
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message and session is not None:
            hard = session.limits.max_message_bytes * HARD_LIMIT_FACTOR
            reason = f"a message exceeded {hard} bytes"
            if session.outbox.take_over_close(proto.MESSAGE_TOO_BIG, reason):
                try:
                    await self.send_str(proto.encode(
                        proto.session_closing(proto.MESSAGE_TOO_BIG, reason)))
                except (ConnectionError, RuntimeError):
                    pass
            message = reason.encode()
        return await super().close(code=code, message=message, drain=drain)
