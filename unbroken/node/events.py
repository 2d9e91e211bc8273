"""Per-session event channels: what WHIP/WHEP server-sent events and the session socket
(``session_channel``) both tell a client, so the two never disagree."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from unbroken.protocol.whip_whep import SSE_EVENTS

log = logging.getLogger("unbroken.node")

MAX_QUEUED_EVENTS = 64


class EventChannel:
    """Owns one media session's events: pushed to listeners at once (the session socket),
    and queued, bounded, for the server-sent events reader."""

    def __init__(self) -> None:
        self.subscribed: set[str] = set(SSE_EVENTS)
        self._queue: asyncio.Queue[tuple[str, dict] | None] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self.closed = False
        # called with every pushed event, subscribed or not (the session socket listens)
        self.listeners: list[Callable[[str, dict], None]] = []

    def push(self, event: str, data: dict | None = None) -> None:
        if self.closed:
            return
        for listener in list(self.listeners):
            try:
                listener(event, data or {})
            except Exception:
                log.exception("event listener failed")
        if event not in self.subscribed:
            return
        if self._queue.full():  # a reader that does not keep up loses the oldest events
            self._queue.get_nowait()
        self._queue.put_nowait((event, data or {}))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def next(self, timeout: float) -> tuple[str, dict] | None:
        """The next event; ("", {}) on timeout (time for a keep-alive); None when closed."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return "", {}


def sse_frame(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()

