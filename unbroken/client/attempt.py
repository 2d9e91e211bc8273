"""One try at a session: what the restore loop knows of a transport.

An attempt opens one session (a WHIP publish, a WHEP or session-channel play, an HLS
playback) through its transport, notices media arriving, and reports the first fault; the
restore loop only ever calls ``open``, ``wait_media``, ``wait_fault`` and ``close``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from unbroken.protocol.faults import Fault

__all__ = ["Attempt", "FaultRecord", "Watchdog"]

FIRST_MEDIA_POLL = 0.005  # s: how soon the first frame of an attempt is noticed
MEDIA_POLL = 0.05


@dataclass
class FaultRecord:
    """A fault as one attempt saw it: its name (a ``protocol.faults.Fault`` or a node's
    ending code), when the attempt was last known healthy, when the fault was found, the
    last media before it, and where to try first (e.g. where the stream is live now)."""

    name: str
    last_good_at: float  # monotonic
    detected_at: float
    last_media_at: float | None = None
    prefer_url: str | None = None


class Watchdog(Protocol):
    """Something an attempt runs while it lives (stopped when it closes)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Attempt:
    """One session on one node: subclasses open it through a transport and report its
    faults; this base owns the media timestamps, the first fault, and the background work
    (watchdogs and tasks) that ends with the attempt."""

    # received media proves the path works; a publisher's own sent bytes do not
    media_proves_health = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.first_media_at: float | None = None
        self.last_media_at: float | None = None
        self.tries = 0  # passes over the URL list it took to get this attempt going
        self.node: str | None = None  # the node id, when the URL source names it
        self._fault: asyncio.Future[FaultRecord] = asyncio.get_running_loop().create_future()
        self._media = asyncio.Event()
        self.ended = asyncio.Event()  # its connection failed or was closed (by either end)
        self._watchdogs: list[Watchdog] = []
        self._tasks: list[asyncio.Task] = []

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    # background work ------------------------------------------------------------------
    def watch(self, watchdog: Watchdog) -> None:
        """Start `watchdog`; it stops when the attempt closes."""
        watchdog.start()
        self._watchdogs.append(watchdog)

    def watchdogs(self) -> list[Watchdog]:
        return list(self._watchdogs)

    def run_in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` until it ends or the attempt closes."""
        self._tasks.append(asyncio.create_task(work))

    def stop_background(self) -> None:
        """Stop the watchdogs and background tasks (first thing in close())."""
        for watchdog in self._watchdogs:
            watchdog.stop()
        for task in self._tasks:
            task.cancel()

    # faults ---------------------------------------------------------------------------
    @property
    def faulted(self) -> bool:
        return self._fault.done()

    def report_fault(self, name: str, last_good_at: float | None = None,
                     prefer_url: str | None = None) -> None:
        """The first fault ends the attempt; later ones are ignored."""
        if self._fault.done():
            return
        now = time.monotonic()
        last_good = last_good_at if last_good_at is not None else now
        if self.media_proves_health and self.last_media_at:
            # media seen later than the given evidence narrows when the fault happened
            last_good = max(last_good, self.last_media_at)
        self._fault.set_result(FaultRecord(name, min(last_good, now), now, self.last_media_at,
                                           prefer_url))

    def connection_changed(self, state: str) -> None:
        """A peer connection's state: failed or closed is the attempt's fault."""
        if state in ("failed", "closed"):
            self.ended.set()
        if state == "failed":
            self.report_fault(Fault.CONNECTION_FAILED, self.last_media_at)
        elif state == "closed":
            self.report_fault(Fault.CONNECTION_CLOSED, self.last_media_at)

    def take_fault(self, fault: FaultRecord) -> None:
        """Report a fault another attempt saw as this attempt's own (unless one came first)."""
        if not self._fault.done():
            self._fault.set_result(fault)

    async def wait_fault(self) -> FaultRecord:
        return await asyncio.shield(self._fault)

    # media ----------------------------------------------------------------------------
    def media_arrived(self) -> None:
        now = time.monotonic()
        self.last_media_at = now
        if self.first_media_at is None:
            self.first_media_at = now
            self._media.set()

    def take_media(self, other: Attempt) -> None:
        """Count the media `other` received as this attempt's (it plays for this one)."""
        if self.first_media_at is None:
            self.first_media_at = other.first_media_at
        self.last_media_at = other.last_media_at or self.last_media_at
        self._media.set()

    async def follow_frames(self, frames: Callable[[], int]) -> None:
        """Marks media arrival while `frames()` grows (polled; the first one promptly)."""
        seen = 0
        while True:
            count = frames()
            if count > seen:
                seen = count
                self.media_arrived()
            await asyncio.sleep(FIRST_MEDIA_POLL if self.first_media_at is None
                                else MEDIA_POLL)

    async def wait_media(self, timeout: float) -> None:
        """Wait for the first media; a fault meanwhile raises ConnectionError."""
        media = asyncio.ensure_future(self._media.wait())
        try:
            await asyncio.wait({media, self._fault}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            media.cancel()
        if self._media.is_set():
            return
        if self._fault.done():
            raise ConnectionError(f"{self.url}: {self._fault.result().name}")
        raise TimeoutError(f"{self.url}: no media within {timeout} s")
