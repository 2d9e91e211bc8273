"""Real processes for the drain and manager-restart tests: a plain-HTTP `unbroken manager`
(the Python SDK then talks to it like to a node), and a frame log that tells, from the
decoded frame counters of every session a viewer had, which frames it never got."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import av

from cluster_helpers import NODE_TOKEN, ManagerProcess, free_port
from unbroken.client.testsrc import TestPatternVideoTrack

START_TIMEOUT_S = 15.0
COUNTER_WRAP = 65536


@dataclass
class HttpManager(ManagerProcess):
    """A real `unbroken manager` process serving plain HTTP (what a test's SDK clients
    use without certificate pinning); `restart()` starts it again on the same port."""

    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HttpManager":
        self.log_path = self.log_path or f"/tmp/unbroken-http-manager-{self.port}.log"
        cmd = [sys.executable, "-m", "unbroken", "manager", "--host", "127.0.0.1",
               "--port", str(self.port), "--node-token", NODE_TOKEN, *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"manager exited: {self.log()}")
            if f"listening on {self.url}" in self.log():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"manager did not start: {self.log()}")

    def node_args(self, role: str, *extra: str) -> list[str]:
        return ["--manager", self.url, "--role", role, "--node-token", NODE_TOKEN, *extra]

    def restart(self) -> "HttpManager":
        self.kill()
        with open(self.log_path, "w"):
            pass  # a fresh log: start() looks for its own "listening on"
        return self.start()


async def start_viewers(url: str, count: int, **options) -> tuple[list, list[FrameLog], list[list]]:
    """`count` decoding SDK Subscribers of "cam" at `url`, each with its frame log and
    its event list."""
    from unbroken.client import Subscriber
    from unbroken.client.options import RestoreOptions

    logs = [FrameLog() for _ in range(count)]
    events: list[list] = [[] for _ in range(count)]
    viewers = []
    for log, seen in zip(logs, events):
        viewers.append(await Subscriber(url, "cam", on_frame=log, on_event=seen.append,
                                        options=RestoreOptions(**options)).start())
    return viewers, logs, events


class ClockedPatternTrack(TestPatternVideoTrack):
    """The test pattern whose frame counter is the frame slot since a shared `epoch`
    (monotonic), not the track's own frame count: a publisher's new session (new
    tracks) goes on with the counter where its old one was, so a viewer's counter has
    a hole exactly where frames were lost.

    The slot is the one the frame was due in (its pts), not when recv() ran: after a
    short pause the pacer catches up with frames that come at once, and counting those
    on from the last one would put this track's counter ahead of the clock for good (a
    session's counters would then no longer line up with another session's)."""

    def __init__(self, epoch: float, width: int = 512, height: int = 64, fps: float = 30) -> None:
        super().__init__(width, height, fps)
        self.epoch = epoch
        self._last = -1

    async def recv(self) -> av.VideoFrame:
        await self._running.wait()
        pts, time_base = await self.next_timestamp()
        index = max(self._last + 1, round((self.frame_due - self.epoch) * self.fps))
        self._last = index
        frame = self._draw(index % COUNTER_WRAP)
        frame.pts, frame.time_base = pts, time_base
        self.frames_sent += 1
        return frame


def clocked_source(epoch: float) -> Callable[[], list]:
    """A publisher source (fresh tracks per session) on one counter clock."""
    return lambda: [ClockedPatternTrack(epoch)]


class FrameLog:
    """Every decoded frame counter a viewer got, from any of its sessions (the old and
    the new one overlap during a make-before-break move), in arrival order."""

    def __init__(self) -> None:
        self.counters: list[tuple[float, int]] = []

    def __call__(self, frame: av.VideoFrame, counter: int | None) -> None:
        if counter is not None:
            self.counters.append((time.monotonic(), counter))

    def mark(self) -> int:
        return len(self.counters)

    def fps(self, start: int = 0) -> float:
        """Decoded frames per second since `start` (0 with fewer than two frames)."""
        window = self.counters[start:]
        if len(window) < 2:
            return 0.0
        return (len(window) - 1) / max(1e-6, window[-1][0] - window[0][0])

    def steps(self, start: int = 0, since: float = 0.0) -> list[tuple[float, int, int]]:
        """(time after `since`, counter before, counter after) where a counter is not
        its predecessor + 1 (a hole, or the old and the new session interleaved)."""
        window = self.counters[start:]
        return [(round(t - since, 3), p, c) for (t, c), (_, p) in zip(window[1:], window)
                if c != (p + 1) % COUNTER_WRAP]

    def missing(self, start: int = 0, end: int | None = None) -> list[int]:
        """Counter values between the first and the last frame of the window that no
        session delivered (unwrapped across 65536)."""
        values = _unwrapped([c for _, c in self.counters[start:end]])
        if not values:
            return []
        got = set(values)
        return [v for v in range(min(values), max(values) + 1) if v not in got]

    def largest_gap(self, start: int = 0, end: int | None = None) -> int:
        """Frames missing in a row at the worst place (0: none missing)."""
        holes = self.missing(start, end)
        run = best = 0
        previous = None
        for value in holes:
            run = run + 1 if previous is not None and value == previous + 1 else 1
            best = max(best, run)
            previous = value
        return best


def _unwrapped(values: list[int]) -> list[int]:
    out: list[int] = []
    offset = 0
    for value in values:
        if out and value + offset < out[-1] - COUNTER_WRAP // 2:
            offset += COUNTER_WRAP
        out.append(value + offset)
    return out


async def exited(proc: subprocess.Popen, timeout: float) -> int:
    """`proc`'s exit code once it has exited (at most `timeout` s), waiting without
    blocking the event loop: the test's own clients (publisher, viewers) run on it, and
    a blocking `proc.wait()` would freeze their media meanwhile."""
    deadline = time.monotonic() + timeout
    while (code := proc.poll()) is None:
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        await asyncio.sleep(0.02)
    return code


async def until(check: Callable[[], Awaitable[object]], timeout: float, what: str) -> object:
    """`check()`'s first truthy value, polled every 0.1 s for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)
