"""Shared fixtures: real node processes on free ports, and the host's interface address."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import aiohttp
import pytest


def missing(reason: str):
    """A tool or privilege a test needs is not there: a failure under CI (the set-up,
    scripts/install-system.sh, must have provided it), a skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (scripts/install-system.sh installs it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(name="missing", scope="session")
def missing_fixture():
    """The `missing(reason)` function, for tests and fixtures outside this file."""
    return missing


@pytest.fixture
def netns(missing):
    """Factory of network namespaces (`netns(tag)` -> netns_helpers.Netns, created), each
    removed at teardown with the processes in it, also when the test failed."""
    import netns_helpers as nh

    reason = nh.unavailable()
    if reason:
        missing(f"network namespaces unavailable: {reason}")
    made: list = []

    def make(tag: str = "t"):
        ns = nh.Netns(tag)
        made.append(ns)
        return ns.create()

    yield make
    for ns in made:
        ns.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class NodeProcess:
    """A real `unbroken node` process; `url` is its base HTTP URL."""

    port: int
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: str = ""
    host: str = "127.0.0.1"  # address to listen on; 0.0.0.0 = all (url then uses 127.0.0.1)

    @property
    def address(self) -> str:
        return "127.0.0.1" if self.host == "0.0.0.0" else self.host

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start(self, timeout: float = 15.0) -> "NodeProcess":
        cmd = [sys.executable, "-m", "unbroken", "node", "--host", self.host,
               "--port", str(self.port), *self.args]
        if not self.log_path:  # one file per NodeProcess: a restart appends to it
            fd, self.log_path = tempfile.mkstemp(prefix=f"unbroken-node-{self.port}-",
                                                 suffix=".log")
            os.close(fd)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited: {self.log()}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"node did not start: {self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def start_node():
    """Factory: start_node(*extra_args, port=None, host="127.0.0.1") -> NodeProcess
    (killed at teardown)."""
    nodes: list[NodeProcess] = []

    def _start(*args: str, port: int | None = None, host: str = "127.0.0.1") -> NodeProcess:
        node = NodeProcess(port=port or free_port(), args=list(args), host=host).start()
        nodes.append(node)
        return node

    yield _start
    for node in nodes:
        node.kill()


@pytest.fixture(scope="module")
def shared_node():
    """One node process for a whole test module."""
    node = NodeProcess(port=free_port()).start()
    yield node
    node.kill()


@pytest.fixture
def node(start_node) -> NodeProcess:
    return start_node()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session
