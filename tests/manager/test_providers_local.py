"""The local provider with stand-in node processes (a few lines of Python that take the
drain request of unbroken.protocol.node_admin): its records in the cluster store, and
another manager's provider (a later scaling leader) adopting, draining and killing the
nodes it did not start; the state file for a restarted manager without Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from unbroken.manager.model import NodeRole
from unbroken.manager.providers import LocalProvider, LocalSettings, ProviderError, ProviderState
from unbroken.manager.providers import local as local_module
from unbroken.manager.providers.local import TABLE, LocalRecord, process_is_node
from unbroken.manager.store import LocalStore

pytestmark = pytest.mark.timeout(30)

TOKEN = "node-secret"

# what the provider's node must do here: listen on --port, take POST /api/v1/drain with
# the node token (202, then exit), and die on SIGTERM; --stubborn ignores both
FAKE_NODE = r"""
import http.server, json, os, signal, sys, threading
argv = sys.argv
port, token = int(argv[argv.index("--port") + 1]), argv[argv.index("--node-token") + 1]
stubborn = "--stubborn" in argv
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/api/v1/drain" or self.headers.get("Authorization") != "Bearer " + token:
            self.send_response(401); self.end_headers(); return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        print("drain", body, flush=True)
        self.send_response(202); self.end_headers(); self.wfile.write(b"{}")
        if not stubborn:
            threading.Timer(min(body.get("timeout_s", 5), 0.2), lambda: os._exit(0)).start()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


class FakeNodeProvider(LocalProvider):
    """The local provider, starting the stand-in instead of `unbroken node`."""

    def _command(self, node_id, group, role, port):
        return [sys.executable, "-c", FAKE_NODE, "--node-id", node_id, "--port", str(port),
                "--node-token", self.settings.node_token, *self.settings.extra_args]


def _ports() -> range:
    base = 30000 + (os.getpid() % 300) * 40
    return range(base, base + 40)


def provider(store, tmp_path, *extra: str, state_file: str = "") -> FakeNodeProvider:
    settings = LocalSettings(manager_url="http://127.0.0.1:1", node_token=TOKEN, ports=_ports(),
                             extra_args=extra, log_dir=str(tmp_path / "logs"), state_file=state_file)
    return FakeNodeProvider(settings, store)


@pytest.fixture
async def store():
    store = LocalStore()
    yield store
    await store.close()


@pytest.fixture
def reap():
    """Kill whatever a test left running (by pid)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def listening(url: str, timeout: float = 10.0) -> None:
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} not listening")


async def gone(check, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def log_of(tmp_path, node_id: str) -> str:
    with open(tmp_path / "logs" / f"{node_id}.log") as f:
        return f.read()


async def test_started_nodes_are_recorded_and_another_leader_drains_them(store, tmp_path, reap):
    first, second = provider(store, tmp_path), provider(store, tmp_path)
    node = await first.start_node("default", NodeRole.EDGE)
    reap.append(first.pid(node.node_id))
    await listening(node.url)
    record = LocalRecord.from_json((await store.entries(TABLE))[node.node_id])
    assert (record.group, record.role, record.url, record.pid) == ("default", "edge", node.url,
                                                                   first.pid(node.node_id))
    assert [n.detail for n in await first.list_nodes()] == [f"pid {record.pid}"]
    # the first manager is gone (its provider closed, its process may be dead): the
    # second lists the node as adopted and drains it through the node's API
    await first.close()
    (adopted,) = await second.list_nodes()
    assert adopted.node_id == node.node_id and adopted.state is ProviderState.RUNNING
    assert adopted.detail == f"pid {record.pid} (adopted)"
    await second.stop_node(node.node_id, 5.0)
    assert (await second.list_nodes())[0].state is ProviderState.STOPPING
    took = await gone(lambda: _empty(second), 5)
    assert took < 2  # it exits on the request, well before the deadline
    assert "drain {'timeout_s': 5.0}" in log_of(tmp_path, node.node_id)
    assert await store.entries(TABLE) == {}
    await second.close()


async def _empty(p: LocalProvider) -> bool:
    return await p.list_nodes() == []


async def test_a_node_that_ignores_the_drain_is_killed_at_the_deadline(store, tmp_path, reap, monkeypatch):
    monkeypatch.setattr(local_module, "KILL_MARGIN_S", 0.3)
    first, second = provider(store, tmp_path, "--stubborn"), provider(store, tmp_path)
    node = await first.start_node("default", NodeRole.EDGE)
    reap.append(first.pid(node.node_id))
    await listening(node.url)
    await first.close()
    await second.stop_node(node.node_id, 0.5)
    took = await gone(lambda: _empty(second), 5)
    assert 0.6 < took < 3, took
    assert not process_is_node(reap[0], node.node_id)
    await second.close()


async def test_stop_at_once_kills_an_adopted_node(store, tmp_path, reap):
    first, second = provider(store, tmp_path, "--stubborn"), provider(store, tmp_path)
    node = await first.start_node("default", NodeRole.ORIGIN)
    reap.append(first.pid(node.node_id))
    await listening(node.url)
    os.kill(reap[0], signal.SIGSTOP)  # a stuck node: it answers nothing
    await first.close()
    await second.stop_node(node.node_id, 0)
    assert await gone(lambda: _empty(second), 3) < 1.5
    await second.close()


async def test_an_adopted_node_the_store_lost_is_recorded_again(store, tmp_path, reap):
    """A Redis restart empties the store: the leader that adopted a node (another manager
    started it) records it again from what it knew, so that any later leader can still
    stop it (a SIGSTOPped one too: in a chaos run such nodes were left behind)."""
    first, second = provider(store, tmp_path, "--stubborn"), provider(store, tmp_path)
    node = await first.start_node("default", NodeRole.EDGE)
    reap.append(first.pid(node.node_id))
    await listening(node.url)
    await first.close()
    assert [n.node_id for n in await second.list_nodes()] == [node.node_id]  # adopted
    for node_id in list(await store.entries(TABLE)):  # the store restarts, empty
        await store.delete_entry(TABLE, node_id)
    (again,) = await second.list_nodes()
    assert again.node_id == node.node_id and again.detail.endswith("(adopted)")
    assert node.node_id in await store.entries(TABLE)
    os.kill(reap[0], signal.SIGSTOP)  # stuck: it answers nothing
    third = provider(store, tmp_path)  # a later leader, which never saw the node before
    await third.stop_node(node.node_id, 0)
    assert await gone(lambda: _empty(third), 3) < 1.5
    await second.close()
    await third.close()


async def test_a_manager_not_leading_records_its_nodes_again_after_the_store_lost_them(
        store, tmp_path, reap, monkeypatch):
    """The store restarts empty while the manager that started a node no longer leads,
    and that manager dies soon after: it has written the node's record again by then (it
    reaps and watches its children leading or not), so the next leader adopts the node."""
    monkeypatch.setattr(local_module, "WATCH_S", 0.1)
    first = provider(store, tmp_path)
    await first.start()  # (a manager starts its provider, leading or not)
    node = await first.start_node("default", NodeRole.EDGE)
    reap.append(first.pid(node.node_id))
    await listening(node.url)
    await store.delete_entry(TABLE, node.node_id)  # the store restarts, empty
    await gone(lambda: _recorded(store, node.node_id), 3)
    await first.close()  # that manager dies
    later = provider(store, tmp_path)
    (adopted,) = await later.list_nodes()
    assert adopted.node_id == node.node_id and adopted.detail.endswith("(adopted)")
    await later.close()


async def _recorded(store, node_id: str) -> bool:
    return node_id in await store.entries(TABLE)


async def test_a_later_leader_enforces_the_deadline_of_a_stop_its_predecessor_began(store, tmp_path, reap,
                                                                                     monkeypatch):
    monkeypatch.setattr(local_module, "KILL_MARGIN_S", 0.3)
    first, second = provider(store, tmp_path, "--stubborn"), provider(store, tmp_path)
    node = await first.start_node("default", NodeRole.EDGE)
    reap.append(first.pid(node.node_id))
    await listening(node.url)
    await first.stop_node(node.node_id, 0.3)
    await first.close()  # the leader died mid-drain: nobody reaps for it
    assert (await second.list_nodes())[0].state is ProviderState.STOPPING
    await asyncio.sleep(0.8)
    await second.list_nodes()  # past the deadline: killed
    assert await gone(lambda: _empty(second), 3) < 2
    await second.close()


async def test_a_pid_that_is_not_the_node_is_never_signalled(store, tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record = LocalRecord("default-edge-1-1", "default", "edge", "http://127.0.0.1:1", 1, other.pid,
                             local_module.machine_id(), time.time())
        await store.put_entry(TABLE, record.node_id, record.to_json())
        p = provider(store, tmp_path)
        assert not process_is_node(other.pid, record.node_id)
        assert await p.list_nodes() == []  # a dead node's record (its pid reused) goes
        assert await store.entries(TABLE) == {}
        assert other.poll() is None
        await p.close()
    finally:
        other.kill()
        other.wait()


async def test_a_zombie_is_not_a_running_node(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass", "--node-id", "z"])
    await asyncio.sleep(0.5)  # exited, not yet reaped: a zombie
    try:
        assert not process_is_node(child.pid, "z")
    finally:
        child.wait()


async def test_a_node_on_another_machine_is_asked_to_drain_and_forgotten_after_its_deadline(
        store, tmp_path, monkeypatch):
    monkeypatch.setattr(local_module, "KILL_MARGIN_S", 0.2)
    drained: list[tuple[str, float]] = []

    class Drainer:
        async def drain(self, url, timeout_s):
            drained.append((url, timeout_s))
            return True

        async def close(self):
            pass

    record = LocalRecord("default-edge-9-1", "default", "edge", "http://10.0.0.9:9100", 9100, 4242,
                         "elsewhere/boot", time.time())
    await store.put_entry(TABLE, record.node_id, record.to_json())
    p = provider(store, tmp_path)
    p.drainer = Drainer()
    (node,) = await p.list_nodes()
    assert node.detail == "pid 4242 on elsewhere (adopted)" and node.state is ProviderState.RUNNING
    await p.stop_node(node.node_id, 0.2)
    assert drained == [("http://10.0.0.9:9100", 0.2)]
    assert (await p.list_nodes())[0].state is ProviderState.STOPPING
    await asyncio.sleep(0.5)
    assert await p.list_nodes() == []
    with pytest.raises(ProviderError):
        await p.stop_node(node.node_id, 1)
    await p.close()


async def test_the_state_file_lets_a_restarted_manager_adopt_its_nodes(tmp_path, reap):
    state_file = str(tmp_path / "state" / "local-nodes.json")
    before = LocalStore()
    first = provider(before, tmp_path, state_file=state_file)
    await first.start()
    node = await first.start_node("default", NodeRole.EDGE)
    reap.append(first.pid(node.node_id))
    await listening(node.url)
    with open(state_file) as f:
        assert [n["node_id"] for n in json.load(f)["nodes"]] == [node.node_id]
    await first.close()
    await before.close()
    # the manager restarts: a new in-process store, the same state file
    after = LocalStore()
    second = provider(after, tmp_path, state_file=state_file)
    await second.start()
    (adopted,) = await second.list_nodes()
    assert adopted.node_id == node.node_id and "(adopted)" in adopted.detail
    await second.stop_node(node.node_id, 2.0)
    await gone(lambda: _empty(second), 5)
    with open(state_file) as f:
        assert json.load(f)["nodes"] == []
    await second.close()
    await after.close()


async def test_own_children_are_reaped_while_not_leading(store, tmp_path, reap, monkeypatch):
    monkeypatch.setattr(local_module, "WATCH_S", 0.1)
    p = provider(store, tmp_path)
    await p.start()
    node = await p.start_node("default", NodeRole.EDGE)
    pid = p.pid(node.node_id)
    reap.append(pid)
    await listening(node.url)
    os.kill(pid, signal.SIGKILL)
    await gone(lambda: _record_gone(store, node.node_id), 3)
    assert not os.path.exists(f"/proc/{pid}")  # reaped: no zombie left
    await p.close()


async def _record_gone(store, node_id: str) -> bool:
    return node_id not in await store.entries(TABLE)
