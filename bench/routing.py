"""Stream manager routing decisions: p50/p99 per decision with the Redis store.

    python bench/routing.py [--quick]

A redis-server of the benchmark's own (free port, no persistence) holds the cluster:
50 nodes (10 origins, 40 edges) and 500 live streams, each published on an origin and
carried by a few edges. Two managers share it, as a real deployment would: manager B
receives every node's heartbeat once a second (a write per node, its events reaching
manager A over pub/sub), while manager A routes, so A's hot view is updated while it
decides. Per decision, on the monotonic clock, in A's event loop:

  play            route/play of a live stream (an edge; a Redis write when the chosen
                  edge is new for the stream: the edge reservation)
  publish         route/publish of a stream that has its origin (memory only)
  publish-new     route/publish of a new stream (one Redis round trip: the claim)

The same decisions also run on the in-process store (one manager) for comparison.
Target: p99 ≤ 5 ms with Redis. Figures go to stdout as one JSON object (also
bench/results/routing.json, or routing.quick.json with --quick); the table goes to stderr.
The exit status is non-zero only when a decision fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import socket
import subprocess
import sys
import time

from _harness import busy_pct, free_port, machine, machine_busy, percentile, table, write_results

from unbroken.manager.model import NodeLimits, NodeLoad, NodeRecord, NodeRole, NodeState
from unbroken.manager.registry import Registry
from unbroken.manager.routing import Router
from unbroken.manager.store import ClusterStore, LocalStore, RedisStore

ORIGINS, EDGES, STREAMS = 10, 40, 500
EDGES_PER_STREAM = 3
HEARTBEAT_S = 1.0
TARGET_P99_MS = 5.0
FULL = {"play": 20_000, "publish": 5_000, "publish-new": 2_000}
QUICK = {"play": 1_000, "publish": 300, "publish-new": 200}
REDIS_START_S = 10.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_redis(port: int) -> subprocess.Popen:
    if shutil.which("redis-server") is None:
        sys.exit("routing: redis-server is not installed (scripts/install-system.sh installs it)")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + REDIS_START_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit(f"routing: redis-server did not answer on port {port}")


def layout() -> tuple[dict[int, frozenset[str]], dict[int, frozenset[str]]]:
    """Which streams each origin publishes and each edge carries (fixed for the run)."""
    by_origin: dict[int, set[str]] = {}
    by_edge: dict[int, set[str]] = {}
    for i in range(STREAMS):
        stream = f"stream-{i:03d}"
        by_origin.setdefault(i % ORIGINS, set()).add(stream)
        for e in random.Random(i).sample(range(EDGES), EDGES_PER_STREAM):
            by_edge.setdefault(e, set()).add(stream)
    return ({i: frozenset(s) for i, s in by_origin.items()}, {i: frozenset(s) for i, s in by_edge.items()})


LAYOUT = layout()


def cluster(rng: random.Random, seq: int) -> list[NodeRecord]:
    """The nodes' records at heartbeat `seq`: loads move a little every beat."""
    by_origin, by_edge = LAYOUT
    records = []
    limits = NodeLimits(max_sessions=2000, max_cpu=0.9)
    for role, count, carried in ((NodeRole.ORIGIN, ORIGINS, by_origin), (NodeRole.EDGE, EDGES, by_edge)):
        for i in range(count):
            sessions = rng.randint(0, 800)
            records.append(NodeRecord(
                node_id=f"{role.value}-{i:02d}", role=role, url=f"http://10.0.{role is NodeRole.EDGE:d}.{i}:8080",
                instance="bench", seq=seq, state=NodeState.SERVING,
                load=NodeLoad(sessions=sessions, publishers=len(carried.get(i, [])) if role is NodeRole.ORIGIN else 0,
                              viewers=sessions, cpu=rng.uniform(0.05, 0.6), egress_bps=sessions * 1e6),
                limits=limits, streams=carried.get(i, frozenset())))
    return records


async def healthy(_record: NodeRecord) -> bool:
    return True


async def heartbeats(registry: Registry, stop: asyncio.Event) -> int:
    """Every node's heartbeat once a second through `registry` until `stop`; the count."""
    rng, seq, sent = random.Random(7), 1, 0
    while not stop.is_set():
        seq += 1
        for record in cluster(rng, seq):
            await registry.heartbeat(record)
            sent += 1
        try:
            await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
        except TimeoutError:
            pass
    return sent


async def measure(router: Router, plan: dict[str, int]) -> dict[str, dict]:
    rng = random.Random(11)
    streams = [f"stream-{i:03d}" for i in range(STREAMS)]
    kinds = {
        "play": lambda i: router.route_play(rng.choice(streams)),
        "publish": lambda i: router.route_publish(rng.choice(streams)),
        "publish-new": lambda i: router.route_publish(f"new-{i}-{rng.randrange(10**9)}"),
    }
    out = {}
    for kind, count in plan.items():
        times, errors = [], []
        for i in range(count):
            started = time.perf_counter()
            try:
                await kinds[kind](i)
            except Exception as e:  # a failed decision is what this benchmark reports
                errors.append(repr(e))
            times.append((time.perf_counter() - started) * 1000)
            if i % 50 == 0:
                await asyncio.sleep(0)  # let events and heartbeats in, as a busy manager would
        out[kind] = {
            "decisions": count,
            "p50_ms": round(percentile(times, 50), 4),
            "p99_ms": round(percentile(times, 99), 4),
            "max_ms": round(max(times), 3),
            "per_s": round(count / (sum(times) / 1000)),
            "errors": errors[:5],
            "error_count": len(errors),
        }
    return out


async def run_store(name: str, stores: tuple[ClusterStore, ClusterStore], plan: dict[str, int]) -> dict:
    deciding, receiving = (Registry(store, healthy) for store in stores)
    await receiving.start()
    if deciding is not receiving:
        await deciding.start()
    stop = asyncio.Event()
    try:
        rng = random.Random(3)
        for record in cluster(rng, 1):  # the cluster is there before the first decision
            await receiving.heartbeat(record)
        deadline = time.monotonic() + 5
        while sum(1 for _ in deciding.views()) < ORIGINS + EDGES and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        beating = asyncio.create_task(heartbeats(receiving, stop))
        busy_start = machine_busy()
        results = await measure(Router(deciding, rng=random.Random(5)), plan)
        stop.set()
        sent = await beating
        busy = busy_pct(busy_start, machine_busy())
    finally:
        await deciding.close()
        if deciding is not receiving:
            await receiving.close()
    return {"store": name, "heartbeats_during": sent, "machine_busy_pct": busy, "decisions": results}


def report(results: dict) -> str:
    rows = []
    for run in results["runs"]:
        for kind, r in run["decisions"].items():
            rows.append({"store": run["store"], "kind": kind, **r, "busy": run["machine_busy_pct"]})
    columns = [("store", "store"), ("kind", "decision"), ("decisions", "n"), ("p50_ms", "p50 ms"),
               ("p99_ms", "p99 ms"), ("max_ms", "max ms"), ("per_s", "per s"),
               ("error_count", "errors"), ("busy", "machine busy%")]
    lines = [f"routing: {ORIGINS} origins + {EDGES} edges, {STREAMS} live streams, "
             f"heartbeats every {HEARTBEAT_S:g} s during the run", table(columns, rows),
             f"redis p99 ≤ {TARGET_P99_MS:g} ms for every decision: {results['redis_meets_target']}"]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run (a few seconds)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    port = free_port()
    redis_proc = start_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    results = {"benchmark": "routing", "quick": args.quick,
               "config": {"origins": ORIGINS, "edges": EDGES, "streams": STREAMS,
                          "edges_per_stream": EDGES_PER_STREAM, "heartbeat_s": HEARTBEAT_S, "plan": plan},
               "target": {"redis_p99_ms": TARGET_P99_MS}, "machine": machine(), "runs": []}
    try:
        redis_stores = (RedisStore(url, prefix="bench"), RedisStore(url, prefix="bench"))
        try:
            results["runs"].append(await run_store("redis", redis_stores, plan))
        finally:
            for store in redis_stores:
                await store.close()
        local = LocalStore()
        results["runs"].append(await run_store("local", (local, local), plan))
        await local.close()
    finally:
        redis_proc.kill()
        redis_proc.wait(timeout=5)
    redis_run = results["runs"][0]["decisions"]
    results["redis_meets_target"] = all(r["p99_ms"] <= TARGET_P99_MS for r in redis_run.values())
    results["duration_s"] = round(time.monotonic() - started, 1)
    path = write_results("routing", results, args.quick)
    log(report(results))
    log(f"\nwritten to {path}")
    print(json.dumps(results))
    if any(r["error_count"] for run in results["runs"] for r in run["decisions"].values()):
        sys.exit("routing: decisions failed")


if __name__ == "__main__":
    asyncio.run(main())
