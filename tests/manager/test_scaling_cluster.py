"""Autoscaling with real processes: a manager whose local provider starts `unbroken
node` processes, keeps each group at its minimum, replaces a SIGKILLed and a SIGSTOPped
node, scales the edge group out on viewers; two managers on one Redis share one leader."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest

from cluster_helpers import free_port, pinned_http, wait_nodes, write_scaling_config

pytestmark = pytest.mark.timeout(90)


def write_config(tmp_path, ports: str, **edge) -> str:
    return write_scaling_config(
        tmp_path / "manager.toml", ports,
        {"min": 1, "max": 2, "cooldown_out": 2, "cooldown_in": 600, **edge},
        node_drain_timeout=3, fault_stall=2.0)


async def scaling(http, url) -> dict:
    async with http.get(f"{url}/api/v1/scaling") as resp:
        return await resp.json()


def pids(status: dict) -> dict[str, int]:
    return {n["node_id"]: int(n["detail"].split()[1]) for n in status.get("provided", [])
            if n["detail"].startswith("pid ")}


@contextlib.asynccontextmanager
async def local_cluster(start_manager, tmp_path, **edge):
    base = 20000 + (os.getpid() % 200) * 50
    manager = start_manager("--config", write_config(tmp_path, f"{base}-{base + 49}", **edge))
    seen: dict[str, int] = {}
    http = pinned_http(manager.fingerprint)
    try:
        yield manager, http, seen
    finally:
        with contextlib.suppress(Exception):
            seen.update(pids(await scaling(http, manager.url)))
        await http.close()
        manager.kill()
        for pid in seen.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


async def serving_ids(http, url, role: str) -> set[str]:
    async with http.get(f"{url}/api/v1/nodes") as resp:
        nodes = (await resp.json())["nodes"]
    return {n["node_id"] for n in nodes if n["role"] == role and n["state"] == "serving"}


async def test_groups_start_at_minimum_and_faulty_nodes_are_replaced(start_manager, tmp_path):
    async with local_cluster(start_manager, tmp_path) as (manager, http, seen):
        await wait_nodes(http, manager.url, 2, timeout=30)
        status = await scaling(http, manager.url)
        assert status["leading"] and status["provider"] == "local"
        seen.update(pids(status))
        (edge,) = await serving_ids(http, manager.url, "edge")
        await until(lambda: _leader_saw_serving(http, manager.url, edge), 10, "the leader to see it serve")

        # SIGKILL: the lease lapses or /healthz fails -> fault -> a replacement serves
        os.kill(seen[edge], signal.SIGKILL)
        killed_at = time.monotonic()
        replacement = await until(lambda: _new_edge(http, manager.url, {edge}), 20, "a replacement edge")
        assert time.monotonic() - killed_at < 20
        status = await scaling(http, manager.url)
        seen.update(pids(status))
        kinds = [e["kind"] for e in status["entries"]]
        assert "node_fault" in kinds and "scale_replace" in kinds, kinds
        assert edge not in await serving_ids(http, manager.url, "edge")

        # SIGSTOP: alive but stuck -> out of routing within 3 s, then replaced
        (stuck,) = replacement
        os.kill(seen[stuck], signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            await until(lambda: _not_serving(http, manager.url, stuck), 4, "the stopped node out of routing")
            out_s = time.monotonic() - stopped_at
            await until(lambda: _new_edge(http, manager.url, {edge, stuck}), 20, "a replacement for the stuck edge")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(seen[stuck], signal.SIGCONT)
        assert out_s <= 3.5, out_s
        status = await scaling(http, manager.url)
        faults = [e for e in status["entries"] if e["kind"] == "node_fault" and e["node"] == stuck]
        assert faults, status["entries"]


async def _leader_saw_serving(http, url, node_id: str) -> bool:
    entries = (await scaling(http, url))["entries"]
    return any(e["kind"] == "node_serving" and e.get("node") == node_id for e in entries)


async def _new_edge(http, url, old: set[str]):
    ids = await serving_ids(http, url, "edge") - old
    return ids or None


async def _not_serving(http, url, node_id: str) -> bool:
    return node_id not in await serving_ids(http, url, "edge")


async def test_viewers_scale_the_edge_group_out(start_manager, tmp_path):
    from unbroken.client import Publisher, Subscriber

    async with local_cluster(start_manager, tmp_path, scale_out_viewers=0.5) as (manager, http, seen):
        await wait_nodes(http, manager.url, 2, timeout=30)
        status = await scaling(http, manager.url)
        seen.update(pids(status))
        (edge,) = await serving_ids(http, manager.url, "edge")
        (origin,) = await serving_ids(http, manager.url, "origin")
        edge_url, origin_url = (next(n["url"] for n in status["provided"] if n["node_id"] == node)
                                for node in (edge, origin))
        # edges take no publishers (edge_no_publish): publish to the origin, view on the
        # edge, which pulls the stream from there
        publisher = await Publisher(origin_url, "load").start()
        viewer = await Subscriber(edge_url, "load").start()
        try:
            new = await until(lambda: _new_edge(http, manager.url, {edge}), 20, "a second edge")
            status = await scaling(http, manager.url)
            seen.update(pids(status))
            outs = [e for e in status["entries"] if e["kind"] == "scale_out" and e["role"] == "edge"]
            assert outs and "viewers per node" in outs[-1]["reason"]
            assert new
        finally:
            await viewer.stop()
            await publisher.stop()


async def test_leader_moves_when_the_leader_manager_is_killed(start_manager, redis_server, tmp_path):
    prefix = f"lead-{free_port()}"
    config = tmp_path / "static.toml"
    config.write_text('[manager]\nprovider = "static"\nleader_lease = 2.0\n')
    args = ("--redis", redis_server.url, "--redis-prefix", prefix, "--config", str(config))
    first = start_manager(*args)
    second = start_manager(*args)
    async with pinned_http(first.fingerprint) as h1, pinned_http(second.fingerprint) as h2:
        async def leaders():
            a, b = await scaling(h1, first.url), await scaling(h2, second.url)
            return (a, b) if a["leading"] != b["leading"] else None

        a, b = await until(leaders, 10, "one leader")
        leader, other, other_http = (first, second, h2) if a["leading"] else (second, first, h1)
        leader.kill()
        killed_at = time.monotonic()

        async def other_leads():
            return (await scaling(other_http, other.url))["leading"]

        await until(other_leads, 6, "the other manager leading")
        assert time.monotonic() - killed_at <= 2.0 + 1.5
