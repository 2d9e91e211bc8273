"""The restore loop shared by Publisher and Subscriber.

A client runs one *attempt* at a time (a session on one node). The attempt's
watchdogs report the first fault; the client then starts a new attempt by the
retry schedule, across the failover URL list, until one delivers media again,
and reports the restore (fault, detect_ms, restore_ms, gap_ms). A manual stop
never restores; running out of tries is reported as a `gave_up` event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from unbroken.protocol.faults import TRY_ELSEWHERE, Fault as FaultName

from .events import DISCONNECTED, ESTABLISHED, FAILED, ClientEvent, RestoreReport
from .network import NetworkWatcher
from .options import RestoreOptions
from .schedule import RetrySchedule

log = logging.getLogger("unbroken.client")

# faults that mean "not on this node": the restore starts with the next URL. After any
# other fault the same node comes first: a dead one refuses at once (or within the 0.5 s
# connect timeout), a live one keeps a republishing publisher's viewers on their sessions.
FIRST_MEDIA_POLL = 0.005  # s: how soon the first frame of an attempt is noticed
MEDIA_POLL = 0.05



@dataclass
class Fault:
    name: str
    last_good_at: float  # monotonic: the last moment the attempt was known healthy
    detected_at: float
    last_media_at: float | None = None
    prefer_url: str | None = None  # where to try first (e.g. where the stream is live now)


class Attempt:
    """One session on one node. Subclasses connect, watch, and report one fault."""

    # received media proves the path works; a publisher's own sent bytes do not
    media_proves_health = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.first_media_at: float | None = None
        self.last_media_at: float | None = None
        self.tries = 0  # retry rounds it took to get this attempt going
        self._fault: asyncio.Future[Fault] = asyncio.get_running_loop().create_future()
        self._media = asyncio.Event()
        self._watchers: list = []  # watchdogs with a stop() method
        self._tasks: list[asyncio.Task] = []

    def _stop_background(self) -> None:
        """Stop the attempt's watchdogs and background tasks (first thing in close())."""
        for watcher in self._watchers:
            watcher.stop()
        for task in self._tasks:
            task.cancel()

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def report_fault(self, name: str, last_good_at: float | None = None,
                     prefer_url: str | None = None) -> None:
        if self._fault.done():
            return
        now = time.monotonic()
        last_good = last_good_at if last_good_at is not None else now
        if self.media_proves_health and self.last_media_at:
            # media seen later than the given evidence narrows when the fault happened
            last_good = max(last_good, self.last_media_at)
        self._fault.set_result(Fault(name, min(last_good, now), now, self.last_media_at,
                                     prefer_url))

    def media_arrived(self) -> None:
        now = time.monotonic()
        self.last_media_at = now
        if self.first_media_at is None:
            self.first_media_at = now
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
            done, _ = await asyncio.wait({media, self._fault}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            media.cancel()
        if self._media.is_set():
            return
        if self._fault.done():
            raise ConnectionError(f"{self.url}: {self._fault.result().name}")
        raise TimeoutError(f"{self.url}: no media within {timeout} s")

    async def wait_fault(self) -> Fault:
        return await asyncio.shield(self._fault)


class RestoringClient:
    """Base of Publisher and Subscriber: attempts, restores, events, manual stop."""

    role = ""  # "publisher" | "subscriber"
    live_state = ""  # PUBLISHING | PLAYING
    stopped_state = ""  # UNPUBLISHED | STOPPED

    def __init__(self, urls: str | list[str], stream: str, token: str | None = None,
                 options: RestoreOptions | None = None,
                 on_event: Callable[[ClientEvent], None] | None = None) -> None:
        self.urls = [u.strip().rstrip("/") for u in
                     (urls.split(",") if isinstance(urls, str) else urls) if u.strip()]
        if not self.urls:
            raise ValueError("at least one URL is needed")
        self.stream = stream
        self.token = token
        self.options = options or RestoreOptions()
        self.options.validate()
        self.on_event = on_event
        self.events: asyncio.Queue[ClientEvent] = asyncio.Queue(maxsize=1000)
        self.attempt: Attempt | None = None
        self.restores: list[RestoreReport] = []
        self.state = "NEW"
        self._url_index = 0
        self._stopping = False
        self._supervisor: asyncio.Task | None = None
        self._network: NetworkWatcher | None = None
        self._closing: set[asyncio.Task] = set()
        self.done = asyncio.Event()  # set when stopped or given up

    # public -------------------------------------------------------------------------
    @property
    def url(self) -> str | None:
        return self.attempt.url if self.attempt else None

    async def start(self) -> "RestoringClient":
        """Connect (trying the URL list by the retry schedule); raises if all tries fail."""
        attempt = await self._connect(first_url=0, fault=None)
        if attempt is None:
            self._emit(ClientEvent("gave_up", FAILED, reason="could not connect",
                                   url=self.urls[0]))
            self.done.set()
            raise ConnectionError(f"{self.role}: could not connect to {self.urls}")
        self._established(attempt)
        if self.options.network_watch:
            self._network = NetworkWatcher(self._network_changed)
            await self._network.start()
        self._supervisor = asyncio.create_task(self._supervise())
        return self

    async def stop(self) -> None:
        """Manual stop: ends the session and never restores."""
        if self._stopping:
            return
        self._stopping = True
        if self._supervisor:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._network:
            await self._network.stop()
        if self.attempt:
            await self.attempt.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
        self._emit(ClientEvent("stream", self.stopped_state, reason="stopped by user",
                               url=self.url))
        self._emit(ClientEvent("session", DISCONNECTED, reason="stopped by user", url=self.url))
        self.state = DISCONNECTED
        self.done.set()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    async def next_event(self, timeout: float) -> ClientEvent:
        return await asyncio.wait_for(self.events.get(), timeout)

    # to implement -------------------------------------------------------------------
    def _new_attempt(self, url: str) -> Attempt:
        raise NotImplementedError

    def _after_fault(self, fault: Fault) -> bool:
        """Adjust for the next attempt (e.g. change codec); False = give up."""
        return True

    def _report_extra(self) -> dict:
        return {}

    # internals ----------------------------------------------------------------------
    def _emit(self, event: ClientEvent) -> None:
        log.info(f"{self.role} {event.kind}", extra={"stream": self.stream, **event.as_dict()})
        if self.events.full():
            self.events.get_nowait()
        self.events.put_nowait(event)
        if self.on_event:
            try:
                self.on_event(event)
            except Exception:
                log.exception("on_event callback failed")

    def _established(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.state = self.live_state
        self._emit(ClientEvent("session", ESTABLISHED, url=attempt.url))
        self._emit(ClientEvent("stream", self.live_state, url=attempt.url))

    def _network_changed(self, unchanged_at: float) -> None:
        if self.attempt is not None:
            self.attempt.report_fault(FaultName.NETWORK_CHANGE, unchanged_at)

    async def _supervise(self) -> None:
        while not self._stopping:
            attempt = self.attempt
            fault = await attempt.wait_fault()
            if self._stopping:
                return
            self.state = FAILED
            self._emit(ClientEvent("stream", FAILED, reason=fault.name, url=attempt.url))
            self._close_in_background(attempt)
            if not (self.options.restore and self._after_fault(fault)):
                self._emit(ClientEvent("session", FAILED, reason=fault.name, url=attempt.url))
                self._emit(ClientEvent("gave_up", FAILED, reason=fault.name, url=attempt.url))
                self.done.set()
                return
            self._emit(ClientEvent("restoring", reason=fault.name, url=attempt.url))
            first = self._url_index
            if fault.prefer_url in self.urls:
                first = self.urls.index(fault.prefer_url)
            elif fault.name in TRY_ELSEWHERE:
                first = (first + 1) % len(self.urls)
            new = await self._connect(first, fault)
            if new is None:
                self._emit(ClientEvent("session", FAILED, reason=fault.name, url=attempt.url))
                self._emit(ClientEvent("gave_up", FAILED,
                                       reason=f"{fault.name}: max tries exhausted",
                                       url=attempt.url))
                self.done.set()
                return
            self.attempt = new
            report = RestoreReport(
                fault=fault.name,
                detect_ms=round((fault.detected_at - fault.last_good_at) * 1000, 1),
                restore_ms=round((new.first_media_at - fault.detected_at) * 1000, 1),
                gap_ms=round((new.first_media_at - (fault.last_media_at or fault.last_good_at))
                             * 1000, 1),
                tries=new.tries, url=new.url, **self._report_extra())
            self.restores.append(report)
            self.state = self.live_state
            self._emit(ClientEvent("restored", self.live_state, reason=fault.name,
                                   url=new.url, report=report))

    def _close_in_background(self, attempt: Attempt) -> None:
        # a dead node can make a goodbye slow: never let it delay the restore
        task = asyncio.create_task(attempt.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _connect(self, first_url: int, fault: Fault | None) -> Attempt | None:
        """Try URLs round-robin from `first_url`: each round without waiting between
        URLs, rounds spaced by the retry schedule. Returns the attempt with media."""
        schedule = RetrySchedule(self.options)
        n = len(self.urls)
        index = first_url
        while not schedule.exhausted and not self._stopping:
            delay = schedule.next_delay() if (index - first_url) % n == 0 else 0.0
            if delay:
                await asyncio.sleep(delay)
            url = self.urls[index % n]
            attempt = self._new_attempt(url)
            try:
                await asyncio.wait_for(attempt.open(), self.options.connect_timeout_s)
                await attempt.wait_media(self.options.connect_timeout_s)
            except asyncio.CancelledError:
                self._close_in_background(attempt)
                raise
            except Exception as exc:  # refused, unreachable, timed out: next URL / round
                log.info(f"{self.role} attempt failed",
                         extra={"url": url, "error": repr(exc)[:200], "try": schedule.tries})
                self._close_in_background(attempt)
                index += 1
                continue
            self._url_index = index % n
            attempt.tries = schedule.tries
            return attempt
        return None
