"""Forwarding cost: server CPU per forwarded RTP packet, and subscribers per core.

    python bench/forwarding.py [--quick]

One publisher (VP8 test pattern, 640x360 at 30 fps, encoder pinned to 1 Mbps)
sends to the server; one decoding viewer checks the picture (fps and advancing
frame counters) while N load viewers, which only count packets and frames, are
added step by step. At each step, after every viewer got its first frame, the
server process's CPU time (/proc/<pid>/stat) and the packets it sent to play
sessions (its /api/v1/sessions) are sampled over fixed windows:

    µs per forwarded packet = server CPU seconds / packets forwarded
    ... net of idle          = (server CPU seconds - its idle CPU) / packets forwarded
                               (idle: the node's CPU before anything is published)
    marginal µs per packet  = slope of server CPU against packets/s across the steps
    subscribers per core    = 1 / (marginal CPU of one subscriber's packets/s)

Each step is measured over several consecutive windows (3 in a full run) and reported by
its median window (by server CPU): on a 2-core VM the node's CPU moved by ±10 % between
windows, and one window's outlier would move the fit. Every window's server CPU is kept in the row.

The unbroken node on its native forwarding path (the default), the same node on its
Python path (UNBROKEN_NATIVE=0; not with --native-only) and the MediaRelay baseline
(bench/relay_baseline.py: decode once, encode per viewer) are measured the same way,
one after the other. Figures
go to stdout as one JSON object (also bench/results/forwarding.json, or
forwarding.quick.json with --quick); the tables go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp

from _harness import Agent, Server, busy_pct, machine, machine_busy, table, write_results

STREAM = "bench"
SIZE = "640x360"
FPS = 30
BITRATE = 1_000_000
MIN_FPS = 29.0  # target: every viewer
TARGET_US_PER_PACKET = 10.0
TARGET_RATIO = 150.0  # at least this many times cheaper than MediaRelay per packet
SATURATED_PCT = 95.0  # whole-machine CPU busy at which a step is flagged
VIEWERS_PER_AGENT = 16  # load viewers per process
SETTLE = 1.0  # seconds between the last first frame and the first window

FULL = {"node": [1, 2, 4, 8, 16, 32, 64], "baseline": [1, 2, 4, 8], "window": 6.0,
        "windows": 3, "idle": 3.0}
QUICK = {"node": [1, 4], "baseline": [1], "window": 3.0, "windows": 1, "idle": 1.0}
# the baseline stops adding viewers once its decoding viewer drops below this
BASELINE_GIVE_UP_FPS = 15.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Setup:
    """A server with its publisher, decoding viewer and load viewers, each in a process."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.label = server.name
        self.publisher = Agent(f"{self.label}-publisher",
                               ["publish", server.url, STREAM, "--codec", "vp8",
                                "--size", SIZE, "--fps", str(FPS), "--bitrate", str(BITRATE)])
        self.decoder = Agent(f"{self.label}-decoding-viewer",
                             ["view", server.url, STREAM, "--decode"])
        self.loads: list[Agent] = []
        self.load_viewers = 0
        self.idle_cpu = 0.0  # the server's CPU seconds per second before any stream

    async def start(self, idle_window: float) -> None:
        await self.server.start()
        await asyncio.sleep(0.5)  # past start-up
        before, t0 = sum(self.server.cpu()), time.monotonic()
        await asyncio.sleep(idle_window)
        self.idle_cpu = (sum(self.server.cpu()) - before) / (time.monotonic() - t0)
        await self.publisher.start()
        await self.decoder.start()

    async def add_load_viewers(self, count: int) -> None:
        """Add ``count`` load viewers, in processes of at most VIEWERS_PER_AGENT."""
        new = []
        while count > 0:
            size = min(count, VIEWERS_PER_AGENT)
            name = f"{self.label}-load-{len(self.loads) + len(new)}"
            new.append(Agent(name, ["view", self.server.url, STREAM, "--count", str(size)]))
            count -= size
        self.loads += new
        await asyncio.gather(*(agent.start() for agent in new))
        self.load_viewers += sum(int(a.args[-1]) for a in new)

    async def stop(self) -> None:
        await asyncio.gather(*(a.stop() for a in self.loads + [self.decoder, self.publisher]),
                             return_exceptions=True)
        await self.server.stop()

    async def sample(self, http: aiohttp.ClientSession) -> dict:
        agents = [self.publisher, self.decoder, *self.loads]
        sample = {"t": time.monotonic(), "server_cpu": self.server.cpu(),
                  "machine": machine_busy()}
        sample["sent"] = await self.server.forwarded_packets(http)
        sample["snaps"] = await asyncio.gather(*(a.snap() for a in agents))
        return sample

    async def measure(self, http: aiohttp.ClientSession, window: float, windows: int) -> dict:
        """The median of ``windows`` consecutive windows by server CPU, with every
        window's server CPU in ``window_cpu_pct``."""
        samples = [await self.sample(http)]
        for _ in range(windows):
            await asyncio.sleep(window)
            samples.append(await self.sample(http))
        rows = [self.row(a, b) for a, b in zip(samples, samples[1:])]
        median = sorted(rows, key=lambda r: r["server_cpu_pct"])[len(rows) // 2]
        median["window_cpu_pct"] = [r["server_cpu_pct"] for r in rows]
        return median

    def row(self, a: dict, b: dict) -> dict:
        wall = b["t"] - a["t"]
        user = b["server_cpu"][0] - a["server_cpu"][0]
        system = b["server_cpu"][1] - a["server_cpu"][1]
        cpu = user + system
        packets = b["sent"][0] - a["sent"][0]
        octets = b["sent"][1] - a["sent"][1]
        pub_a, dec_a, *loads_a = a["snaps"]
        pub_b, dec_b, *loads_b = b["snaps"]

        def fps(snap_a: dict, snap_b: dict, i: int) -> float:
            frames = snap_b["viewers"][i]["frames"] - snap_a["viewers"][i]["frames"]
            return frames / (snap_b["t"] - snap_a["t"])

        load_fps = [fps(sa, sb, i) for sa, sb in zip(loads_a, loads_b)
                    for i in range(len(sb["viewers"]))]
        load_packets = sum(v["packets"] for s in loads_b for v in s["viewers"]) - \
            sum(v["packets"] for s in loads_a for v in s["viewers"])
        pub_dt = pub_b["t"] - pub_a["t"]
        counters = dec_b["viewers"][0]["counters"]  # frames decoded since the first sample
        return {
            "load_viewers": self.load_viewers,
            "subscribers": self.load_viewers + 1,
            "window_s": round(wall, 2),
            "server_cpu_pct": round(100 * cpu / wall, 1),
            "server_sys_pct": round(100 * system / wall, 1),
            "packets_per_s": round(packets / wall, 1),
            "forwarded_mbps": round(octets * 8 / wall / 1e6, 2),
            "us_per_packet": round(1e6 * cpu / packets, 1) if packets else None,
            "us_per_packet_net": (round(1e6 * (cpu - self.idle_cpu * wall) / packets, 1)
                                  if packets else None),
            "idle_cpu_pct": round(100 * self.idle_cpu, 2),
            "publisher_kbps": round((pub_b["video"]["bytes"] - pub_a["video"]["bytes"])
                                    * 8 / pub_dt / 1000, 1),
            "publisher_fps": round((pub_b["frames_sent"] - pub_a["frames_sent"]) / pub_dt, 1),
            "publisher_restarts": pub_b["restarts"] - pub_a["restarts"],
            "publisher_restarts_total": pub_b["restarts"],
            "decoding_viewer_fps": round(fps(dec_a, dec_b, 0), 1),
            "decoding_viewer_counters": counters,
            "picture_ok": picture_ok(counters),
            "frames_skipped": counters["skipped"],
            "load_viewer_fps_min": round(min(load_fps), 1) if load_fps else None,
            "load_viewers_below_min_fps": sum(1 for f in load_fps if f < MIN_FPS),
            "load_viewers_stalled": sum(1 for f in load_fps if f == 0),
            "load_viewers_disconnected": sum(1 for s in loads_b for v in s["viewers"]
                                             if v["connection"] != "connected"),
            "load_viewer_packets_received": load_packets,
            "harness_cpu_pct": round(100 * (viewers_cpu(b) - viewers_cpu(a)) / wall, 1),
            "publisher_cpu_pct": round(100 * (pub_b["cpu"] - pub_a["cpu"]) / pub_dt, 1),
            "machine_busy_pct": busy_pct(a["machine"], b["machine"]),
        }


async def forwarding_path(http: aiohttp.ClientSession, url: str) -> str | None:
    """The node's forwarding path ("native" or "python", from /healthz); None elsewhere."""
    try:
        async with http.get(f"{url}/healthz") as resp:
            return (await resp.json()).get("forwarding") if resp.status == 200 else None
    except (aiohttp.ClientError, ValueError):
        return None


def picture_ok(counters: dict) -> bool:
    """Frames were decoded, every counter was readable, none went backwards."""
    return (counters["decoded"] > 0 and counters["unreadable"] == 0
            and counters["backwards"] == 0)


def viewers_cpu(sample: dict) -> float:
    """CPU seconds of the viewer processes (decoding and load) at a sample."""
    return sum(snap["cpu"] for snap in sample["snaps"][1:])


def summarize(rows: list[dict]) -> dict:
    """Marginal cost from the slope of server CPU (cores) against packets/s."""
    for prev, row in zip(rows, rows[1:]):
        d_pps = row["packets_per_s"] - prev["packets_per_s"]
        d_cpu = (row["server_cpu_pct"] - prev["server_cpu_pct"]) / 100
        row["marginal_us_per_packet"] = round(1e6 * d_cpu / d_pps, 1) if d_pps > 0 else None
    if not rows:
        return {}
    last = rows[-1]
    summary = {"max_subscribers": last["subscribers"],
               "us_per_packet_at_max": last["us_per_packet"],
               "us_per_packet_net_at_max": last["us_per_packet_net"],
               "idle_cpu_pct": last["idle_cpu_pct"],
               "all_viewers_min_fps": all(r["decoding_viewer_fps"] >= MIN_FPS
                                          and r["load_viewers_below_min_fps"] == 0
                                          for r in rows),
               "picture_ok": all(r["picture_ok"] for r in rows),
               "publisher_restarts": last["publisher_restarts_total"],
               # steps where the box had no idle CPU: viewers and server were starved,
               # fps and packet counts there say more about the box than about the server
               "saturated_steps": [r["load_viewers"] for r in rows
                                   if (r["machine_busy_pct"] or 0) >= SATURATED_PCT]}
    if len(rows) >= 2:
        xs = [r["packets_per_s"] for r in rows]
        ys = [r["server_cpu_pct"] / 100 for r in rows]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / \
            sum((x - mx) ** 2 for x in xs)
        per_subscriber_pps = last["packets_per_s"] / last["subscribers"]
        core_per_subscriber = slope * per_subscriber_pps
        summary.update({
            "marginal_us_per_packet": round(1e6 * slope, 1),
            "fixed_cpu_pct": round(100 * (my - slope * mx), 1),
            "packets_per_s_per_subscriber": round(per_subscriber_pps, 1),
            "cpu_pct_per_subscriber": round(100 * core_per_subscriber, 3),
            "subscribers_per_core": round(1 / core_per_subscriber) if slope > 0 else None,
        })
    return summary


async def run_server(server: Server, steps: list[int], plan: dict,
                     give_up_fps: float | None = None) -> dict:
    setup = Setup(server)
    rows: list[dict] = []
    stopped_early = None
    path = None
    log(f"{server.name}: starting")
    try:
        await setup.start(plan["idle"])
        async with aiohttp.ClientSession() as http:
            path = await forwarding_path(http, server.url)
            if path:
                log(f"{server.name}: forwarding path {path}")
            for n in steps:
                await setup.add_load_viewers(n - setup.load_viewers)
                await asyncio.sleep(SETTLE)
                row = await setup.measure(http, plan["window"], plan["windows"])
                rows.append(row)
                log(f"{server.name}: N={n:3d}  cpu {row['server_cpu_pct']:6.1f}% "
                    f"(windows {row['window_cpu_pct']})  "
                    f"{row['packets_per_s']:8.1f} pkt/s  {row['us_per_packet']} µs/pkt  "
                    f"decoding viewer {row['decoding_viewer_fps']} fps")
                if row["publisher_restarts_total"]:
                    log(f"{server.name}: the server ended the publisher's session "
                        f"{row['publisher_restarts_total']} time(s) so far; republished")
                if give_up_fps is not None and row["decoding_viewer_fps"] < give_up_fps:
                    stopped_early = (f"decoding viewer at {row['decoding_viewer_fps']} fps "
                                     f"< {give_up_fps}: server saturated")
                    break
    finally:
        await setup.stop()
    result = {"rows": rows, "summary": summarize(rows), "forwarding_path": path}
    if stopped_early:
        result["stopped_early"] = stopped_early
    return result


COLUMNS = [("load_viewers", "N"), ("subscribers", "subs"), ("server_cpu_pct", "cpu%"),
           ("server_sys_pct", "sys%"), ("packets_per_s", "pkt/s"),
           ("forwarded_mbps", "Mbit/s"), ("us_per_packet", "µs/pkt"),
           ("us_per_packet_net", "µs/pkt net"),
           ("marginal_us_per_packet", "marg µs/pkt"), ("decoding_viewer_fps", "dec fps"),
           ("picture_ok", "picture ok"), ("frames_skipped", "skipped"),
           ("load_viewer_fps_min", "min load fps"), ("publisher_kbps", "pub kbit/s"),
           ("harness_cpu_pct", "viewers cpu%"), ("machine_busy_pct", "machine busy%")]


def report(results: dict) -> str:
    out = [f"forwarding: VP8 {SIZE} {FPS} fps, encoder at {BITRATE // 1000} kbit/s, "
           f"median of {results['config']['windows']} × {results['config']['window_s']} s "
           f"windows; N load viewers + 1 decoding viewer; "
           f"target ≤ {TARGET_US_PER_PACKET:g} µs/packet, every viewer ≥ {MIN_FPS:g} fps"]
    for name in ("node", "node_python", "baseline"):
        part = results.get(name)
        if part is None:
            continue
        path = f" (forwarding path: {part['forwarding_path']})" if part.get("forwarding_path") else ""
        out += ["", f"{name}{path}:", table(COLUMNS, part["rows"])]
        s = part["summary"]
        if "marginal_us_per_packet" in s:
            out.append(f"  fit: {s['marginal_us_per_packet']} µs per packet marginal "
                       f"+ {s['fixed_cpu_pct']}% fixed; {s['cpu_pct_per_subscriber']}% cpu "
                       f"per subscriber ({s['packets_per_s_per_subscriber']} pkt/s) → "
                       f"{s['subscribers_per_core']} subscribers per core")
        if s:
            out.append(f"  at {s['max_subscribers']} subscribers: {s['us_per_packet_at_max']}"
                       f" µs/packet ({s['us_per_packet_net_at_max']} net of the idle "
                       f"{s['idle_cpu_pct']}% cpu); every viewer ≥ {MIN_FPS:g} fps: {s['all_viewers_min_fps']};"
                       f" picture ok: {s['picture_ok']}")
        if s.get("saturated_steps"):
            out.append(f"  WARNING: the machine was ≥ {SATURATED_PCT:g}% busy at N = "
                       f"{s['saturated_steps']} (other work on the box?): fps and rates "
                       f"there are unreliable")
        if s.get("publisher_restarts"):
            out.append(f"  WARNING: the server ended the publisher's session "
                       f"{s['publisher_restarts']} time(s); it was republished")
        if part.get("stopped_early"):
            out.append(f"  stopped early: {part['stopped_early']}")
    if "comparison" in results:
        out += ["", "comparison: " + ", ".join(f"{k} {v}" for k, v in
                                              results["comparison"].items())]
    return "\n".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run (~30 s)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--native-only", action="store_true",
                        help="no run of the node on its Python path (always so with --quick)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    results = {
        "benchmark": "forwarding",
        "quick": args.quick,
        "config": {"codec": "vp8", "size": SIZE, "fps": FPS, "encoder_bitrate": BITRATE,
                   "window_s": plan["window"], "windows": plan["windows"],
                   "node_steps": plan["node"],
                   "baseline_steps": [] if args.skip_baseline else plan["baseline"],
                   "decoding_viewers": 1},
        "target": {"us_per_packet": TARGET_US_PER_PACKET, "min_fps": MIN_FPS,
                   "ratio_to_baseline": TARGET_RATIO},
        "machine": machine(),
    }
    started = time.monotonic()
    results["node"] = await run_server(Server.node(), plan["node"], plan)
    if not (args.quick or args.native_only):
        results["node_python"] = await run_server(
            Server.node("node-python", {"UNBROKEN_NATIVE": "0"}), plan["node"], plan)
    if args.skip_baseline:
        results["baseline"] = {"rows": [], "summary": {}}
    else:
        results["baseline"] = await run_server(Server.baseline(), plan["baseline"], plan,
                                               BASELINE_GIVE_UP_FPS)
    results["comparison"] = compare(results["node"], results["baseline"])
    if "node_python" in results:
        results["comparison"]["python_path_to_native_at_max"] = _ratio(
            results["node_python"]["summary"].get("us_per_packet_at_max"),
            results["node"]["summary"].get("us_per_packet_at_max"))
    results["duration_s"] = round(time.monotonic() - started, 1)
    path = write_results("forwarding", results, args.quick)
    log(report(results))
    log(f"\nwritten to {path}")
    print(json.dumps(results))
    if not all(part["summary"].get("picture_ok", True)
               for part in (results["node"], results.get("node_python", results["node"]),
                            results["baseline"])):
        sys.exit("forwarding: the decoding viewer saw a wrong picture (see picture ok)")


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 1) if a and b else None


def compare(node: dict, baseline: dict) -> dict:
    """Node against baseline at the largest N both measured."""
    base_rows = {r["load_viewers"]: r for r in baseline["rows"]}
    common = [r for r in node["rows"] if r["load_viewers"] in base_rows]
    if not common:
        return {}
    n = common[-1]
    b = base_rows[n["load_viewers"]]
    out = {"at_load_viewers": n["load_viewers"],
           "cpu_ratio_baseline_to_node": round(b["server_cpu_pct"] / n["server_cpu_pct"], 1)
           if n["server_cpu_pct"] else None}
    if n["us_per_packet"] and b["us_per_packet"]:
        out["us_per_packet_ratio"] = round(b["us_per_packet"] / n["us_per_packet"], 1)
    ns, bs = node["summary"], baseline["summary"]
    # per packet beyond the fixed cost of ingesting the stream: the fits' slopes
    out["marginal_us_per_packet_ratio"] = _ratio(bs.get("marginal_us_per_packet"),
                                                 ns.get("marginal_us_per_packet"))
    if ns.get("subscribers_per_core") and bs.get("subscribers_per_core"):
        out["subscribers_per_core"] = {"node": ns["subscribers_per_core"],
                                       "baseline": bs["subscribers_per_core"]}
    return out


if __name__ == "__main__":
    asyncio.run(main())
