"""Scale-in by the autoscaler with counting viewers, with real processes: a plain-HTTP
manager whose local provider runs an origin and an edge group; viewers scale the edge
group out to two edges, then most of them leave, the scale-in rule drains the victim
edge (the provider's stop: drain, then terminate at the deadline), and the victim's
remaining viewers move make-before-break: no decoded frame counter has a hole."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import aiohttp
import pytest
from drain_cluster import FrameLog, HttpManager, clocked_source, until

from cluster_helpers import wait_nodes, write_scaling_config
from unbroken.client import Publisher, Subscriber
from unbroken.client.options import RestoreOptions
from unbroken.manager.paths import split_segment
from unbroken.protocol.whip_whep import Resource

pytestmark = pytest.mark.timeout(150)

OPTIONS = dict(network_watch=False)
EDGE_MAX_SESSIONS = 3  # the origin carries the publisher and two edge pulls: 3 fits


def node_of(client) -> str:
    return split_segment(Resource.parse(client.attempt.viewer.location).session).node_id


def write_config(tmp_path, **edge) -> str:
    base = 24000 + (os.getpid() % 200) * 20
    node_toml = tmp_path / "node.toml"
    node_toml.write_text(f"[node]\nmax_sessions = {EDGE_MAX_SESSIONS}\nrelay_linger = 1\n")
    return write_scaling_config(
        tmp_path / "manager.toml", f"{base}-{base + 19}",
        {"min": 1, "max": 2, "scale_out_viewers": 2.5, "scale_in_viewers": 1.2,
         "cooldown_out": 1, "cooldown_in": 2, **edge},
        local_node_args=f"--config {node_toml}", node_drain_timeout=8, scaling_interval=0.5)


async def scaling(http, url) -> dict:
    async with http.get(f"{url}/api/v1/scaling") as resp:
        return await resp.json()


def pids(status: dict) -> dict[str, int]:
    return {n["node_id"]: int(n["detail"].split()[1]) for n in status.get("provided", [])
            if n["detail"].startswith("pid ")}


async def serving(http, url, role: str) -> list[str]:
    async with http.get(f"{url}/api/v1/nodes") as resp:
        nodes = (await resp.json())["nodes"]
    return sorted(n["node_id"] for n in nodes if n["role"] == role and n["state"] == "serving")


async def viewer(url: str) -> tuple[Subscriber, FrameLog, list]:
    log, events = FrameLog(), []
    client = await Subscriber(url, "cam", on_frame=log, on_event=events.append,
                              options=RestoreOptions(**OPTIONS)).start()
    await until(lambda: _playing(log), 10, "a viewer's first frames")
    return client, log, events


async def _playing(log: FrameLog) -> bool:
    return len(log.counters) > 5


async def test_scale_in_drains_the_victim_edge_and_its_viewers_miss_no_frame(tmp_path):
    manager = HttpManager(args=["--config", write_config(tmp_path)]).start()
    seen: dict[str, int] = {}
    clients: list = []
    publisher = None
    async with aiohttp.ClientSession() as http:
        try:
            await wait_nodes(http, manager.url, 2, timeout=30)
            seen.update(pids(await scaling(http, manager.url)))
            (first_edge,) = await serving(http, manager.url, "edge")
            publisher = await Publisher(manager.url, "cam", source=clocked_source(time.monotonic()),
                                        codec="vp8", options=RestoreOptions(**OPTIONS)).start()
            # three viewers on the one edge: 3 per node > 2.5 -> scale out to a second edge
            for _ in range(3):
                await asyncio.sleep(1.2)  # the edge's heartbeat carries its new load
                clients.append(await viewer(manager.url))
            assert {node_of(c) for c, _, _ in clients} == {first_edge}
            edges = await until(lambda: _two(http, manager.url), 30, "a second edge serving")
            seen.update(pids(await scaling(http, manager.url)))
            second_edge = next(e for e in edges if e != first_edge)
            # the first edge is at its session limit: the fourth viewer goes to the second
            await asyncio.sleep(1.2)
            clients.append(await viewer(manager.url))
            on = [node_of(c) for c, _, _ in clients]
            assert on == [first_edge] * 3 + [second_edge], on
            # the load goes: two of the first edge's viewers leave -> 1 per node < 1.2, and
            # the 2 left on one edge stay under the scale-out 2.5 (no flapping)
            await asyncio.sleep(1.2)  # the second edge's heartbeat carries its viewer
            for client, _, _ in clients[:2]:
                await client.stop()
            staying = clients[2:]
            marks = [log.mark() for _, log, _ in staying]
            left_at = time.monotonic()
            entry = await until(lambda: _scale_in(http, manager.url), 30, "a scale-in decision")
            decided_at = time.monotonic()
            victim = entry["nodes"][0]
            print(f"scale-in {decided_at - left_at:.2f} s after the viewers left: {entry['text']}")
            assert victim in (first_edge, second_edge)
            assert "viewers per node" in entry["reason"]
            gone = await until(lambda: _gone(http, manager.url, victim), 20, "the victim edge gone")
            gone_at = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(seen[victim], 0)
                raise AssertionError(f"the victim's process {seen[victim]} is still there")
            await asyncio.sleep(1.5)  # frames after the move
            moving = [i for i, (c, _, _) in enumerate(staying) if on[2 + i] == victim]
            assert len(moving) == 1, (on, victim)
            for i, (client, log, events) in enumerate(staying):
                missing = log.missing(marks[i])
                restores = [e.report for e in events if e.kind == "restored"]
                print(f"viewer {i} ({'moved' if i in moving else 'stayed'}): missing {len(missing)} frames, "
                      f"{log.fps(marks[i]):.1f} fps, restores "
                      f"{[(r.fault, r.restore_ms, r.gap_ms) for r in restores]}, missing {missing}, "
                      f"steps {log.steps(marks[i], decided_at)[:8]}")
                assert log.fps(marks[i]) > 20
                assert missing == [], missing
                assert node_of(client) != victim
                if i in moving:
                    assert [r.fault for r in restores] == ["node_draining"], restores
                else:
                    assert restores == [], restores
            print(f"decision -> victim gone: {gone['t'] - entry['t']:.2f} s "
                  f"(seen here {gone_at - decided_at:.2f} s)")
            status = await scaling(http, manager.url)
            assert await serving(http, manager.url, "edge") == sorted({first_edge, second_edge} - {victim})
            assert not [e for e in status["entries"] if e["kind"] in ("node_fault", "scale_replace")]
        finally:
            for client, _, _ in clients:
                with contextlib.suppress(Exception):
                    await client.stop()
            if publisher is not None:
                await publisher.stop()
            with contextlib.suppress(Exception):
                seen.update(pids(await scaling(http, manager.url)))
            manager.kill()
            for pid in seen.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def _two(http, url):
    edges = await serving(http, url, "edge")
    return edges if len(edges) == 2 else None


async def _scale_in(http, url):
    entries = (await scaling(http, url))["entries"]
    return next((e for e in entries if e["kind"] == "scale_in" and e["role"] == "edge"), None)


async def _gone(http, url, node_id: str):
    entries = (await scaling(http, url))["entries"]
    return next((e for e in entries if e["kind"] == "node_gone" and e.get("node") == node_id), None)

