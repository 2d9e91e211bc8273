"""Origin → edge relay: time to first frame at an edge (cold: the pull starts; warm: it
runs), the latency one hop adds, and origin failures (SIGKILL, the publisher restores to
a second origin) until the edge's viewer has its picture back.

    python bench/relay.py [--quick]

Nodes are separate processes; the publisher and viewers run in this one (decoding
viewers: the frame counter is read from each picture). Figures go to stdout as JSON
(also bench/results/relay.json or relay.quick.json); the table to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from _harness import Server, free_port, machine, percentile, table, write_results

from unbroken.client.testsrc import TestPatternVideoTrack
from unbroken.client.whep import WhepViewer
from unbroken.client.whip import WhipPublisher

LINGER = 0.3  # s: short, so that a cold join finds no pull


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def node(role: str, *args: str, port: int | None = None) -> Server:
    port = port or free_port()
    return Server(f"{role}", [sys.executable, "-m", "unbroken", "node", "--host", "127.0.0.1",
                              "--port", str(port), "--role", role, "--media-timeout", "5",
                              "--log-level", "warning", *args], port)


async def publish(url: str, stream: str) -> WhipPublisher:
    return await WhipPublisher(url, stream, tracks=[TestPatternVideoTrack()],
                               video_codec="vp8").start()


async def ttff(url: str, stream: str) -> float | None:
    """ms from the WHEP POST to the first decoded frame; None: none within 5 s (a miss,
    counted in the results)."""
    viewer = await WhepViewer(url, stream, audio=False).start()
    try:
        await viewer.wait_first_frame(5)
        return viewer.time_to_first_frame * 1000
    except TimeoutError:
        log(f"no frame within 5 s at {url}")
        return None
    finally:
        await viewer.stop()


async def first_frames(edge: Server, joins: int) -> dict:
    cold, warm = [], []
    for _ in range(joins):
        cold.append(await ttff(edge.url, "cam"))
        await asyncio.sleep(LINGER + 0.5)  # the pull ends
    keeper = await WhepViewer(edge.url, "cam", audio=False).start()
    await keeper.wait_frames(10, 10)
    for _ in range(joins):
        await asyncio.sleep(1.0)  # independent joins: past the keyframe-request throttle
        warm.append(await ttff(edge.url, "cam"))
    await keeper.stop()
    return {"cold_ms": cold, "warm_ms": warm}


async def hop_latency(origin: Server, edge: Server, far_edge: Server) -> dict:
    """Arrival of the same frame counters at viewers of the origin, the edge, and an edge
    of that edge: the difference is what each hop adds."""
    viewers = [await WhepViewer(n.url, "cam", audio=False).start()
               for n in (origin, edge, far_edge)]
    await asyncio.gather(*(v.wait_frames(30, 15) for v in viewers))
    await asyncio.sleep(5)
    arrival = [{c: t for c, t in zip(v.counters, v.arrivals) if c is not None}
               for v in viewers]
    for v in viewers:
        await v.stop()

    def added(a: dict, b: dict) -> list[float]:
        return [(b[c] - a[c]) * 1000 for c in a if c in b]

    return {"hop1_ms": added(arrival[0], arrival[1]), "hop2_ms": added(arrival[1], arrival[2])}


async def failovers(faults: int) -> dict:
    origins = [await node("origin").start(), await node("origin").start()]
    edge = await node("edge", "--upstream", ",".join(o.url for o in origins),
                      "--relay-linger", "5").start()
    current = 0
    pub = await publish(origins[current].url, "cam")
    viewer = await WhepViewer(edge.url, "cam", audio=False).start()
    await viewer.wait_frames(30, 15)
    back = []
    try:
        for i in range(faults):
            await asyncio.sleep(0.5)
            origins[current].proc.kill()  # SIGKILL
            killed_at = time.monotonic()
            await origins[current].proc.wait()
            await pub.stop()
            current = 1 - current
            pub = await publish(origins[current].url, "cam")  # the publisher restores
            frames = viewer.frames
            await viewer.wait_frames(frames + 1, 10)
            back.append((viewer.arrivals[-1] - killed_at) * 1000)
            log(f"fault {i + 1}: picture back after {back[-1]:.0f} ms")
            dead = origins[1 - current]
            origins[1 - current] = await node("origin", port=dead.port).start()
    finally:
        await viewer.stop()
        await pub.stop()
        for server in (edge, *origins):
            await server.stop()
    return {"picture_back_ms": back}


def summary(measured: list[float | None]) -> dict:
    values = [v for v in measured if v is not None]
    return {"n": len(values), "misses": len(measured) - len(values), "p50": round(percentile(values, 50), 1),
            "p95": round(percentile(values, 95), 1),
            "mean": round(statistics.fmean(values), 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer joins and faults")
    args = parser.parse_args()
    joins, faults = (5, 5) if args.quick else (20, 20)
    origin = await node("origin").start()
    edge = await node("edge", "--upstream", origin.url, "--relay-linger", str(LINGER)).start()
    far_edge = await node("edge", "--upstream", edge.url, "--relay-linger", "5").start()
    pub = await publish(origin.url, "cam")
    try:
        frames = await first_frames(edge, joins)
        hops = await hop_latency(origin, edge, far_edge)
    finally:
        await pub.stop()
        for server in (far_edge, edge, origin):
            await server.stop()
    failover = await failovers(faults)
    results = {
        "machine": machine(),
        "edge_ttff_cold_ms": summary(frames["cold_ms"]),
        "edge_ttff_warm_ms": summary(frames["warm_ms"]),
        "added_latency_hop1_ms": summary(hops["hop1_ms"]),
        "added_latency_hop2_ms": summary(hops["hop2_ms"]),
        "origin_failure_picture_back_ms": summary(failover["picture_back_ms"]),
        "targets": {"edge_ttff_warm_ms": 100, "edge_ttff_cold_ms": 250,
                    "added_latency_per_hop_ms": 10, "origin_failure_p95_ms": 1000},
    }
    rows = [{"what": key, **results[key]} for key in results
            if key not in ("machine", "targets")]
    log(table([("what", "what"), ("n", "n"), ("misses", "misses"), ("p50", "p50"), ("p95", "p95"),
               ("mean", "mean")], rows))
    write_results("relay", results, args.quick)
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
