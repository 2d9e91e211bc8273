"""Per-session event channels (WHEP server-sent events; later the session socket)."""

from __future__ import annotations

import asyncio
import json

# events a WHEP client may subscribe to (draft-ietf-wish-whep, server-sent events)
WHEP_EVENTS = ("active", "inactive", "reconnect", "viewercount")
MAX_QUEUED_EVENTS = 64


class EventChannel:
    def __init__(self) -> None:
        self.subscribed: set[str] = set(WHEP_EVENTS)
        self._queue: asyncio.Queue[tuple[str, dict] | None] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self.closed = False

    def push(self, event: str, data: dict | None = None) -> None:
        if self.closed or event not in self.subscribed:
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
