"""The local provider: `unbroken node` processes on this machine, ports from a range.

The embedded default and what `unbroken up --cluster` uses. Each node registers with
the manager by itself (`--manager`, the node token, the manager's certificate pinned by
fingerprint or CA file). Stopping with a drain is SIGTERM (the node drains for
`drain_s` and exits), then SIGKILL if it is still there; stopping at once is SIGKILL.

Nodes outlive the manager that started them. A provider adopts the node processes of
this host that another local provider started with the same node token, host and port
range (a previous leader's, or a killed manager's: found in /proc by their command
line), so whichever manager leads can replace, stop and scale in every local node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

from ..model import NodeRole
from .base import NodeProvider, ProvidedNode, ProviderError, ProviderState

__all__ = ["LocalProvider", "LocalSettings", "parse_port_range"]

log = logging.getLogger("unbroken.manager.providers.local")

KILL_MARGIN_S = 2.0  # after the drain deadline, before SIGKILL
REAP_POLL_S = 0.05
ADOPT_SCAN_S = 2.0  # how often list_nodes looks for node processes to adopt


def parse_port_range(text: str) -> range:
    """`9100-9199` as a range (both ends included)."""
    low, sep, high = text.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise ValueError(f"port range {text!r} is not LOW-HIGH") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"port range {text!r} is out of bounds")
    return range(first, last + 1)


@dataclass
class LocalSettings:
    """How local nodes are started: the manager URL they register with, its node token and
    certificate pin, where they listen, their ports, drain timeout, extra arguments and
    where their logs go ("" = discarded)."""

    manager_url: str
    node_token: str
    manager_fingerprint: str = ""
    manager_ca: str = ""
    host: str = "127.0.0.1"
    ports: range = field(default_factory=lambda: range(9100, 9200))
    drain_timeout: float = 5.0
    extra_args: tuple[str, ...] = ()
    log_dir: str = ""


class _Adopted:
    """A node process this provider did not start (not its child): the part of Popen's
    interface the provider uses, through its pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int | None:
        """None while it runs; 0 once it is gone (or a zombie its parent will reap)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                stat = f.read()
        except OSError:
            return 0
        return 0 if stat[stat.rindex(")") + 2] in "ZX" else None

    def send_signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)


@dataclass
class _Child:
    node: ProvidedNode
    process: subprocess.Popen | _Adopted
    port: int


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class LocalProvider(NodeProvider):
    """Owns the node processes it started (by node id) and their ports."""

    name = "local"

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self._children: dict[str, _Child] = {}
        self._stops: set[asyncio.Task[None]] = set()
        self._started = 0
        self._scanned_at: float | None = None

    def _free_port(self) -> int:
        used = {c.port for c in self._children.values()}
        for port in self.settings.ports:
            if port not in used and _port_free(self.settings.host, port):
                return port
        raise ProviderError(f"no free port in {self.settings.ports.start}-{self.settings.ports.stop - 1}")

    def _command(self, node_id: str, group: str, role: NodeRole, port: int) -> list[str]:
        s = self.settings
        command = [sys.executable, "-m", "unbroken", "node", "--host", s.host, "--port", str(port),
                   "--role", role.value, "--group", group, "--node-id", node_id,
                   "--manager", s.manager_url, "--node-token", s.node_token,
                   "--drain-timeout", str(s.drain_timeout)]
        if s.manager_fingerprint:
            command += ["--manager-fingerprint", s.manager_fingerprint]
        if s.manager_ca:
            command += ["--manager-ca", s.manager_ca]
        return command + list(s.extra_args)

    async def start_node(self, group: str, role: NodeRole) -> ProvidedNode:
        port = self._free_port()
        self._started += 1
        node_id = f"{group}-{role.value}-{port}-{self._started}"
        output = subprocess.DEVNULL
        if self.settings.log_dir:
            os.makedirs(self.settings.log_dir, exist_ok=True)
            output = open(os.path.join(self.settings.log_dir, f"{node_id}.log"), "ab")  # noqa: SIM115
        try:
            process = subprocess.Popen(self._command(node_id, group, role, port), stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            raise ProviderError(f"could not start a node: {e}") from e
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        url = f"http://{self.settings.host}:{port}"
        node = ProvidedNode(node_id, group, role, url, ProviderState.STARTING, f"pid {process.pid}")
        self._children[node_id] = _Child(node, process, port)
        log.info("started node %s (%s) pid %d", node_id, url, process.pid)
        return node

    async def stop_node(self, node_id: str, drain_s: float) -> None:
        child = self._children.get(node_id)
        if child is None:
            raise ProviderError(f"no local node {node_id}")
        child.node = replace(child.node, state=ProviderState.STOPPING)
        if drain_s <= 0:
            self._signal(child, signal.SIGKILL)
        else:
            self._signal(child, signal.SIGTERM)
        task = asyncio.create_task(self._reap(child, drain_s + KILL_MARGIN_S if drain_s > 0 else 1.0))
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    @staticmethod
    def _signal(child: _Child, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(sig)
            if sig is signal.SIGTERM:
                child.process.send_signal(signal.SIGCONT)  # a stopped process must see it

    async def _reap(self, child: _Child, deadline_s: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline_s
        while child.process.poll() is None and loop.time() < until:
            await asyncio.sleep(REAP_POLL_S)
        if child.process.poll() is None:
            log.warning("node %s did not exit within %.1f s: SIGKILL", child.node.node_id, deadline_s)
            self._signal(child, signal.SIGKILL)
            for _ in range(100):
                if child.process.poll() is not None:
                    break
                await asyncio.sleep(REAP_POLL_S)

    def pid(self, node_id: str) -> int | None:
        """The node's process id (tests and the chaos benchmark signal it)."""
        child = self._children.get(node_id)
        return None if child is None else child.process.pid

    def _adopt(self) -> None:
        """Adopt the node processes another local provider started with our node token,
        host and ports (a previous leader's: nodes outlive their manager)."""
        if not os.path.isdir("/proc"):
            return
        known = {c.process.pid for c in self._children.values()}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in known:
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
            except OSError:
                continue
            node = self._adoptable(argv, int(entry))
            if node is not None and node.node_id not in self._children:
                child = _Child(node, _Adopted(int(entry)), int(node.url.rsplit(":", 1)[1]))
                if child.process.poll() is None:
                    self._children[node.node_id] = child
                    log.info("adopted node %s (%s) pid %s", node.node_id, node.url, entry)

    def _adoptable(self, argv: list[str], pid: int) -> ProvidedNode | None:
        """The node `argv` runs, if this provider could have started it."""
        if argv[1:4] != ["-m", "unbroken", "node"]:
            return None
        options = {argv[i]: argv[i + 1] for i in range(4, len(argv) - 1) if argv[i].startswith("--")}
        s = self.settings
        try:
            port, role = int(options["--port"]), NodeRole(options["--role"])
            node_id, group = options["--node-id"], options["--group"]
        except (KeyError, ValueError):
            return None
        if options.get("--node-token") != s.node_token or options.get("--host") != s.host or port not in s.ports:
            return None
        return ProvidedNode(node_id, group, role, f"http://{s.host}:{port}", ProviderState.RUNNING,
                            f"pid {pid} (adopted)")

    async def list_nodes(self) -> list[ProvidedNode]:
        now = time.monotonic()
        if self._scanned_at is None or now - self._scanned_at >= ADOPT_SCAN_S:
            self._scanned_at = now
            self._adopt()
        out = []
        for node_id, child in list(self._children.items()):
            if child.process.poll() is not None:
                del self._children[node_id]
                continue
            if child.node.state is ProviderState.STARTING:
                child.node = replace(child.node, state=ProviderState.RUNNING)
            out.append(child.node)
        return out

    async def close(self) -> None:
        """Stop reaping (the nodes keep running: `terminate_all` ends them)."""
        for task in list(self._stops):
            task.cancel()

    async def terminate_all(self, drain_s: float = 1.0) -> None:
        """End every node this provider started (SIGTERM, then SIGKILL after `drain_s`)."""
        for child in self._children.values():
            self._signal(child, signal.SIGTERM)
        await asyncio.gather(*(self._reap(c, drain_s + KILL_MARGIN_S) for c in self._children.values()))
        self._children.clear()

