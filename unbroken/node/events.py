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
    and queued, bounded, for each server-sent events reader. Every reader gets every
    event from when it attached; what is pushed while no reader is attached waits for
    the next one (a client re-attaching through a restarted proxy misses nothing)."""

    def __init__(self) -> None:
        self.subscribed: set[str] = set(SSE_EVENTS)
        self._backlog: asyncio.Queue[tuple[str, dict] | None] = _queue()
        self._readers: list[asyncio.Queue[tuple[str, dict] | None]] = []
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
        for queue in self._readers or [self._backlog]:
            _put(queue, (event, data or {}))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for queue in [*self._readers, self._backlog]:
                _put(queue, None)

    def attach(self) -> asyncio.Queue[tuple[str, dict] | None]:
        """A new reader's queue: what waited for a reader first, then every event."""
        queue = _queue()
        while not self._backlog.empty():
            queue.put_nowait(self._backlog.get_nowait())
        if self.closed and queue.empty():
            queue.put_nowait(None)
        self._readers.append(queue)
        return queue

    def detach(self, queue: asyncio.Queue) -> None:
        if queue in self._readers:
            self._readers.remove(queue)

    @staticmethod
    async def next(queue: asyncio.Queue, timeout: float) -> tuple[str, dict] | None:
        """A reader's next event; ("", {}) on timeout (time for a keep-alive); None when
        the session ended."""
        try:
            async with asyncio.timeout(timeout):
                return await queue.get()
        except TimeoutError:
            return "", {}


def _queue() -> asyncio.Queue:
    return asyncio.Queue(MAX_QUEUED_EVENTS)


def _put(queue: asyncio.Queue, item) -> None:
    if queue.full():  # a reader that does not keep up loses the oldest events
        queue.get_nowait()
    queue.put_nowait(item)


def sse_frame(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()

