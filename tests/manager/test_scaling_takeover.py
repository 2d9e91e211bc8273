"""A new scaling leader manages the nodes its dead predecessor's local provider started,
with real processes: two managers on one Redis; the leader starts the nodes (they
register at the other manager: the address every manager answers on, in production a
load balancer) and is SIGKILLed; its nodes keep serving (orphans by design), the other
manager leads, adopts them from the store's records, drains one on scale-in (its config
wants fewer edges) through the node's API, and kills and replaces a stuck one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import aiohttp
import pytest
from drain_cluster import HttpManager, until

from cluster_helpers import free_port, write_scaling_config
from unbroken.manager.providers.local import process_is_node

pytestmark = pytest.mark.timeout(120)


def write_config(path, ports: str, manager_url: str, edge: dict) -> str:
    return write_scaling_config(path, ports, edge, leader_lease=2.0, scaling_interval=0.5,
                                local_manager_url=manager_url, node_drain_timeout=5,
                                fault_stall=2.0)


async def scaling(http, manager) -> dict:
    async with http.get(f"{manager.url}/api/v1/scaling") as resp:
        return await resp.json()


async def nodes(http, manager) -> dict[str, str]:
    async with http.get(f"{manager.url}/api/v1/nodes") as resp:
        return {n["node_id"]: n["state"] for n in (await resp.json())["nodes"]}


def pids(status: dict) -> dict[str, int]:
    return {n["node_id"]: int(n["detail"].split()[1]) for n in status.get("provided", [])
            if n["detail"].startswith("pid ")}


def entry(status: dict, kind: str, node: str | None = None) -> dict | None:
    return next((e for e in status["entries"] if e["kind"] == kind
                 and (node is None or e.get("node") == node or node in e.get("nodes", []))), None)


async def test_a_new_leader_drains_and_replaces_the_nodes_its_dead_predecessor_started(redis_server, tmp_path):
    base = 26000 + (os.getpid() % 200) * 20
    ports = f"{base}-{base + 19}"
    second_port = free_port()
    survivor_url = f"http://127.0.0.1:{second_port}"
    redis = ["--redis", redis_server.url, "--redis-prefix", f"takeover-{second_port}"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # the first leader wants two edges; the second manager's config (as after a rolling
    # config change) wants one when there are no viewers
    first = HttpManager(args=[*redis, "--config", write_config(
        tmp_path / "a" / "m.toml", ports, survivor_url, {"min": 2, "max": 2, "cooldown_in": 600})])
    second = HttpManager(port=second_port, args=[*redis, "--config", write_config(
        tmp_path / "b" / "m.toml", ports, survivor_url,
        {"min": 1, "max": 2, "scale_out_viewers": 1, "scale_in_viewers": 0.5, "cooldown_in": 1})])
    seen: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:
        try:
            first.start()
            await until(lambda: _leads(http, first), 10, "the first manager leading")
            second.start()
            await until(lambda: _serving(http, second, 3), 30, "an origin and two edges serving")
            status = await scaling(http, first)
            old = pids(status)
            seen.update(old)
            assert len(old) == 3 and all(d["detail"] == f"pid {old[d['node_id']]}" for d in status["provided"])
            old_edges = sorted(n for n in old if "-edge-" in n)

            first.kill()  # SIGKILL: no release of the lease, no goodbye
            killed_at = time.monotonic()
            await until(lambda: _leads(http, second), 6, "the second manager leading")
            print(f"second manager leads {time.monotonic() - killed_at:.2f} s after the kill")
            # the dead leader's nodes keep serving (their own session; they heartbeat to
            # the survivor), and the new leader lists them as adopted
            assert all(process_is_node(pid, node) for node, pid in old.items())
            adopted = await until(lambda: _provided(http, second), 5, "the new leader's provider list")
            assert {n["node_id"] for n in adopted} == set(old)
            assert all(n["detail"].endswith("(adopted)") for n in adopted), adopted
            assert set((await nodes(http, second)).values()) == {"serving"}

            # scale-in: the new leader drains one of the old edges through its API
            scale_in = await until(lambda: _entry(http, second, "scale_in"), 15, "a scale-in")
            (victim,) = scale_in["nodes"]
            assert victim in old_edges, scale_in
            gone = await until(lambda: _entry(http, second, "node_gone", victim), 10, "the victim gone")
            print(f"scale-in of adopted {victim}: {scale_in['reason']}; {gone['text']}")
            assert gone["how"] == "drained" and gone["seconds"] < 5
            assert not process_is_node(old[victim], victim)
            with open(tmp_path / "a" / "nodes" / f"{victim}.log") as f:
                assert '"drain requested"' in f.read()  # the node's API, not a signal

            # a stuck old node (SIGSTOP): the new leader finds the fault, starts a
            # replacement and kills the old process it did not start
            (stuck,) = [e for e in old_edges if e != victim]
            os.kill(old[stuck], signal.SIGSTOP)
            replaced = await until(lambda: _entry(http, second, "scale_replace", stuck), 15, "a replacement")
            seen.update(pids(await scaling(http, second)))
            gone = await until(lambda: _entry(http, second, "node_gone", stuck), 10, "the stuck node gone")
            print(f"replacement of adopted {stuck}: {replaced['text']}; {gone['text']}")
            assert gone["how"] == "killed"
            assert not process_is_node(old[stuck], stuck)
            new = replaced["replacement"]
            await until(lambda: _state_is(http, second, new, "serving"), 20, "the replacement serving")
            seen.update(pids(await scaling(http, second)))
            assert (await nodes(http, second))[new] == "serving"
            # the old origin stays, adopted and serving
            origin = next(n for n in old if "-origin-" in n)
            assert (await nodes(http, second))[origin] == "serving"
        finally:
            with contextlib.suppress(Exception):
                seen.update(pids(await scaling(http, second)))
            first.kill()
            second.kill()
            for pid in seen.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def _leads(http, manager) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        return bool((await scaling(http, manager))["leading"])
    return False


async def _serving(http, manager, count: int) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        return sum(1 for s in (await nodes(http, manager)).values() if s == "serving") >= count
    return False


async def _entry(http, manager, kind: str, node: str | None = None):
    return entry(await scaling(http, manager), kind, node)


async def _state_is(http, manager, node: str, state: str) -> bool:
    return (await nodes(http, manager)).get(node) == state


async def _provided(http, manager):
    return (await scaling(http, manager))["provided"]


async def test_a_restarted_manager_without_redis_adopts_its_nodes_from_the_state_file(tmp_path):
    """One manager, the in-process store: its nodes outlive its SIGKILL and re-register
    when it is back; with `local_state_file` the restarted manager adopts them (no new
    nodes for the same groups) and can stop them."""
    base = 27000 + (os.getpid() % 200) * 20
    path = tmp_path / "m.toml"
    manager = HttpManager()
    write_config(path, f"{base}-{base + 19}", manager.url,
                 {"min": 1, "max": 2, "scale_out_viewers": 1, "scale_in_viewers": 0.5, "cooldown_in": 600})
    text = path.read_text().replace('node_drain_timeout = 5\n',
                                    f'node_drain_timeout = 5\nlocal_state_file = "{tmp_path}/local-nodes.json"\n')
    path.write_text(text)
    manager.args = ["--config", str(path)]
    seen: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:
        try:
            manager.start()
            await until(lambda: _serving(http, manager, 2), 30, "an origin and an edge serving")
            old = pids(await until(lambda: _provided_all(http, manager, 2), 5, "the provider's list"))
            seen.update(old)
            manager.proc.kill()
            manager.proc.wait(5)
            assert all(process_is_node(pid, node) for node, pid in old.items())  # still serving
            manager.restart()
            await until(lambda: _serving(http, manager, 2), 10, "the nodes registered again")
            status = await until(lambda: _provided_all(http, manager, 2), 5, "the provider's list")
            assert pids(status) == old
            assert all(n["detail"].endswith("(adopted)") for n in status["provided"]), status["provided"]
            await asyncio.sleep(1.5)  # a few evaluations: nothing new started
            status = await scaling(http, manager)
            assert pids(status) == old and not entry(status, "scale_out"), status["entries"]
        finally:
            with contextlib.suppress(Exception):
                seen.update(pids(await scaling(http, manager)))
            manager.kill()
            for pid in seen.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def _provided_all(http, manager, count: int):
    status = await scaling(http, manager)
    return status if len(status.get("provided", [])) >= count else None
