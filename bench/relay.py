"""Origin → edge relay: time to first frame at an edge (cold: the pull starts; warm: it
runs), the latency one hop adds, the CPU one more viewer costs at an edge against at an
origin, and origin failures (SIGKILL; the SDK publisher restores through its URL list
of both origins) until the edge's viewer has its picture back.

    python bench/relay.py [--quick]

Nodes are separate processes. CPU per viewer is measured from outside: the node
process's CPU time (/proc/<pid>/stat) over a window while N load viewers (in agent
processes, counting packets, not decoding) play from it, at several N; the slope is
the CPU of one more viewer. The other publishers and viewers run in this process
(decoding viewers: the frame counter is read from each picture). Figures go to stdout
as JSON (also bench/results/relay.json or relay.quick.json); the table to stderr, with
the whole machine's busy-% (the machine may be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from _harness import (Agent, Server, busy_pct, free_port, machine, machine_busy, percentile,
                      table, write_results)

from unbroken.client import Publisher, sources
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
    """SIGKILL the origin the SDK publisher is on; the publisher restores by itself
    through its URL list (both origins), the edge finds the stream on the other one: the
    time from the kill to the edge viewer's first frame after it. The killed origin is
    restarted on its port before the next fault."""
    origins = [await node("origin").start(), await node("origin").start()]
    edge = await node("edge", "--upstream", ",".join(o.url for o in origins),
                      "--relay-linger", "5").start()
    pub = await Publisher([o.url for o in origins], "cam", codec="vp8",
                          source=sources.testsrc(audio=False)).start()
    viewer = await WhepViewer(edge.url, "cam", audio=False).start()
    await viewer.wait_frames(30, 15)
    back: list[float | None] = []
    publisher_restore: list[float] = []
    try:
        for i in range(faults):
            await asyncio.sleep(0.5)
            current = next(o for o in origins if o.url == pub.url)
            frames, restores = viewer.frames, len(pub.restores)
            current.proc.kill()  # SIGKILL
            killed_at = time.monotonic()
            await current.proc.wait()
            try:
                # the frame in flight at the kill does not count: wait for two more
                await viewer.wait_frames(frames + 2, 10)
                arrived = [t for t in viewer.arrivals if t > killed_at + 0.05]
                back.append((arrived[0] - killed_at) * 1000 if arrived else None)
            except TimeoutError:
                back.append(None)
            if len(pub.restores) > restores:
                publisher_restore.append(pub.restores[-1].restore_ms)
            log(f"fault {i + 1}: picture back after "
                f"{back[-1] if back[-1] is None else round(back[-1])} ms (publisher on {pub.url})")
            origins[origins.index(current)] = await node("origin", port=current.port).start()
    finally:
        await viewer.stop()
        await pub.stop()
        for server in (edge, *origins):
            await server.stop()
    return {"picture_back_ms": back, "publisher_restore_ms": publisher_restore}


async def add_viewers(server: Server, agents: list[Agent], count: int) -> None:
    """Load viewers of `server` (in agent processes) up to `count`."""
    have = sum(int(a.args[-1]) for a in agents)
    if count > have:
        agent = Agent(f"{server.name}-load-{len(agents)}",
                      ["view", server.url, "cpu", "--count", str(count - have)])
        await agent.start()
        agents.append(agent)


def slope(rows: list[dict]) -> float:
    """Least-squares CPU % per viewer across the steps."""
    xs = [r["viewers"] for r in rows]
    ys = [r["cpu_pct"] for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


async def cpu_per_viewer(steps: list[int], window: float) -> dict:
    """One VP8 publisher (agent, 640x360, 30 fps, 1 Mbps) on an origin, an edge pulling
    from it; at each step N load viewers on the origin and N on the edge, and both node
    processes' CPU over the same window (so both see the same machine, however busy):
    each node's CPU per added viewer. (The origin's figures include the edge's pull, one
    viewer more at every step: the slope does not change.)"""
    origin = await node("origin").start()
    edge = await node("edge", "--upstream", origin.url, "--relay-linger", "5").start()
    publisher = Agent("relay-publisher", ["publish", origin.url, "cpu", "--codec", "vp8",
                                          "--bitrate", "1000000"])
    servers = (origin, edge)
    agents: dict[str, list[Agent]] = {s.name: [] for s in servers}
    rows: dict[str, list[dict]] = {s.name: [] for s in servers}
    try:
        await publisher.start()
        for count in steps:
            for server in servers:
                await add_viewers(server, agents[server.name], count)
            await asyncio.sleep(1.0)  # past the joins
            cpu0, busy0, t0 = [sum(s.cpu()) for s in servers], machine_busy(), time.monotonic()
            await asyncio.sleep(window)
            cpu1, busy1, t1 = [sum(s.cpu()) for s in servers], machine_busy(), time.monotonic()
            busy = busy_pct(busy0, busy1)
            for server, a, b in zip(servers, cpu0, cpu1):
                rows[server.name].append({"viewers": count,
                                          "cpu_pct": round(100 * (b - a) / (t1 - t0), 2),
                                          "machine_busy_pct": busy})
            log(f"{count:3d} viewers each: origin cpu {rows['origin'][-1]['cpu_pct']:6.2f}%  "
                f"edge cpu {rows['edge'][-1]['cpu_pct']:6.2f}%  machine busy {busy}%")
    finally:
        await asyncio.gather(*(a.stop() for group in agents.values() for a in group),
                             return_exceptions=True)
        await publisher.stop()
        await edge.stop()
        await origin.stop()
    results: dict = {name: {"steps": rows[name], "cpu_pct_per_viewer": round(slope(rows[name]), 3)}
                     for name in rows}
    per_origin = results["origin"]["cpu_pct_per_viewer"]
    results["edge_to_origin_ratio"] = (round(results["edge"]["cpu_pct_per_viewer"] / per_origin, 2)
                                       if per_origin > 0 else None)
    return results


def summary(measured: list[float | None]) -> dict:
    values = [v for v in measured if v is not None]
    return {"n": len(values), "misses": len(measured) - len(values), "p50": round(percentile(values, 50), 1),
            "p95": round(percentile(values, 95), 1),
            "mean": round(statistics.fmean(values), 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer joins and faults")
    parser.add_argument("--only-cpu", action="store_true",
                        help="only the CPU per viewer (results in relay-cpu[.quick].json)")
    args = parser.parse_args()
    joins, faults = (5, 5) if args.quick else (20, 20)
    steps, window = ([1, 6, 11], 3.0) if args.quick else ([1, 6, 11, 16, 21], 5.0)
    cpu = await cpu_per_viewer(steps, window)
    if args.only_cpu:
        results = {"machine": machine(), "cpu_per_viewer": cpu}
        write_results("relay-cpu", results, args.quick)
        print(json.dumps(results))
        return
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
        "origin_failure_publisher_restore_ms": summary(failover["publisher_restore_ms"]),
        "cpu_per_viewer": cpu,
        "targets": {"edge_ttff_warm_ms": 100, "edge_ttff_cold_ms": 250,
                    "added_latency_per_hop_ms": 10, "origin_failure_p95_ms": 1000,
                    "edge_to_origin_cpu_per_viewer_ratio": 1.0},
    }
    rows = [{"what": key, **results[key]} for key in results
            if key not in ("machine", "targets", "cpu_per_viewer")]
    log(table([("what", "what"), ("n", "n"), ("misses", "misses"), ("p50", "p50"), ("p95", "p95"),
               ("mean", "mean")], rows))
    cpu_rows = [{"node": name, **step} for name in ("origin", "edge")
                for step in cpu[name]["steps"]]
    log(table([("node", "node"), ("viewers", "viewers"), ("cpu_pct", "cpu%"),
               ("machine_busy_pct", "machine busy%")], cpu_rows))
    log(f"CPU per viewer: origin {cpu['origin']['cpu_pct_per_viewer']}%, edge "
        f"{cpu['edge']['cpu_pct_per_viewer']}% of a core (edge/origin "
        f"{cpu['edge_to_origin_ratio']})")
    write_results("relay", results, args.quick)
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
