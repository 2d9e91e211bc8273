"""A subscription backed by a bounded queue: both stores deliver events through one."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from .base import ClusterEvent, EventKind, EventSubscription, StoreUnavailable

__all__ = ["QueueSubscription"]

MAX_PENDING_EVENTS = 10_000

_CLOSED = object()


class QueueSubscription(EventSubscription):
    """Owns one subscriber's queue of pending events. A subscriber that falls more than
    `max_pending` events behind loses them and gets one RESYNC instead (it rebuilds
    from a snapshot), so a stuck consumer never grows memory without bound."""

    def __init__(
        self,
        on_close: Callable[[QueueSubscription], Awaitable[None]],
        max_pending: int = MAX_PENDING_EVENTS,
    ) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=max_pending + 2)
        self._max_pending = max_pending
        self._on_close = on_close
        self._closed = False
        self._ready = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def mark_ready(self) -> None:
        self._ready.set()

    def push(self, event: ClusterEvent) -> None:
        """Queue an event without waiting (called by the store)."""
        if self._closed:
            return
        if self._queue.qsize() >= self._max_pending:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(ClusterEvent(EventKind.RESYNC))
        self._queue.put_nowait(event)

    async def wait_ready(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise StoreUnavailable(f"event subscription not ready after {timeout} s") from None

    async def __anext__(self) -> ClusterEvent:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # every later wait ends too
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    def end(self) -> None:
        """End the iteration (called by the store when it closes)."""
        if not self._closed:
            self._closed = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(_CLOSED)

    async def aclose(self) -> None:
        if self._closed:
            return
        self.end()
        await self._on_close(self)
