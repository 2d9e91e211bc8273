"""Real Chromium against a real node process: browser ↔ browser, browser ↔ Python, CORS.

Run: pytest tests/browser -v   (needs /usr/bin/chromium: .ci/install-browser)
"""

import asyncio
import itertools
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

import unbroken.web
from test_restore_chromium import wait_js  # the shared poll helper

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(40)]

CODECS = ["h264", "vp8"]
WEB_DIR = Path(unbroken.web.__file__).parent
_names = itertools.count()


def stream_name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


async def until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Retry an async callable until it returns without raising; return its result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await predicate()
        except Exception as exc:  # noqa: BLE001 - retry anything until the deadline
            if loop.time() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout}s: {exc!r}") from exc
        await asyncio.sleep(interval)


# --- in-page snippets -------------------------------------------------------------------

JS_PUBLISH = """async ({url, stream, token, codec}) => {
  const s = await ub.publish({url, stream, token, videoCodec: codec || undefined});
  window.sessions.push(s);
  window.pub = s;
  return s.location;
}"""

# Plays into a fresh muted <video>; retries while the node answers 409 (not live yet).
JS_PLAY = """async ({url, stream, token}) => {
  const v = document.createElement('video');
  v.muted = true;
  document.body.append(v);
  window.video = v;
  const deadline = performance.now() + 10000;
  for (;;) {
    try {
      const s = await ub.play({url, stream, token, video: v});
      window.sessions.push(s);
      window.view = s;
      return s.location;
    } catch (e) {
      if (e.status !== 409 || performance.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}"""

JS_PUB_STATS = "async () => ub.videoStats(window.pub.pc)"
JS_VIEW_STATS = """async () => {
  const s = await ub.videoStats(window.view.pc);
  s.videoWidth = window.video.videoWidth;
  s.videoHeight = window.video.videoHeight;
  return s;
}"""


async def publish_in(page, stream, codec, url="", token=None):
    location = await page.evaluate(JS_PUBLISH, {"url": url, "stream": stream, "token": token,
                                                "codec": codec})
    # The browser really encodes and sends the requested codec.
    stats = await wait_js(page, f"async () => {{ const s = await ({JS_PUB_STATS})(); "
                                f"return s.framesSent > 3 && s; }}", timeout=10)
    assert stats["codec"] == codec, stats
    return location


async def assert_playing(page, codec, min_frames=5):
    """framesDecoded advances, the <video> has a size, and the codec is the publisher's."""
    first = await wait_js(page, f"async () => {{ const s = await ({JS_VIEW_STATS})(); "
                                f"return s.framesDecoded >= {min_frames} && s.videoWidth > 0 && s; }}",
                          timeout=10)
    await asyncio.sleep(0.5)
    second = await page.evaluate(JS_VIEW_STATS)
    assert second["framesDecoded"] > first["framesDecoded"], (first, second)
    assert second["videoWidth"] > 0 and second["videoHeight"] > 0, second
    if codec:
        assert second["codec"] == codec, second
    return second


# --- 1. Chromium → node → Chromium ------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
async def test_chromium_publishes_chromium_plays(node, open_page, codec):
    stream = stream_name(f"cc-{codec}")
    pub = await open_page(node.url + "/")
    location = await publish_in(pub, stream, codec)
    assert location.startswith(f"{node.url}/whip/{stream}/"), location

    view = await open_page(node.url + "/")
    location = await view.evaluate(JS_PLAY, {"url": "", "stream": stream, "token": None})
    assert location.startswith(f"{node.url}/whep/{stream}/"), location
    await assert_playing(view, codec)


# --- 2. Chromium → node → Python --------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
async def test_chromium_publishes_python_plays(node, open_page, codec):
    from unbroken.client.whep import WhepError, WhepViewer

    stream = stream_name(f"cp-{codec}")
    pub = await open_page(node.url + "/")
    await publish_in(pub, stream, codec)

    viewer = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while viewer is None:
        try:
            viewer = await WhepViewer(node.url, stream).start()
        except WhepError as exc:  # 409 until the publisher's media is flowing
            if exc.status != 409 or loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)
    try:
        assert viewer.codec.lower() == f"video/{codec}", viewer.codec
        await viewer.wait_frames(5, 10)
        first = viewer.frames
        await viewer.wait_frames(first + 10, 5)
        stats = viewer.stats()
        assert stats["frames"] > first and stats["bytes"] > 0, stats
    finally:
        await viewer.stop()


# --- 3. Python → node → Chromium --------------------------------------------------------

JS_COUNTERS = """async (n) => {
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push(fc.readCounter(window.video));
    await new Promise((r) => setTimeout(r, 150));
  }
  return out;
}"""


@pytest.mark.parametrize("codec", CODECS)
async def test_python_publishes_chromium_plays(node, open_page, codec):
    from unbroken.client.testsrc import TestPatternVideoTrack, ToneAudioTrack
    from unbroken.client.whip import WhipPublisher

    stream = stream_name(f"pc-{codec}")
    publisher = await WhipPublisher(node.url, stream, tracks=[TestPatternVideoTrack(), ToneAudioTrack()],
                                    video_codec=codec).start()
    try:
        view = await open_page(node.url + "/")
        await view.evaluate(JS_PLAY, {"url": "", "stream": stream, "token": None})
        await assert_playing(view, codec)
        # The frame counter drawn by the Python source is legible and advancing.
        counters = await wait_js(
            view, f"async () => {{ const c = await ({JS_COUNTERS})(8); "
                  f"return c.filter((x) => x !== null).length >= 6 && c; }}", timeout=10)
        seen = [c for c in counters if c is not None]
        assert all(b >= a for a, b in zip(seen, seen[1:])), counters
        assert seen[-1] > seen[0], counters
    finally:
        await publisher.stop()


# --- 4. CORS: a page on another origin publishes and plays ------------------------------

PAGE = "<!doctype html><title>elsewhere</title><p>another origin</p>"


@pytest_asyncio.fixture(loop_scope="session")
async def other_origin():
    """A trivial site on another port (another origin) serving a page and a copy of /web/."""
    async def index(_request):
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/web/", WEB_DIR)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_cors_other_origin_publishes_and_plays(start_node, open_page, other_origin):
    node = start_node("--token", "s3cret")
    stream = stream_name("cors")
    page = await open_page(other_origin + "/")
    assert await page.evaluate("location.origin") != node.url

    # Authorization + application/sdp → preflight; Location must be exposed to the script.
    location = await publish_in(page, stream, "vp8", url=node.url, token="s3cret")
    assert location.startswith(f"{node.url}/whip/{stream}/"), location

    await page.evaluate(JS_PLAY, {"url": node.url, "stream": stream, "token": "s3cret"})
    await assert_playing(page, "vp8")

    # A wrong token is readable too: status and the server's reason.
    err = await page.evaluate("""async ({url, stream}) => {
      try { await ub.publish({url, stream, token: 'wrong'}); return null; }
      catch (e) { return {status: e.status, reason: e.reason, name: e.name}; }
    }""", {"url": node.url, "stream": stream_name("cors-bad")})
    assert err and err["status"] in (401, 403), err
    assert err["name"] == "UnbrokenError", err

    # Not live: 409 with Retry-After, which must be exposed to a cross-origin script.
    err = await page.evaluate("""async ({url, stream}) => {
      try { await ub.play({url, stream, token: 's3cret'}); return null; }
      catch (e) { return {status: e.status, retryAfter: e.retryAfter}; }
    }""", {"url": node.url, "stream": stream_name("cors-nobody")})
    assert err and err["status"] == 409 and err["retryAfter"] is not None, err

    # DELETE (preflighted, with Authorization) ends both sessions on the node.
    async def sessions():
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{node.url}/api/v1/sessions",
                                headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status == 200
                body = await resp.json()
        return sorted(s["kind"] for s in body["sessions"] if s["stream"] == stream)

    assert len(await sessions()) == 2
    await page.evaluate("async () => { for (const s of window.sessions) await s.stop(); window.sessions = []; }")
    assert await page.evaluate("() => window.pub.pc.connectionState") == "closed"
    assert await sessions() == []


# --- errors and the demo page -----------------------------------------------------------

async def test_play_not_live_is_409_with_retry_after(node, open_page):
    page = await open_page(node.url + "/")
    err = await page.evaluate("""async (stream) => {
      try { await ub.play({stream}); return null; }
      catch (e) { return {status: e.status, retryAfter: e.retryAfter, message: e.message}; }
    }""", stream_name("nobody"))
    assert err and err["status"] == 409, err
    assert err["retryAfter"] is not None, err


async def test_demo_page_publish_and_play(node, open_page):
    stream = stream_name("demo")
    pub = await open_page(node.url + "/", import_sdk=False)
    await pub.fill("#stream", stream)
    await pub.select_option("#codec", "vp8")
    await pub.click("#publish")
    await wait_js(pub, "() => document.querySelector('#status').textContent.includes('connected')")

    view = await open_page(node.url + "/", import_sdk=False)
    await view.fill("#stream", stream)
    await until(lambda: _click_play(view), 10, "demo Play")
    await wait_js(view, "() => /vp8 \\d+x\\d+ .* [1-9]\\d* frames/.test(document.querySelector('#stats').textContent)")
    await view.click("#stop")
    await pub.click("#stop")
    assert await pub.evaluate("document.querySelector('#status').textContent") == "idle"


async def _click_play(view):
    await view.click("#play")
    status = await wait_js(view, "() => { const t = document.querySelector('#status').textContent; "
                                 "return !t.endsWith('connecting') && t; }", timeout=5)
    if "failed" in status:
        raise RuntimeError(status)
