"""Shared parts of the benchmarks: child processes, CPU accounting, results output.

Every benchmark runs the server, the publisher and the viewers in separate
processes so the harness is not what gets measured. Agents (``bench/_agents.py``)
speak a line protocol: the harness writes a command (``snap`` or ``stop``) to an
agent's stdin, the agent answers with one JSON object per line on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

import aiohttp

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
LOGS = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/unbroken-bench"))
CLK_TCK = os.sysconf("SC_CLK_TCK")

if str(REPO) not in sys.path:  # benchmark this work tree's unbroken, installed or not
    sys.path.insert(1, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return utime / CLK_TCK, stime / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process."""
    return sum(cpu_times(pid))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Server:
    """A WHIP/WHEP server in its own process: the unbroken node or the MediaRelay baseline."""

    def __init__(self, name: str, argv: list[str], port: int) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = LOGS / f"{name}-{port}.log"
        self.env: dict[str, str] = {}

    @classmethod
    def node(cls, name: str = "node", env: dict[str, str] | None = None) -> "Server":
        """The node, with a media timeout of 5 s instead of 0.8 s: after its event loop
        stalls that long (this box is shared and has 2 cores), the node drops publishers
        whose packets are still waiting in its socket, which would end the run. `env`:
        more environment for it (UNBROKEN_NATIVE=0: the Python forwarding path)."""
        port = free_port()
        server = cls(name, [sys.executable, "-m", "unbroken", "node", "--host", "127.0.0.1",
                            "--port", str(port), "--media-timeout", "5", "--log-level",
                            os.environ.get("BENCH_NODE_LOG_LEVEL", "warning")], port)
        server.env = env or {}
        return server

    @classmethod
    def baseline(cls) -> "Server":
        port = free_port()
        return cls("relay_baseline", [sys.executable, str(BENCH / "relay_baseline.py"),
                                      "--host", "127.0.0.1", "--port", str(port)], port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> tuple[float, float]:
        """(user, system) CPU seconds."""
        return cpu_times(self.pid)

    async def start(self, timeout: float = 15.0) -> "Server":
        LOGS.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=REPO, env={**_env(), **self.env}, stdin=asyncio.subprocess.DEVNULL,
            stdout=log, stderr=asyncio.subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}), "
                                       f"see {self.log_path}")
                try:
                    async with http.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not up after {timeout} s")
                await asyncio.sleep(0.1)

    async def forwarded_packets(self, http: aiohttp.ClientSession) -> tuple[int, int]:
        """(packets, payload bytes) sent so far to all play sessions, from the sessions API."""
        async with http.get(f"{self.url}/api/v1/sessions") as resp:
            resp.raise_for_status()
            sessions = (await resp.json())["sessions"]
        packets = octets = 0
        for session in sessions:
            for track in session.get("tracks", {}).values():
                packets += track["packets"]
                octets += track["bytes"]
        return packets, octets

    async def stop(self) -> None:
        await _terminate(self.proc)


class Agent:
    """A publisher or a group of viewers in a child process (``bench/_agents.py``)."""

    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = LOGS / f"{name}.log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    async def start(self, timeout: float = 30.0) -> dict:
        """Start the agent; returns its ``ready`` message (raises on ``error`` or timeout)."""
        LOGS.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(BENCH / "_agents.py"), *self.args, cwd=REPO, env=_env(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            limit=1 << 20)
        log.close()
        return await self._expect("ready", timeout)

    async def snap(self, timeout: float = 10.0) -> dict:
        self.proc.stdin.write(b"snap\n")
        await self.proc.stdin.drain()
        return await self._expect("snap", timeout)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self.proc.stdin.write(b"stop\n")
            await self.proc.stdin.drain()
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except (TimeoutError, ConnectionError):
            await _terminate(self.proc)

    async def _expect(self, event: str, timeout: float) -> dict:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise RuntimeError(f"agent {self.name} exited, see {self.log_path}")
                    message = json.loads(line)
                    if message.get("event") == "error":
                        raise RuntimeError(f"agent {self.name}: {message.get('error')}")
                    if message.get("event") == event:
                        return message
        except TimeoutError:
            raise TimeoutError(f"agent {self.name}: no {event!r} after {timeout} s "
                               f"(see {self.log_path})") from None


async def _terminate(proc: asyncio.subprocess.Process | None) -> None:
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 8.0)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def percentile(values: list[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def table(columns: list[tuple[str, str]], rows: list[dict]) -> str:
    """A plain-text table; ``columns`` are (key, header) pairs, None shows as '-'."""
    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.2f}"
        return str(value)

    cells = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, (_, h) in enumerate(columns)]
    lines = ["  ".join(h.rjust(w) for (_, h), w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat: the busy share between
    two readings shows whether other work on the box competed with the benchmark."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_pct(start: tuple[int, int], end: tuple[int, int]) -> float | None:
    total = end[1] - start[1]
    return round(100 * (end[0] - start[0]) / total, 1) if total else None


def machine() -> dict:
    """What the figures were measured on."""
    import aiortc

    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0],
            "aiortc": aiortc.__version__, "loadavg_at_start": [float(x) for x in load]}


def write_results(name: str, results: dict, quick: bool) -> Path:
    """Write the JSON to ``bench/results/<name>.json`` (``<name>.quick.json`` for --quick)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
