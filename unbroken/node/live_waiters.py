"""Viewers waiting for a stream's publisher (``wait_live_ms``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

MAX_WAITED_STREAMS = 1000  # stream names with viewers waiting for a publisher


@dataclass
class _Waiters:
    live: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


class LiveWaiters:
    """Owns, per stream name, the requests waiting for a publisher, and wakes them when
    one attaches (a viewer that arrives while its publisher restores gets the stream the
    moment it is back)."""

    def __init__(self) -> None:
        self._waiting: dict[str, _Waiters] = {}

    async def wait(self, name: str, timeout: float) -> None:
        """Wait up to `timeout` s for a publisher on `name`."""
        waiters = self._waiting.get(name)
        if waiters is None:
            if len(self._waiting) >= MAX_WAITED_STREAMS:
                return
            waiters = self._waiting[name] = _Waiters()
        waiters.count += 1
        try:
            async with asyncio.timeout(timeout):
                await waiters.live.wait()
        except TimeoutError:
            pass
        finally:
            waiters.count -= 1
            if waiters.count == 0 and self._waiting.get(name) is waiters:
                del self._waiting[name]

    def wake(self, name: str) -> None:
        waiters = self._waiting.pop(name, None)
        if waiters is not None:
            waiters.live.set()
