"""Watchdogs that turn silence into a fault: a counter that stops growing, and a
server-sent-events link whose keep-alives stop arriving."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp

from unbroken.protocol.faults import Fault

from .reattach import ReattachPolicy

__all__ = ["EventStreamWatch", "FaultCallback", "FrameStallWatchdog", "StallWatchdog"]

log = logging.getLogger("unbroken.client.watchdogs")

FaultCallback = Callable[[str, float], None]  # (fault name, last time things were fine)


class _Polling:
    """A watchdog's one task: `start()` runs `_run()`, `stop()` cancels it."""

    _task: asyncio.Task | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()
            self._task = None


class StallWatchdog(_Polling):
    """Samples a growing counter every `interval`; `max_tries` samples in a row
    without growth → `on_fault(name, last_growth_at)`. Seed 004's bitrate check
    (outbound bytes) and the subscriber's media-silence check (packets in)."""

    def __init__(self, name: str, sample: Callable[[], Awaitable[int] | int],
                 interval: float, max_tries: int, on_fault: FaultCallback) -> None:
        self.name = name
        self.sample = sample
        self.interval = interval
        self.max_tries = max_tries
        self.on_fault = on_fault
        self.paused = False  # e.g. while the stream is known to be inactive
        self.last_growth_at = time.monotonic()


    async def _read(self) -> int:
        value = self.sample()
        if asyncio.iscoroutine(value):
            value = await value
        return value

    async def _run(self) -> None:
        last = await self._read()
        zero_samples = 0
        while True:
            await asyncio.sleep(self.interval)
            value = await self._read()
            if value > last or self.paused:
                self.last_growth_at = time.monotonic()
                zero_samples = 0
            else:
                zero_samples += 1
                if zero_samples >= self.max_tries:
                    self.on_fault(self.name, self.last_growth_at)
                    return
            last = value


class FrameStallWatchdog(_Polling):
    """A picture that stopped while its packets still arrive: loss the receiver could not
    repair, a keyframe that never comes, a decoder that gives nothing. Counting packets
    (StallWatchdog) does not see it. No new frame for `stall / 2` while video packets
    keep coming → `request_keyframe()` (again every `stall / 4`); for `stall` →
    `on_fault(name, last_frame_at)`. Without video packets it stays quiet: silence is
    the media-silence check's, a publisher's pause the node's `inactive`."""

    def __init__(self, name: str, frames: Callable[[], int], packets: Callable[[], int],
                 stall: float, request_keyframe: Callable[[], Awaitable[object]],
                 on_fault: FaultCallback) -> None:
        self.name = name
        self.frames = frames
        self.packets = packets
        self.stall = stall
        self.request_keyframe = request_keyframe
        self.on_fault = on_fault
        self.interval = max(0.02, stall / 10)
        self.paused = False
        self.keyframe_requests = 0


    async def _run(self) -> None:
        frames, packets = self.frames(), self.packets()
        last_frame_at = last_packet_at = time.monotonic()
        asked_at: float | None = None
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            new_frames, new_packets = self.frames(), self.packets()
            if new_packets > packets:
                last_packet_at = now
            if new_frames > frames or self.paused:
                last_frame_at, asked_at = now, None
            frames, packets = new_frames, new_packets
            stalled = now - last_frame_at
            # packets came since the last frame, and still come
            flowing = last_packet_at > last_frame_at and now - last_packet_at < self.stall / 2
            if not flowing or stalled < self.stall / 2:
                continue
            if stalled >= self.stall:
                log.info("frames stalled", extra={"after": round(stalled, 3),
                                                  "keyframe_requests": self.keyframe_requests})
                self.on_fault(self.name, last_frame_at)
                return
            if asked_at is None or now - asked_at >= self.stall / 4:
                asked_at = now
                self.keyframe_requests += 1
                try:
                    await self.request_keyframe()
                except Exception as exc:  # noqa: BLE001 - a closing session: the fault follows
                    log.debug("keyframe request failed", extra={"error": repr(exc)})


class EventStreamWatch:
    """Reads a session's server-sent events (with `keepalive_ms`), hands events to
    `on_event`, and reports a fault when the stream ends (``Fault.SESSION_CLOSED``) or
    `missing` keep-alive periods pass in silence (``Fault.MISSING_PINGS``).

    `reattach`: the session came through a proxy (see ``reattach.py``): a stream that
    ends, or a proxy that cannot be reached, is re-attached while `media_alive()` says
    the session lives and the policy allows; a fault only when it says the session is
    gone. None: the node itself served the stream, its end is the session's end."""

    def __init__(self, url: str, token: str | None, period: float, missing: int,
                 on_event: Callable[[str, dict], None], on_fault: FaultCallback,
                 reattach: ReattachPolicy | None = None,
                 media_alive: Callable[[], Awaitable[bool] | bool] | None = None) -> None:
        self.url = url
        self.token = token
        self.period = period
        self.missing = missing
        self.on_event = on_event
        self.on_fault = on_fault
        self.reattach = reattach
        self.media_alive = media_alive
        self.last_heard = time.monotonic()
        self.reattached = 0  # times the stream was attached again after a loss
        self._reattaching = False  # keep-alives are not expected meanwhile
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._watch())]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=None)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            status = await self._read(http)
            if status is not None and status != 200:
                log.warning("event stream refused", extra={"status": status})
                return  # the node has no event stream for us: watch media only
            while await self._attach_again(http):
                pass
        self._stop_watch()
        self.on_fault(Fault.SESSION_CLOSED, self.last_heard)

    async def _attach_again(self, http: aiohttp.ClientSession) -> bool:
        """After a lost stream: True once it reads again (and was lost again), False when
        the session is gone."""
        if self.reattach is None:
            return False
        self._reattaching = True
        lost_at = time.monotonic()
        status: int | None = None
        tries = 0
        try:
            while True:
                wait = self.reattach.next_wait(status, tries, time.monotonic() - lost_at,
                                               await self._media_alive())
                if wait is None:
                    log.info("event stream not attached again", extra={
                        "status": status, "tries": tries,
                        "after": round(time.monotonic() - lost_at, 3)})
                    return False
                await asyncio.sleep(wait)
                tries += 1
                status = await self._read(http, lost_at)
                if status == 200:
                    return True  # it was read again until it ended once more
        finally:
            self._reattaching = False

    async def _media_alive(self) -> bool:
        if self.media_alive is None:
            return False
        alive = self.media_alive()
        if asyncio.iscoroutine(alive):
            alive = await alive
        return bool(alive)

    async def _read(self, http: aiohttp.ClientSession, lost_at: float | None = None) -> int | None:
        """Read the stream until it ends or breaks: its HTTP status (200: it was read),
        None when it could not be reached. `lost_at`: this is a re-attach of a stream
        lost then."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = f"{self.url}?keepalive_ms={max(100, int(self.period * 1000))}"
        status: int | None = None
        try:
            async with http.get(url, headers=headers) as resp:
                status = resp.status
                if resp.status != 200:
                    return resp.status
                if lost_at is not None:
                    self.reattached += 1
                    self.last_heard = time.monotonic()
                    self._reattaching = False
                    log.info("event stream attached again", extra={
                        "url": self.url, "after": round(self.last_heard - lost_at, 3)})
                event = ""
                async for raw in resp.content:
                    self.last_heard = time.monotonic()
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event:
                        self.on_event(event, _event_data(line[5:].strip()))
                        event = ""
                log.info("event stream ended", extra={"url": self.url})
                return 200
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            (log.debug if lost_at is not None and status is None else log.info)(
                "event stream failed", extra={"url": self.url, "error": repr(exc)})
            return status  # 200: it was read, then broke (a new loss from now)

    def _stop_watch(self) -> None:
        if len(self._tasks) == 2:
            self._tasks[1].cancel()

    async def _watch(self) -> None:
        limit = self.period * self.missing
        while True:
            await asyncio.sleep(self.period / 2)
            if not self._reattaching and time.monotonic() - self.last_heard > limit:
                self._tasks[0].cancel()
                self.on_fault(Fault.MISSING_PINGS, self.last_heard)
                return


def _event_data(text: str) -> dict:
    """A server-sent event's JSON data as a dict ({} when it is not a JSON object)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
