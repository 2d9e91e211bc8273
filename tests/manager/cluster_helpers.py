"""Real processes for the cluster tests: `unbroken manager` (self-signed TLS, its printed
fingerprint read back) and nodes registered with it; HTTP sessions that pin it."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import aiohttp

from unbroken.manager.tls import client_context

NODE_TOKEN = "test-node-token"
START_TIMEOUT_S = 15.0
_FINGERPRINT = re.compile(r"fingerprint ([0-9A-F:]{95})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ManagerProcess:
    """A real `unbroken manager` process with a self-signed certificate, or the one in
    `tls` (["--tls-cert", FILE, "--tls-key", FILE]; set `fingerprint` yourself then)."""

    port: int
    args: list[str] = field(default_factory=list)
    tls: list[str] = field(default_factory=lambda: ["--tls-self-signed"])
    proc: subprocess.Popen | None = None
    fingerprint: str = ""
    log_path: str = ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> "ManagerProcess":
        self.log_path = f"/tmp/unbroken-manager-{self.port}.log"
        cmd = [sys.executable, "-m", "unbroken", "manager", "--host", "127.0.0.1", "--port", str(self.port),
               "--node-token", NODE_TOKEN, *self.tls, *self.args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"manager exited: {self.log()}")
            found = _FINGERPRINT.search(self.log())
            if (found or self.fingerprint) and "listening on" in self.log():
                self.fingerprint = found.group(1) if found else self.fingerprint
                return self
            time.sleep(0.05)
        raise RuntimeError(f"manager did not start: {self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return ""

    def node_args(self, role: str, *extra: str) -> list[str]:
        return ["--manager", self.url, "--role", role, "--node-token", NODE_TOKEN,
                "--manager-fingerprint", self.fingerprint, *extra]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def pinned_http(fingerprint: str, **kwargs) -> aiohttp.ClientSession:
    """An HTTP client that trusts exactly the manager's certificate."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(fingerprint=fingerprint)),
                                 **kwargs)


async def wait_nodes(http: aiohttp.ClientSession, url: str, count: int, timeout: float = 10.0,
                     state: str = "serving") -> list[dict]:
    """The manager's node list once `count` nodes are in `state`."""
    deadline = time.monotonic() + timeout
    nodes: list[dict] = []
    while time.monotonic() < deadline:
        async with http.get(f"{url}/api/v1/nodes") as resp:
            nodes = (await resp.json())["nodes"]
        if sum(1 for n in nodes if n["state"] == state) >= count:
            return nodes
        await _sleep(0.1)
    raise AssertionError(f"{count} {state} nodes not seen within {timeout} s: {nodes}")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def write_scaling_config(path, ports: str, edge: dict, **manager) -> str:
    """A manager's TOML for the scaling tests at `path`: the local provider on `ports`
    (node logs in `nodes/` beside it), one origin (min = max = 1, no CPU rule), the edge
    group's policy from `edge` (no CPU rule unless given); `manager`: more [manager] keys."""
    def table(keys: dict) -> str:  # a JSON string is a TOML string
        return "".join(f"{k} = {json.dumps(v) if isinstance(v, str) else v}\n"
                       for k, v in keys.items())

    settings = {"provider": "local", "local_ports": ports,
                "local_log_dir": f"{path.parent}/nodes", **manager}
    policy = {"scale_out_cpu": 0, "scale_in_cpu": 0, **edge}
    path.write_text("[manager]\n" + table(settings)
                    + "\n[manager.groups.default.origin]\nmin = 1\nmax = 1\n"
                    + "scale_out_cpu = 0\nscale_in_cpu = 0\n"
                    + "\n[manager.groups.default.edge]\n" + table(policy))
    return str(path)
