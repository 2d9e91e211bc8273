"""Manager test fixtures: a real redis-server of the tests' own on a free port, and the
cluster stores (in-process and Redis) behind one parametrized fixture."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field

import pytest

from unbroken.manager.store import LocalStore, RedisStore

REDIS_START_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """A redis-server process of the tests' own (no persistence: a restart loses the
    data, as the Redis-restart tests want). `kill()` then `start()` restarts it on the
    same port."""

    port: int
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture(scope="module")
def redis_server(missing):
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed")
    server = RedisServer(_free_port())
    server.start()
    yield server
    server.kill()


@pytest.fixture(params=["local", "redis"])
def store_kind(request) -> str:
    return request.param


@pytest.fixture
async def stores(store_kind, request):
    """Two handles on one cluster state, as two managers would have: for Redis two
    RedisStore clients on one server (a prefix of the test's own), for the in-process
    store the same LocalStore twice (it serves a single manager)."""
    if store_kind == "local":
        store = LocalStore()
        yield store, store
        await store.close()
        return
    server = request.getfixturevalue("redis_server")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    first, second = RedisStore(server.url, prefix=prefix), RedisStore(server.url, prefix=prefix)
    yield first, second
    await first.close()
    await second.close()


@pytest.fixture
def store(stores):
    return stores[0]


@pytest.fixture
def start_manager():
    """Factory: start_manager(*extra_args) -> ManagerProcess (killed at teardown)."""
    from cluster_helpers import ManagerProcess, free_port

    managers = []

    def _start(*args: str, port: int | None = None):
        manager = ManagerProcess(port or free_port(), list(args)).start()
        managers.append(manager)
        return manager

    yield _start
    for manager in managers:
        manager.kill()
