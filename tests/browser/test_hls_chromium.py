"""Chromium plays the node's HLS with hls.js (from npm), from another origin (CORS).

hls.js comes from npm at the version package.json pins (scripts/install-system.sh puts it
into the project's node_modules).
"""

import asyncio
import itertools
import shutil
import subprocess
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

import unbroken.web
from test_restore_chromium import wait_js  # the shared poll helper

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

# package.json pins it; scripts/install-system.sh installs it into the project's node_modules
PROJECT = Path(__file__).resolve().parents[2]
WEB_DIR = Path(unbroken.web.__file__).parent
_names = itertools.count()

PAGE = """<!doctype html><title>hls.js</title>
<video id="v" muted autoplay playsinline></video>
<script src="/hls.min.js"></script>
<script type="module">
import { readCounter } from '/web/framecode.js';
window.readCounter = readCounter;
window.play = (src, lowLatencyMode) => {
  const video = document.getElementById('v');
  const hls = new Hls({ lowLatencyMode, liveDurationInfinity: true });
  window.hls = hls;
  window.hlsErrors = [];
  hls.on(Hls.Events.ERROR, (_e, d) => window.hlsErrors.push(`${d.type}/${d.details}/${d.fatal}`));
  hls.loadSource(src);
  hls.attachMedia(video);
  video.play().catch(() => {});
};
window.ready = true;
</script>"""

# samples the counter shown by the <video> every 50 ms for `ms`, with the wall clock
JS_SAMPLE = """async (ms) => {
  const v = document.getElementById('v');
  const out = [];
  const end = performance.now() + ms;
  while (performance.now() < end) {
    out.push([window.readCounter(v), Date.now(), v.currentTime]);
    await new Promise((r) => setTimeout(r, 50));
  }
  return out;
}"""


def hlsjs_dist(missing) -> Path:
    """hls.min.js from npm (package.json; installed here when the set-up has not)."""
    dist = PROJECT / "node_modules" / "hls.js" / "dist" / "hls.min.js"
    if dist.exists():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        missing("npm is not available to install hls.js")
    result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock",
                             "--loglevel=error"], cwd=PROJECT,
                            capture_output=True, text=True, timeout=180)
    if result.returncode != 0 or not dist.exists():
        pytest.fail(f"npm install hls.js failed: {result.stderr[-2000:]}")
    return dist


@pytest_asyncio.fixture(loop_scope="session")
async def hls_site(missing):
    """A page with hls.js and the frame-counter reader, on its own origin."""
    dist = hlsjs_dist(missing)

    async def index(_request):
        return web.Response(text=PAGE, content_type="text/html")

    async def hlsjs(_request):
        return web.FileResponse(dist)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/hls.min.js", hlsjs)
    app.router.add_static("/web/", WEB_DIR)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def advancing(samples) -> list[int]:
    # the very first reads may catch a frame not painted yet (all black reads as 0)
    seen = [c for c, _, _ in samples[3:] if c is not None]
    assert len(seen) >= 10, samples
    assert all(0 <= (b - a) % 65536 <= 10 for a, b in zip(seen, seen[1:])), str(seen)
    assert seen[-1] != seen[0], seen
    return seen


async def start_hls(open_page, hls_site, src, low_latency=True):
    page = await open_page(hls_site + "/", import_sdk=False)
    await wait_js(page, "() => window.ready === true")
    await page.evaluate("([src, ll]) => window.play(src, ll)", [src, low_latency])
    return page


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_hlsjs_plays_the_stream(node, open_page, hls_site, codec):
    from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
    from unbroken.client.whip import WhipPublisher

    stream = f"hls-{codec}-{next(_names)}"
    pub = await WhipPublisher(node.url, stream, tracks=[TestPatternVideoTrack(),
                                                        ToneAudioTrack()],
                              video_codec=codec).start()
    try:
        page = await start_hls(open_page, hls_site, f"{node.url}/hls/{stream}/index.m3u8")
        await wait_js(page, "() => { const v = document.getElementById('v'); "
                            "return v.currentTime > 1 && v.videoWidth === 640; }", timeout=20)
        samples = await page.evaluate(JS_SAMPLE, 1500)
        advancing(samples)
        assert samples[-1][2] > samples[0][2] + 0.8  # the playhead moves in real time
        errors = await page.evaluate("() => window.hlsErrors.filter((e) => e.endsWith('true'))")
        assert errors == [], errors
    finally:
        await pub.stop()


async def test_hlsjs_plays_on_across_a_publisher_restore(node, open_page, hls_site):
    from unbroken.client.testsrc import TestPatternVideoTrack
    from unbroken.client.whip import WhipPublisher

    stream = f"hls-restore-{next(_names)}"

    async def publish():
        return await WhipPublisher(node.url, stream, tracks=[TestPatternVideoTrack()],
                                   video_codec="h264").start()

    pub = await publish()
    try:
        page = await start_hls(open_page, hls_site, f"{node.url}/hls/{stream}/index.m3u8")
        await wait_js(page, "() => document.getElementById('v').currentTime > 1", timeout=20)
        await pub.stop()
        await asyncio.sleep(0.3)
        pub = await publish()  # counters restart at 0 after a discontinuity
        samples = await wait_js(page, """async (js) => {
          const s = await (eval(js))(1000);
          const c = s.map((x) => x[0]).filter((x) => x !== null);
          return c.length >= 10 && c[c.length - 1] < 400 && s; }""", JS_SAMPLE, timeout=20)
        seen = advancing(samples)
        assert seen[-1] < 400
        errors = await page.evaluate("() => window.hlsErrors.filter((e) => e.endsWith('true'))")
        assert errors == [], errors
    finally:
        await pub.stop()
