"""HLS benchmark: glass-to-glass latency (p50/p95) and node CPU per HLS stream.

    python bench/hls.py [--quick] [--no-browser]

Latency: a test-pattern publisher (640x360, 30 fps, frame counter drawn into the
picture) runs in this process and notes the wall-clock time each frame is made. A
player reads the counter of every frame it shows; latency = shown − made.
  - python-ll / python-hls: unbroken's HlsPlayer (decodes with PyAV, shows each frame
    as soon as decoded, no buffering) on Low-Latency HLS (0.5 s parts, blocking
    reloads) / plain HLS (node with --hls-part-duration 0: whole 1 s segments);
  - hlsjs: hls.js in Chromium (lowLatencyMode on/off, otherwise its defaults),
    counters read at each presented frame (requestVideoFrameCallback); hlsjs-catchup:
    the same with maxLiveSyncPlaybackRate 1.5 (it speeds up playback by up to 50 % to
    get back to its target latency after a stall); `stalls` counts hls.js stalls.
The first seconds (start-up burst) are not counted. Targets: ≤ 4 s plain HLS,
≤ 2 s LL-HLS (hls.js, the realistic player).

CPU: N publishers (agents in their own processes, H264 then VP8, with Opus audio)
on a node; node CPU over a window without HLS viewers, then with one HLS viewer per
stream (packaging on: H264 passthrough, or VP8/Opus → H264/AAC transcoding). Per
stream = (with − without) / N, in % of one core; the packager worker threads' own CPU
(from /hls/{stream}/stats.json) is given too. Target: H264 ≤ 5 % of a core per stream.

Figures go to stdout as JSON (also bench/results/hls.json or hls.quick.json), tables
to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from _harness import Agent, Server, machine, percentile, table, write_results

from unbroken.client.hls import HlsPlayer
from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
from unbroken.client.whip import WhipPublisher

TARGETS = {"hls_latency_s": 4.0, "llhls_latency_s": 2.0, "h264_cpu_pct_per_stream": 5.0}
PRIME = 4.0  # seconds of packaging before the players join
WARMUP = 4.0  # seconds of playback not counted (start-up burst, first segments)
HLSJS_VERSION = "1.7.4"
HLSJS_CACHE = Path(os.environ.get("HLSJS_CACHE",
                                  Path.home() / ".cache" / "unbroken-tests" / "hlsjs"))
CHROMIUM = "/usr/bin/chromium"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StampedPattern(TestPatternVideoTrack):
    """The test pattern, noting when (wall clock) each counter value was made."""

    def __init__(self) -> None:
        super().__init__()
        self.made_at: dict[int, float] = {}

    async def recv(self):
        frame = await super().recv()
        self.made_at[(self.frames_sent - 1) % 65536] = time.time()
        return frame


def summary(latencies: list[float]) -> dict:
    return {"samples": len(latencies),
            "p50_s": _r(percentile(latencies, 50)), "p95_s": _r(percentile(latencies, 95)),
            "min_s": _r(min(latencies, default=None)), "max_s": _r(max(latencies, default=None))}


def _r(x):
    return None if x is None else round(x, 3)


# --- latency ---------------------------------------------------------------------------

async def python_latency(url: str, stream: str, track: StampedPattern, low_latency: bool,
                         seconds: float) -> dict:
    latencies: list[float] = []
    started = time.monotonic()

    def on_frame(frame, counter):
        made = track.made_at.get(counter) if counter is not None else None
        if made is not None and time.monotonic() - started > WARMUP:
            latencies.append(time.time() - made)

    player = await HlsPlayer(url, stream, on_frame=on_frame, low_latency=low_latency).start()
    try:
        await asyncio.sleep(seconds + WARMUP)
    finally:
        await player.stop()
    return {"mode": player.mode, **summary(latencies)}


PAGE = """<!doctype html><video id="v" muted autoplay playsinline></video>
<script src="/hls.min.js"></script>
<script type="module">
import { readCounter } from '/web/framecode.js';
window.shown = [];
window.stalls = 0;
window.play = (src, config) => {
  const video = document.getElementById('v');
  const hls = new Hls(config);
  hls.on(Hls.Events.ERROR, (_e, d) => {
    if (d.details === 'bufferStalledError') window.stalls += 1;
  });
  hls.loadSource(src);
  hls.attachMedia(video);
  video.play().catch(() => {});
  const onFrame = () => {
    window.shown.push([readCounter(video), Date.now()]);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
};
window.ready = true;
</script>"""


def hlsjs_dist() -> Path | None:
    dist = HLSJS_CACHE / "node_modules" / "hls.js" / "dist" / "hls.min.js"
    if not dist.exists() and shutil.which("npm"):
        subprocess.run(["npm", "install", "--prefix", str(HLSJS_CACHE), "--no-audit",
                        "--no-fund", "--loglevel=error", f"hls.js@{HLSJS_VERSION}"],
                       capture_output=True, timeout=180)
    return dist if dist.exists() else None


async def browser_latency(url: str, stream: str, track: StampedPattern, config: dict,
                          seconds: float, dist: Path) -> dict:
    from aiohttp import web
    from playwright.async_api import async_playwright

    import unbroken.web

    app = web.Application()
    app.router.add_get("/", lambda _r: web.Response(text=PAGE, content_type="text/html"))
    app.router.add_get("/hls.min.js", lambda _r: web.FileResponse(dist))
    app.router.add_static("/web/", str(Path(unbroken.web.__file__).parent))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    page_url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--headless", "--no-sandbox", "--disable-gpu",
                      "--autoplay-policy=no-user-gesture-required"])
            page = await browser.new_page()
            await page.goto(page_url)
            for _ in range(100):
                if await page.evaluate("() => window.ready === true"):
                    break
                await asyncio.sleep(0.05)
            played_at = time.time()
            await page.evaluate("([s, c]) => window.play(s, c)",
                                [f"{url}/hls/{stream}/index.m3u8", config])
            await asyncio.sleep(seconds + WARMUP)
            shown = await page.evaluate("() => window.shown")
            stalls = await page.evaluate("() => window.stalls")
            await browser.close()
    finally:
        await runner.cleanup()
    latencies = []
    first = shown[0][1] / 1000 if shown else 0
    for counter, at_ms in shown:
        at = at_ms / 1000
        made = track.made_at.get(counter) if counter is not None else None
        if made is not None and at - first > WARMUP:
            latencies.append(at - made)
    return {"mode": "ll-hls" if config["lowLatencyMode"] else "hls", "hlsjs_config": config,
            "stalls": stalls, "first_frame_s": _r(first - played_at) if shown else None,
            **summary(latencies)}


async def latency_runs(args) -> list[dict]:
    rows = []
    seconds = 8.0 if args.quick else 25.0
    dist = None
    if not args.no_browser and os.path.exists(CHROMIUM):
        dist = hlsjs_dist()
    for config, extra in (("ll", []), ("plain", ["--hls-part-duration", "0"])):
        server = Server.node()
        server.argv += extra
        await server.start()
        codecs = ("h264",) if args.quick or config == "plain" else ("h264", "vp8")
        try:
            for codec in codecs:
                track = StampedPattern()
                stream = f"lat-{codec}"
                pub = await WhipPublisher(server.url, stream, tracks=[track, ToneAudioTrack()],
                                          video_codec=codec).start()
                try:
                    # viewers join a stream that is already packaged (the first request
                    # starts on-demand packaging; the playlist then grows from nothing)
                    async with aiohttp.ClientSession() as http:
                        async with http.get(f"{server.url}/hls/{stream}/index.m3u8") as r:
                            await r.read()
                    await asyncio.sleep(PRIME)
                    low = config == "ll"
                    players = [("python", python_latency(server.url, stream, track, low,
                                                         seconds))]
                    if dist is not None:
                        players.append(("hlsjs", browser_latency(
                            server.url, stream, track, {"lowLatencyMode": low}, seconds,
                            dist)))
                        if low:  # hls.js may play a little faster to reach its target
                            players.append(("hlsjs-catchup", browser_latency(
                                server.url, stream, track,
                                {"lowLatencyMode": True, "maxLiveSyncPlaybackRate": 1.5},
                                seconds, dist)))
                    for player, run in players:
                        log(f"latency: {player} {config} {codec} ...")
                        try:
                            result = await run
                        except Exception as exc:  # noqa: BLE001 - report, go on
                            result = {"error": repr(exc)[:300]}
                        rows.append({"player": player, "playlist": config, "codec": codec,
                                     **result})
                finally:
                    await pub.stop()
        finally:
            await server.stop()
    return rows


# --- CPU ------------------------------------------------------------------------------

async def worker_cpu(http: aiohttp.ClientSession, url: str, streams: list[str]) -> float:
    total = 0.0
    for stream in streams:
        async with http.get(f"{url}/hls/{stream}/stats.json") as r:
            if r.status == 200:
                total += (await r.json())["worker_cpu_s"]
    return total


async def cpu_run(codec: str, n: int, window: float) -> dict:
    server = await Server.node().start()
    publishers = [Agent(f"hls-{codec}-pub{i}", ["publish", server.url, f"s{i}", "--codec",
                                                  codec, "--audio"]) for i in range(n)]
    streams = [f"s{i}" for i in range(n)]
    players: list[HlsPlayer] = []
    try:
        await asyncio.gather(*(p.start() for p in publishers))
        await asyncio.sleep(3.0)
        c0 = sum(server.cpu())
        await asyncio.sleep(window)
        without = (sum(server.cpu()) - c0) / window
        players = [await HlsPlayer(server.url, s, decode=False).start() for s in streams]
        await asyncio.sleep(4.0)  # keyframes, first segments, transcoders warm
        async with aiohttp.ClientSession() as http:
            w0 = await worker_cpu(http, server.url, streams)
            c0 = sum(server.cpu())
            await asyncio.sleep(window)
            with_hls = (sum(server.cpu()) - c0) / window
            workers = (await worker_cpu(http, server.url, streams) - w0) / window
            async with http.get(f"{server.url}/hls/s0/stats.json") as r:
                mode = (await r.json())["mode"]
        frames = sum(p.frames for p in players)
        return {"codec": codec, "streams": n, "mode": mode, "window_s": window,
                "node_cpu_without_hls_pct": round(100 * without, 1),
                "node_cpu_with_hls_pct": round(100 * with_hls, 1),
                "cpu_pct_per_stream": round(100 * (with_hls - without) / n, 2),
                "packager_thread_cpu_pct_per_stream": round(100 * workers / n, 2),
                "hls_frames_received": frames}
    finally:
        for p in players:
            await p.stop()
        await asyncio.gather(*(p.stop() for p in publishers), return_exceptions=True)
        await server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (CI smoke)")
    parser.add_argument("--no-browser", action="store_true", help="skip hls.js in Chromium")
    args = parser.parse_args()
    results = {"benchmark": "hls", "quick": args.quick, "targets": TARGETS,
               "machine": machine(),
               "config": {"segment_s": 1.0, "part_s": 0.5, "size": "640x360", "fps": 30,
                          "warmup_s": WARMUP}}
    results["latency"] = await latency_runs(args)
    n = 1 if args.quick else 2
    window = 6.0 if args.quick else 15.0
    results["cpu"] = []
    for codec in ("h264", "vp8"):
        log(f"cpu: {codec} x{n} ...")
        try:
            results["cpu"].append(await cpu_run(codec, n, window))
        except Exception as exc:  # noqa: BLE001
            results["cpu"].append({"codec": codec, "error": repr(exc)[:300]})
    path = write_results("hls", results, args.quick)
    log(table([("player", "player"), ("playlist", "playlist"), ("codec", "codec"),
               ("samples", "frames"), ("p50_s", "p50 s"), ("p95_s", "p95 s"),
               ("max_s", "max s"), ("stalls", "stalls"), ("first_frame_s", "1st frame s")],
              results["latency"]))
    log("")
    log(table([("codec", "codec"), ("mode", "mode"), ("streams", "streams"),
               ("node_cpu_without_hls_pct", "node % (no HLS)"),
               ("node_cpu_with_hls_pct", "node % (HLS)"),
               ("cpu_pct_per_stream", "% core/stream"),
               ("packager_thread_cpu_pct_per_stream", "packager %/stream")], results["cpu"]))
    log(f"results: {path}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
