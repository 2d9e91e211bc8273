"""Real processes for the drain and manager-restart tests: a plain-HTTP `unbroken manager`
(the Python SDK then talks to it like to a node), and decoding viewers with a frame log
(`unbroken.client.framecode.FrameLog`) that tells, from the decoded frame counters of
every session a viewer had, which frames it never got (the source:
`unbroken.client.testsrc.clocked_source`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cluster_helpers import NODE_TOKEN, ManagerProcess, free_port
from unbroken.client.framecode import FrameLog  # noqa: F401 - the tests import it from here
from unbroken.client.testsrc import ClockedPatternTrack, clocked_source  # noqa: F401

START_TIMEOUT_S = 15.0


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
