"""The stream manager: WHEP time to first frame through the manager vs direct, many
viewers joining at once through it, and a SIGKILLed node leaving routing.

    python bench/manager.py [--quick]

A manager (self-signed TLS; the clients pin its fingerprint) and origin nodes run as
processes; a publisher (test pattern 640x360 at 30 fps, VP8) publishes to an origin.
  ttff      decoding viewers join one after the other, alternately direct (plain HTTP to
            the node) and through the manager (HTTPS); WHEP POST → first decoded frame.
            Target: through the manager ≤ direct + 10 ms (p50).
  join      N viewers (200; 40 with --quick) POST at once through the manager; they count
            packets only, no decoding; the time until every one has received video.
            Target ≤ 5 s on 2 cores.
  node_out  a second origin is SIGKILLed; the time until the manager lists it no more
            (no route goes to it). Target ≤ 3 s.
  edge_kill SDK viewers (Subscriber given the manager: a new route every try) play from
            an edge that pulls from the origin; the edge is SIGKILLed (a fresh one takes
            its place for the next round); fault → first media again (detect + restore)
            per viewer, p50/p95. Target p95 ≤ 600 ms.
Figures go to stdout as JSON (also bench/results/manager.json, or manager.quick.json);
the table goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import tempfile
import time

import aiohttp
from _harness import REPO, Server, free_port, machine, percentile, table, write_results

from unbroken.client import ClientEvent, Subscriber
from unbroken.client.testsrc import TestPatternVideoTrack
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher
from unbroken.manager.tls import client_context

NODE_TOKEN = "bench-node-token"


async def start_manager(port: int) -> tuple[asyncio.subprocess.Process, str]:
    settings = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    # the benchmark's clients all come from one address: no per-client limits here
    settings.write("[manager]\nclient_requests_per_s = 0.0\nclient_sessions_per_s = 0.0\n")
    settings.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "unbroken", "manager", "--host", "127.0.0.1", "--port", str(port),
        "--node-token", NODE_TOKEN, "--tls-self-signed", "--config", settings.name, "--log-level", "warning",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    async with asyncio.timeout(15):
        while True:
            line = (await proc.stdout.readline()).decode()
            found = re.search(r"fingerprint ([0-9A-F:]{95})", line)
            if found:
                return proc, found.group(1)
            if not line:
                raise RuntimeError("manager exited")


def origin(manager_url: str, fingerprint: str, role: str = "origin") -> Server:
    server = Server.node()
    server.argv += ["--role", role, "--manager", manager_url, "--node-token", NODE_TOKEN,
                    "--manager-fingerprint", fingerprint]
    return server


async def wait_listed(http: aiohttp.ClientSession, url: str, count: int) -> list[dict]:
    async with asyncio.timeout(15):
        while True:
            async with http.get(f"{url}/api/v1/nodes") as resp:
                nodes = (await resp.json())["nodes"]
            if sum(n["state"] == "serving" for n in nodes) >= count:
                return nodes
            await asyncio.sleep(0.1)


async def ttff(node_url: str, manager_url: str, https: aiohttp.ClientSession, joins: int) -> dict:
    figures: dict[str, list[float]] = {"direct": [], "manager": []}
    async with aiohttp.ClientSession() as plain:
        for i in range(joins + 1):  # the first pair warms up
            order = (("direct", node_url, plain), ("manager", manager_url, https))
            for name, url, http in order if i % 2 else reversed(order):
                viewer = WhepViewer(url, "bench", audio=False, http=http)
                await viewer.start()
                await viewer.wait_first_frame(10)
                if i:
                    figures[name].append(viewer.time_to_first_frame * 1000)
                await viewer.stop()
                await asyncio.sleep(0.1)
    out = {}
    for name, values in figures.items():
        out[name] = {"p50_ms": round(percentile(values, 50), 1), "p95_ms": round(percentile(values, 95), 1),
                     "n": len(values)}
    out["added_p50_ms"] = round(out["manager"]["p50_ms"] - out["direct"]["p50_ms"], 1)
    return out


async def join(manager_url: str, https: aiohttp.ClientSession, viewers: int) -> dict:
    group = [WhepViewer(manager_url, "bench", audio=False, decode=False, http=https, http_timeout=30)
             for _ in range(viewers)]
    started = time.monotonic()
    results = await asyncio.gather(*(v.start() for v in group), return_exceptions=True)
    failed = sum(isinstance(r, BaseException) for r in results)
    playing = [v for v, r in zip(group, results) if not isinstance(r, BaseException)]
    all_playing = None
    async with asyncio.timeout(30):
        while True:
            if all(v.packets > 0 for v in playing):
                all_playing = time.monotonic() - started
                break
            await asyncio.sleep(0.02)
    await asyncio.gather(*(v.stop() for v in playing), return_exceptions=True)
    return {"viewers": viewers, "failed": failed, "all_playing_s": round(all_playing, 2)}


async def node_out(manager_url: str, https: aiohttp.ClientSession, victim: Server) -> dict:
    node_id = f"origin-127.0.0.1-{victim.port}"
    victim.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    async with asyncio.timeout(15):
        while True:
            async with https.get(f"{manager_url}/api/v1/nodes") as resp:
                nodes = (await resp.json())["nodes"]
            if all(n["node_id"] != node_id for n in nodes):
                return {"out_of_routing_s": round(time.monotonic() - killed, 2)}
            await asyncio.sleep(0.02)


async def edge_kill(manager_url: str, fingerprint: str, https: aiohttp.ClientSession,
                    rounds: int, viewers: int = 5) -> dict:
    edges = [origin(manager_url, fingerprint, "edge") for _ in range(2)]
    for edge in edges:
        await edge.start()
    await wait_listed(https, manager_url, 3)  # the origin and the two edges
    events: list[ClientEvent] = []
    subs = [Subscriber(None, "bench", on_event=events.append, manager=manager_url,
                       manager_fingerprint=fingerprint) for _ in range(viewers)]
    samples: list[float] = []
    try:
        await asyncio.gather(*(sub.start() for sub in subs))
        for _ in range(rounds):
            await asyncio.sleep(1.0)
            victim_id = subs[0].node
            victim = next(e for e in edges if victim_id and victim_id.endswith(f"-{e.port}"))
            before = sum(e.kind == "restored" for e in events)
            on_victim = sum(sub.node == victim_id for sub in subs)
            victim.proc.send_signal(signal.SIGKILL)
            async with asyncio.timeout(15):
                while sum(e.kind == "restored" for e in events) < before + on_victim:
                    await asyncio.sleep(0.02)
            samples += [e.report.detect_ms + e.report.restore_ms
                        for e in [e for e in events if e.kind == "restored"][before:]]
            await victim.stop()
            edges.remove(victim)
            fresh = origin(manager_url, fingerprint, "edge")
            await fresh.start()
            edges.append(fresh)
            await wait_listed(https, manager_url, 3)
    finally:
        await asyncio.gather(*(sub.stop() for sub in subs), return_exceptions=True)
        for edge in edges:
            await edge.stop()
    return {"rounds": rounds, "viewers": viewers, "n": len(samples),
            "p50_ms": round(percentile(samples, 50), 1), "p95_ms": round(percentile(samples, 95), 1)}


async def main(quick: bool) -> dict:
    port = free_port()
    manager, fingerprint = await start_manager(port)
    url = f"https://127.0.0.1:{port}"
    first, second = origin(url, fingerprint), origin(url, fingerprint)
    await first.start()
    https = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(fingerprint=fingerprint),
                                                                 limit=0))
    publisher = None
    try:
        await wait_listed(https, url, 1)
        publisher = await WhipPublisher(first.url, "bench", tracks=[TestPatternVideoTrack(640, 360, 30)],
                                        video_codec="vp8").start()
        await publisher.wait_connected(10)
        await asyncio.sleep(1.5)  # the heartbeat with the stream
        results = {"machine": machine(), "quick": quick}
        results["ttff"] = await ttff(first.url, url, https, 6 if quick else 30)
        results["join"] = await join(url, https, 40 if quick else 200)
        await second.start()
        await wait_listed(https, url, 2)
        results["node_out"] = await node_out(url, https, second)
        results["edge_kill"] = await edge_kill(url, fingerprint, https, 2 if quick else 10)
        return results
    finally:
        if publisher is not None:
            await publisher.stop()
        await https.close()
        await first.stop()
        await second.stop()
        manager.send_signal(signal.SIGKILL)
        await manager.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(main(args.quick))
    t, j, n, e = results["ttff"], results["join"], results["node_out"], results["edge_kill"]
    rows = [
        {"what": "WHEP TTFF direct p50", "value": t["direct"]["p50_ms"], "unit": "ms", "target": "-"},
        {"what": "WHEP TTFF via manager p50", "value": t["manager"]["p50_ms"], "unit": "ms", "target": "-"},
        {"what": "added by the manager p50", "value": t["added_p50_ms"], "unit": "ms", "target": "≤ 10"},
        {"what": f"{j['viewers']} viewers at once, all playing", "value": j["all_playing_s"], "unit": "s",
         "target": "≤ 5"},
        {"what": "failed joins", "value": j["failed"], "unit": "", "target": "0"},
        {"what": "SIGKILLed node out of routing", "value": n["out_of_routing_s"], "unit": "s", "target": "≤ 3"},
        {"what": f"edge SIGKILL → SDK viewers' media back p50 (n={e['n']})", "value": e["p50_ms"],
         "unit": "ms", "target": "-"},
        {"what": "edge SIGKILL → SDK viewers' media back p95", "value": e["p95_ms"], "unit": "ms",
         "target": "≤ 600"},
    ]
    print(table([("what", "measure"), ("value", "value"), ("unit", "unit"), ("target", "target")], rows),
          file=sys.stderr)
    print(json.dumps(results, indent=2))
    write_results("manager", results, args.quick)
