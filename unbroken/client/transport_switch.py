"""Subscriber transport failover (seed 000, docs/hls.md): which transport plays now, and
an attempt whose transport can change underneath the restore loop, make-before-break."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .attempt import Attempt
from .events import ClientEvent

__all__ = ["NOT_LIVE", "SwitchingAttempt", "TransportSelector"]

NOT_LIVE = (404, 409)  # answers that say the stream is not there, not that the transport fails


class TransportSelector:
    """Owns the current transport and the failures in a row per transport: after
    `failures_allowed` of them on the current one it moves to the next in `transports`
    and calls `on_change(transport, why)`. "Not live" refusals do not count."""

    def __init__(self, transports: Sequence[str], failures_allowed: int,
                 on_change: Callable[[str, str], None]) -> None:
        self.transports = tuple(transports)
        self.failures_allowed = failures_allowed
        self.on_change = on_change
        self.current = self.transports[0]
        self.closed = False  # a stopping client: failures from here on are its own doing
        self._failures = {t: 0 for t in self.transports}

    @property
    def preferred(self) -> str:
        return self.transports[0]

    def failed(self, transport: str, exc: BaseException) -> None:
        if self.closed or getattr(exc, "status", None) in NOT_LIVE:
            return
        self._failures[transport] = self._failures.get(transport, 0) + 1
        if (transport == self.current and len(self.transports) > 1
                and self._failures[transport] >= self.failures_allowed):
            self._failures[transport] = 0
            following = self.transports[(self.transports.index(transport) + 1)
                                        % len(self.transports)]
            self.choose(following, f"{transport} failed {self.failures_allowed} times")

    def worked(self, transport: str) -> None:
        self._failures[transport] = 0

    def choose(self, transport: str, why: str) -> None:
        if transport != self.current:
            self.current = transport
            self.on_change(transport, why)


class SwitchingAttempt(Attempt):
    """A subscriber session whose transport (WHEP or HLS: the inner attempt) can change
    underneath the restore loop: `switch()` opens the other transport, and swaps only once
    it delivers media (make-before-break). Faults of the current inner attempt are this
    attempt's faults; failures to connect are counted per transport by the selector.

    `new_attempt(transport, url)` makes inner attempts; `close_in_background(attempt)`
    retires them; `emit` reports failed probes."""

    def __init__(self, url: str, selector: TransportSelector,
                 new_attempt: Callable[[str, str], Attempt],
                 close_in_background: Callable[[Attempt], None],
                 emit: Callable[[ClientEvent], None], connect_timeout: float) -> None:
        super().__init__(url)
        self.selector = selector
        self.new_attempt = new_attempt
        self.close_in_background = close_in_background
        self.emit = emit
        self.connect_timeout = connect_timeout
        self.transport = selector.current
        self.inner = new_attempt(self.transport, url)
        self._relay: asyncio.Task | None = None
        self._closed = False

    @property
    def viewer(self):
        return self.inner.viewer

    async def open(self) -> None:
        try:
            await self.inner.open()
        except BaseException as exc:
            self.selector.failed(self.transport, exc)
            raise
        self._relay = asyncio.create_task(self._relay_faults(self.inner))

    async def wait_media(self, timeout: float) -> None:
        try:
            await self.inner.wait_media(timeout)
        except BaseException as exc:
            self.selector.failed(self.transport, exc)
            raise
        self.take_media(self.inner)
        self.selector.worked(self.transport)

    async def _relay_faults(self, inner: Attempt) -> None:
        fault = await inner.wait_fault()
        if inner is self.inner and not self.faulted:
            self.last_media_at = inner.last_media_at or self.last_media_at
            self.take_fault(fault)

    async def switch(self, transport: str) -> bool:
        """Play over `transport` instead, if it delivers media; False if it does not."""
        if transport == self.transport:
            return True
        new = self.new_attempt(transport, self.url)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await new.open()
            await new.wait_media(self.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure: stay where we are
            self.close_in_background(new)
            self.emit(ClientEvent("transport_probe", state=transport,
                                  reason=repr(exc)[:200], url=self.url))
            return False
        except asyncio.CancelledError:
            self.close_in_background(new)
            raise
        if self._closed or self.faulted:
            self.close_in_background(new)
            return False
        old, self.inner = self.inner, new
        self.transport = transport
        self._relay = asyncio.create_task(self._relay_faults(new))
        self.take_media(new)
        self.close_in_background(old)
        self.selector.worked(transport)
        self.selector.choose(transport, "switched")
        return True

    async def close(self) -> None:
        self._closed = True
        if self._relay:
            self._relay.cancel()
        await self.inner.close()
