"""Time to first frame: WHEP POST → first decoded video frame, p50/p95 over sequential joins.

    python bench/ttff.py [--quick]

A publisher (test pattern 640x360 at 30 fps, in its own process) sends H264,
then VP8, to the server. A decoding viewer in this process joins, waits for
its first decoded frame, leaves, and the next one joins after a short pause
(50 joins per codec against the node, 20 against the MediaRelay baseline of
bench/relay_baseline.py). One warm-up join per codec is not counted.

Per join, on the monotonic clock:
  offer      start → POST sent (createOffer + ICE gathering, before the POST)
  answer     POST → 201 answer received
  connected  POST → connection state "connected" (ICE + DTLS)
  1st packet POST → first video RTP packet at the viewer
  first      POST → first decoded frame (the figure with the target, p50 ≤ 150 ms)
  total      start → first decoded frame
Figures go to stdout as one JSON object (also bench/results/ttff.json, or
ttff.quick.json with --quick); the tables go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from _harness import (Agent, Server, busy_pct, machine, machine_busy, percentile, table,
                      write_results)

from unbroken.client.whep import WhepError, WhepViewer

CODECS = ("h264", "vp8")
SIZE = "640x360"
FPS = 30
BITRATE = 1_000_000
PAUSE = 0.3  # seconds between a viewer leaving and the next joining
FIRST_FRAME_TIMEOUT = 10.0
TARGET_P50_MS = 150.0
FULL = {"node": 50, "baseline": 20}
QUICK = {"node": 5, "baseline": 3}
PHASES = ("offer", "answer", "connected", "first_packet", "first", "total")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class TimedViewer(WhepViewer):
    """A decoding WHEP viewer that also notes when the answer, "connected" and the first
    video RTP packet arrived."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, on_state=self._note_state, **kwargs)
        self.answered_at: float | None = None
        self.connected_at: float | None = None
        self.first_packet_at: float | None = None

    def _rtp_counter(self, kind: str):
        counter = super()._rtp_counter(kind)
        if kind != "video":
            return counter

        def count(packet) -> None:
            if self.first_packet_at is None:
                self.first_packet_at = time.monotonic()
            counter(packet)

        return count

    async def _post_offer(self, offer_sdp: str) -> tuple[str, str]:
        answer = await super()._post_offer(offer_sdp)
        self.answered_at = time.monotonic()
        return answer

    def _note_state(self, state: str) -> None:
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()


async def join(url: str, stream: str) -> dict:
    """One viewer: join, wait for the first decoded frame, leave; returns its timings (ms)."""
    viewer = TimedViewer(url, stream, decode=True, audio=False)
    started = time.monotonic()
    try:
        await viewer.start()
        await viewer.wait_first_frame(FIRST_FRAME_TIMEOUT)
    finally:
        await viewer.stop()
    posted = viewer.posted_at

    def ms(t: float | None, since: float) -> float | None:
        return None if t is None else round(1000 * (t - since), 1)

    return {"offer": ms(posted, started), "answer": ms(viewer.answered_at, posted),
            "connected": ms(viewer.connected_at, posted),
            "first_packet": ms(viewer.first_packet_at, posted),
            "first": ms(viewer.first_frame_at, posted),
            "total": ms(viewer.first_frame_at, started),
            "counter_readable": bool(viewer.counters) and viewer.counters[0] is not None,
            "codec": viewer.codec}


async def wait_live(url: str, stream: str, timeout: float = 10.0) -> None:
    """Warm-up join, retried while the server says the stream is not live yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await join(url, stream)
            return
        except WhepError as exc:
            if exc.status != 409 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def measure(server: Server, codec: str, joins: int) -> dict:
    """``joins`` sequential joins against a publisher of ``codec`` on a running server."""
    stream = f"ttff-{codec}"
    publisher = Agent(f"ttff-{server.name}-publisher-{codec}",
                      ["publish", server.url, stream, "--codec", codec, "--size", SIZE,
                       "--fps", str(FPS), "--bitrate", str(BITRATE)])
    samples, errors = [], []
    try:
        await publisher.start()
        await wait_live(server.url, stream)
        busy_at_start = machine_busy()
        for _ in range(joins):
            await asyncio.sleep(PAUSE)
            try:
                samples.append(await join(server.url, stream))
            except (TimeoutError, WhepError, ConnectionError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        busy = busy_pct(busy_at_start, machine_busy())
    finally:
        await publisher.stop()
    result = {"codec": codec, "joins": joins, "ok": len(samples), "errors": errors,
              "machine_busy_pct": busy,
              "counter_readable": sum(s["counter_readable"] for s in samples),
              "viewer_codecs": sorted({s["codec"] for s in samples if s["codec"]})}
    for phase in PHASES:
        values = [s[phase] for s in samples if s[phase] is not None]
        result[phase] = {"p50": _round(percentile(values, 50)),
                         "p95": _round(percentile(values, 95)),
                         "min": min(values, default=None), "max": max(values, default=None)}
    result["samples_first_ms"] = [s["first"] for s in samples]
    log(f"{server.name} {codec}: first frame p50 {result['first']['p50']} ms, "
        f"p95 {result['first']['p95']} ms ({len(samples)}/{joins} ok)")
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def run_server(server: Server, joins: int) -> list[dict]:
    log(f"{server.name}: starting")
    await server.start()
    try:
        return [await measure(server, codec, joins) for codec in CODECS]
    finally:
        await server.stop()


def report(results: dict) -> str:
    rows = []
    for name in ("node", "baseline"):
        for r in results[name]:
            row = {"server": name, "codec": r["codec"], "joins": f"{r['ok']}/{r['joins']}",
                   "machine_busy_pct": r["machine_busy_pct"]}
            for phase in PHASES:
                row[f"{phase}_p50"] = r[phase]["p50"]
                row[f"{phase}_p95"] = r[phase]["p95"]
            rows.append(row)
    columns = [("server", "server"), ("codec", "codec"), ("joins", "ok"),
               ("first_p50", "first p50"), ("first_p95", "first p95"),
               ("offer_p50", "offer p50"), ("answer_p50", "answer p50"),
               ("answer_p95", "answer p95"), ("connected_p50", "connected p50"),
               ("connected_p95", "connected p95"), ("first_packet_p50", "1st packet p50"),
               ("first_packet_p95", "1st packet p95"), ("total_p50", "total p50"),
               ("total_p95", "total p95"), ("machine_busy_pct", "machine busy%")]
    out = [f"time to first frame (ms, from the WHEP POST unless 'offer'/'total'); "
           f"target p50 ≤ {TARGET_P50_MS:g} ms", table(columns, rows)]
    for name in ("node", "baseline"):
        for r in results[name]:
            if r["errors"]:
                out.append(f"{name} {r['codec']}: {len(r['errors'])} failed joins, "
                           f"first: {r['errors'][0]}")
    verdict = results["node_meets_target"]
    out.append(f"node meets p50 ≤ {TARGET_P50_MS:g} ms for every codec: {verdict}")
    return "\n".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run (~30 s)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    results = {
        "benchmark": "ttff",
        "quick": args.quick,
        "config": {"size": SIZE, "fps": FPS, "encoder_bitrate": BITRATE, "pause_s": PAUSE,
                   "joins": {"node": plan["node"],
                             "baseline": 0 if args.skip_baseline else plan["baseline"]}},
        "target": {"first_frame_p50_ms": TARGET_P50_MS},
        "machine": machine(),
    }
    results["node"] = await run_server(Server.node(), plan["node"])
    results["baseline"] = ([] if args.skip_baseline
                           else await run_server(Server.baseline(), plan["baseline"]))
    results["node_meets_target"] = all(
        r["first"]["p50"] is not None and r["first"]["p50"] <= TARGET_P50_MS
        for r in results["node"])
    results["duration_s"] = round(time.monotonic() - started, 1)
    path = write_results("ttff", results, args.quick)
    log(report(results))
    log(f"\nwritten to {path}")
    print(json.dumps(results))
    measured = results["node"] + results["baseline"]
    if any(r["errors"] or r["counter_readable"] < r["ok"] for r in measured):
        sys.exit("ttff: joins failed or a first frame had no readable counter")


if __name__ == "__main__":
    asyncio.run(main())
