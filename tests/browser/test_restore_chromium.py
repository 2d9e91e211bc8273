"""The browser SDK's Publisher and Subscriber restore by themselves, in Chromium, against
real node processes. The publisher sends a canvas frame counter (web/framecode.js), and
every restore is checked by the counter advancing in the subscriber's <video> after it."""

import asyncio
import itertools
import os
import signal
from dataclasses import fields
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

import unbroken.web
from unbroken.client.options import RestoreOptions


pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

WEB_DIR = Path(unbroken.web.__file__).parent
HLSJS_DIST = WEB_DIR.parent.parent / "node_modules" / "hls.js" / "dist"
_names = itertools.count()

PAGE = """<!doctype html><meta charset="utf-8"><title>restore test</title><body>
<video id="v" muted autoplay playsinline width="320"></video></body>"""

JS_START_PUB = """async ({urls, stream, opts, source}) => {
  window.src = fc.counterStream({fps: 30, ...source});
  window.pubEvents = [];
  window.pub = new ub.Publisher({urls, stream, mediaStream: src.stream, ...opts});
  pub.on('event', (e) => pubEvents.push(e));
  window.sessions.push(pub);
  await pub.start();
  return pub.stats();
}"""

JS_START_SUB = """async ({urls, stream, opts}) => {
  window.subEvents = [];
  window.sub = new ub.Subscriber({urls, stream, video: document.getElementById('v'), ...opts});
  sub.on('event', (e) => subEvents.push(e));
  window.sessions.push(sub);
  const deadline = performance.now() + 10000;
  for (;;) {
    try { await sub.start(); return sub.stats(); } catch (e) {
      if (performance.now() > deadline) throw e;
      window.sub = new ub.Subscriber({urls, stream, video: document.getElementById('v'), ...opts});
      sub.on('event', (e) => subEvents.push(e));
      window.sessions.push(sub);
    }
  }
}"""

# the frame counter shown by the <video> now and `ms` later
JS_COUNTER_ADVANCES = """async (ms) => {
  const v = document.getElementById('v');
  const a = fc.readCounter(v);
  await new Promise((r) => setTimeout(r, ms));
  const b = fc.readCounter(v);
  return a !== null && b !== null && b > a ? [a, b] : null;
}"""


async def wait_js(page, expression: str, arg=None, timeout: float = 10.0, interval: float = 0.1):
    """Poll an (async) JS function until it returns something truthy; return that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = await page.evaluate(expression, arg)
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {expression}; last={last!r}")
        await asyncio.sleep(interval)


def stream_name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest_asyncio.fixture(loop_scope="session")
async def site():
    """The test page and /web/ (with hls.js from node_modules) on their own origin, so the
    page outlives the nodes it talks to."""
    app = web.Application()
    async def index(_request):
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    if HLSJS_DIST.is_dir():
        app.router.add_static("/web/vendor/", HLSJS_DIST)
    app.router.add_static("/web/", WEB_DIR)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield f"http://127.0.0.1:{tcp._server.sockets[0].getsockname()[1]}"
    await runner.cleanup()


async def playing(page, timeout=10.0):
    """The counter in the <video> advances (bounded wait)."""
    return await wait_js(page, JS_COUNTER_ADVANCES, 300, timeout=timeout)


async def events(page, who, kind):
    return await page.evaluate(f"(k) => {who}Events.filter((e) => e.kind === k)", kind)


async def wait_event(page, who, kind, timeout=10.0, count=1):
    return await wait_js(page, f"(k) => {{ const l = {who}Events.filter((e) => e.kind === k); "
                               f"return l.length >= {count} && l; }}", kind, timeout=timeout)


async def pair(open_page, site, urls, stream, pub_opts=None, sub_opts=None, codec="h264"):
    """A page that publishes the counter to `urls` and plays it back from them."""
    page = await open_page(site + "/")
    await page.evaluate(JS_START_PUB, {"urls": urls, "stream": stream,
                                       "opts": {"codec": codec, **(pub_opts or {})}})
    await page.evaluate(JS_START_SUB, {"urls": urls, "stream": stream, "opts": sub_opts or {}})
    await playing(page)
    return page


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


# --- names ----------------------------------------------------------------------------

async def test_names_match_the_vocabulary_and_python_options(node, open_page):
    page = await open_page(node.url + "/")
    names = await page.evaluate("""async () => ({
      session: ub.SESSION_STATES, stream: ub.STREAM_STATES, faults: Object.values(ub.FAULTS),
      elsewhere: ub.TRY_ELSEWHERE, options: ub.RESTORE_DEFAULTS, kinds: ub.EVENT_KINDS })""")
    vocab = await page.evaluate("async () => (await fetch('/api/v1/vocabulary')).json()")
    assert names["session"] == vocab["session_states"]
    assert names["stream"] == vocab["stream_states"]
    assert sorted(names["faults"]) == sorted(vocab["faults"])
    assert sorted(names["elsewhere"]) == sorted(vocab["try_elsewhere"])
    python = RestoreOptions()
    expected = {camel(f.name): getattr(python, f.name) for f in fields(RestoreOptions)}
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()}
    assert names["options"] == expected
    assert set(names["kinds"]) >= {"session", "stream", "restoring", "restored", "gave_up",
                                   "transport"}


# ReattachPolicy(waits_ms, max_ms) as (Python kwargs, JS options): the default, a short
# one, one that never re-attaches, one without waits
REATTACH_POLICIES = [({}, {}),
                     ({"waits_ms": (0, 100, 250), "max_ms": 2000}, {"waitsMs": [0, 100, 250], "maxMs": 2000}),
                     ({"max_ms": 0}, {"maxMs": 0}),
                     ({"waits_ms": ()}, {"waitsMs": []})]
REATTACH_CASES = [(status, tries, elapsed_ms, alive)
                  for status in (None, 200, 401, 404, 410, 429, 500, 502, 503, 504)
                  for tries in (0, 1, 2, 4, 5, 9)
                  for elapsed_ms in (0, 100, 1900, 1999, 2000, 9800, 9999, 10000, 12000)
                  for alive in (True, False)]


async def test_reattach_policy_answers_like_the_python_one(open_page, site):
    """The JS ReattachPolicy (ms) and unbroken.client.reattach.ReattachPolicy (s) give the
    same answer for every case of a table, and the same defaults."""
    from unbroken.client.reattach import RETRY_STATUSES, ReattachPolicy

    page = await open_page(site + "/")
    answers = await page.evaluate("""({policies, cases}) => ({
      retry: ub.RETRY_STATUSES,
      defaults: (({waitsMs, maxMs}) => ({waitsMs, maxMs}))(new ub.ReattachPolicy()),
      answers: policies.map((o) => { const p = new ub.ReattachPolicy(o);
        return cases.map(([s, n, ms, alive]) => p.nextWait(s, n, ms, alive)); }),
    })""", {"policies": [js for _, js in REATTACH_POLICIES], "cases": REATTACH_CASES})
    assert sorted(answers["retry"]) == sorted(RETRY_STATUSES)
    default = ReattachPolicy()
    assert answers["defaults"] == {"waitsMs": list(default.waits_ms), "maxMs": default.max_ms}
    assert default.max_ms == RestoreOptions().reattach_ms
    for (py, _), got in zip(REATTACH_POLICIES, answers["answers"]):
        policy = ReattachPolicy(**py)
        for case, js_ms in zip(REATTACH_CASES, got):
            status, tries, elapsed_ms, alive = case
            want = policy.next_wait(status, tries, elapsed_ms / 1000, alive)
            assert (want is None) == (js_ms is None), (py, case, want, js_ms)
            if want is not None:
                assert js_ms == pytest.approx(want * 1000, abs=1e-6), (py, case, want, js_ms)


CORS = {"Access-Control-Allow-Origin": "*"}

# restore.js's EventStreamWatch on a bare Attempt, re-attaching (or not) with a short policy
JS_WATCH_EVENTS = """async ({url, reattach, alive, maxMs}) => {
  const r = await import('/web/restore.js');
  const attempt = new r.Attempt({options: r.restoreOptions({pingPeriodMs: 100, missingPings: 3})}, url);
  const seen = [];
  const watch = new r.EventStreamWatch(attempt, url, null, (e, d) => seen.push([e, d]), {
    reattach: reattach ? new r.ReattachPolicy({waitsMs: [0, 50], maxMs: maxMs || 10000}) : null,
    mediaAlive: () => alive});
  watch.start();
  window.watched = {attempt, watch, seen};
}"""

JS_WATCHED = """() => ({seen: watched.seen, fault: watched.attempt.fault && watched.attempt.fault.name,
  reattached: watched.watch.reattached, reattaching: watched.watch.reattaching})"""


async def event_server(handler):
    """A scripted server of one session's event stream (CORS: the page is elsewhere)."""
    app = web.Application()
    app.router.add_get("/events", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    return runner, f"http://127.0.0.1:{tcp._server.sockets[0].getsockname()[1]}/events"


async def sse(request, event: str, keepalive_s: float = 0.0):
    """An event stream with `event`, then keep-alives for `keepalive_s` (0: it ends)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **CORS})
    await resp.prepare(request)
    await resp.write(event.encode())
    loop = asyncio.get_running_loop()
    end = loop.time() + keepalive_s
    while loop.time() < end:
        await asyncio.sleep(0.05)
        await resp.write(b":\n\n")
    return resp


async def test_a_proxied_event_stream_is_attached_again_while_media_flows(open_page, site):
    """The proxy restarts: the stream ends, the proxy answers 503 for longer than the
    missing-pings window, then the stream is back: no fault, the events go on."""
    calls, lost = [], []

    async def handler(request):
        calls.append(request.query.get("keepalive_ms"))
        loop = asyncio.get_running_loop()
        if len(calls) == 1:
            lost.append(loop.time())
            return await sse(request, 'event: active\ndata: {"n": 1}\n\n')
        if loop.time() - lost[0] < 0.6:  # twice missingPings x pingPeriodMs
            return web.json_response({"error": "node_not_known_yet"}, status=503,
                                     headers={"Retry-After": "1", **CORS})
        return await sse(request, f'event: active\ndata: {{"n": {len(calls)}}}\n\n', 10)

    page = await open_page(site + "/")
    runner, url = await event_server(handler)
    try:
        await page.evaluate(JS_WATCH_EVENTS, {"url": url, "reattach": True, "alive": True})
        state = await wait_js(page, f"() => {{ const w = ({JS_WATCHED})(); "
                                    "return (w.seen.length >= 2 || w.fault) && w; }", timeout=5)
        await asyncio.sleep(0.5)  # the re-attached stream is watched as before
        state = await page.evaluate(JS_WATCHED)
        assert state["fault"] is None, state
        assert state["seen"] == [["active", {"n": 1}], ["active", {"n": len(calls)}]], state
        assert state["reattached"] == 1 and not state["reattaching"], state
        assert len(calls) >= 6 and set(calls) == {"100"}, calls  # 503s in between
    finally:
        await page.evaluate("() => watched.attempt.stopBackground()")
        await runner.cleanup()


async def test_every_loss_of_a_proxied_event_stream_has_its_own_time_limit(open_page, site):
    """Attached again, read longer than the limit, then broken off (a second restart): it is
    attached again, the limit counting from the second loss, not the first."""
    calls = []

    async def handler(request):
        calls.append(1)
        if len(calls) == 1:
            return await sse(request, "event: active\ndata: {}\n\n")
        resp = await sse(request, "event: active\ndata: {}\n\n", 0.6 if len(calls) == 2 else 10)
        request.transport.close()  # broken off, as by a SIGKILLed proxy
        return resp

    page = await open_page(site + "/")
    runner, url = await event_server(handler)
    try:
        await page.evaluate(JS_WATCH_EVENTS, {"url": url, "reattach": True, "alive": True,
                                              "maxMs": 300})
        state = await wait_js(page, f"() => {{ const w = ({JS_WATCHED})(); "
                                    "return (w.reattached >= 2 || w.fault) && w; }", timeout=5)
        assert state["fault"] is None and state["reattached"] == 2 and len(calls) == 3, state
    finally:
        await page.evaluate("() => watched.attempt.stopBackground()")
        await runner.cleanup()


@pytest.mark.parametrize("reattach, status, alive, tries", [
    (True, 404, True, 2),    # no such session (any status but 429/503: gone)
    (True, 502, True, 2),    # the node is failing
    (True, 503, False, 1),   # the media no longer proves the session alive
    (False, 503, True, 1),   # the node's own stream (no Via): its end is the session's
])
async def test_an_event_stream_is_given_up_when_the_session_is_gone(open_page, site, reattach,
                                                                  status, alive, tries):
    calls = []

    async def handler(request):
        calls.append(1)
        if len(calls) > 1:
            return web.json_response({"error": "x"}, status=status, headers=CORS)
        return await sse(request, 'event: active\ndata: {}\n\n')

    page = await open_page(site + "/")
    runner, url = await event_server(handler)
    try:
        await page.evaluate(JS_WATCH_EVENTS, {"url": url, "reattach": reattach, "alive": alive})
        state = await wait_js(page, f"() => {{ const w = ({JS_WATCHED})(); return w.fault && w; }}",
                              timeout=5)
        assert state["fault"] == "session_closed", state
        assert len(calls) == tries and state["reattached"] == 0, (calls, state)
    finally:
        await page.evaluate("() => watched.attempt.stopBackground()")
        await runner.cleanup()


async def test_vendor_route_serves_hlsjs_from_node_modules(node, open_page):
    page = await open_page(node.url + "/", import_sdk=False)
    status = "async (p) => (await fetch(p)).status"
    expected = 200 if (HLSJS_DIST / "hls.min.mjs").is_file() else 404
    assert await page.evaluate(status, "/web/vendor/hls.min.mjs") == expected
    assert await page.evaluate(status, "/web/vendor/package.json") == 404


# --- faults ---------------------------------------------------------------------------

async def test_node_killed_both_restore_on_the_second_node(start_node, open_page, site):
    n1, n2 = start_node(), start_node()
    page = await pair(open_page, site, [n1.url, n2.url], stream_name("kill"))
    n1.kill()
    pub = (await wait_event(page, "pub", "restored"))[0]
    sub = (await wait_event(page, "sub", "restored"))[0]
    assert pub["url"] == n2.url and sub["url"] == n2.url, (pub, sub)
    for report in (pub, sub):
        assert {"fault", "detectMs", "restoreMs", "gapMs", "tries", "url"} <= report.keys()
    assert sub["transport"] == "whep"
    await playing(page)


async def test_node_restarted_on_the_same_port(start_node, open_page, site):
    n1 = start_node()
    page = await pair(open_page, site, [n1.url], stream_name("restart"))
    n1.kill()
    await asyncio.sleep(0.3)
    start_node(port=n1.port)
    await wait_event(page, "pub", "restored")
    await wait_event(page, "sub", "restored")
    await playing(page)


async def test_unpublish_then_republish(node, open_page, site):
    stream = stream_name("republish")
    page = await pair(open_page, site, [node.url], stream)
    await page.evaluate("async () => { await pub.stop(); src.stop(); }")
    await asyncio.sleep(0.5)
    assert not await events(page, "pub", "restoring")  # a manual stop never restores
    await page.evaluate(JS_START_PUB, {"urls": [node.url], "stream": stream,
                                       "opts": {"codec": "h264"}})
    await playing(page)
    assert not await events(page, "sub", "gave_up")


JS_STALL = """() => {
  const sender = pub.attempt.session.pc.getSenders().find((s) => s.track && s.track.kind === 'video');
  sender.replaceTrack(null);
}"""


@pytest.mark.parametrize("change_codec", [False, True])
async def test_publisher_stall_republishes(node, open_page, site, change_codec):
    page = await pair(open_page, site, [node.url], stream_name("stall"),
                      pub_opts={"changeCodec": change_codec})
    await page.evaluate(JS_STALL)
    report = (await wait_event(page, "pub", "restored"))[0]
    assert report["fault"] == "bitrate_zero", report
    assert report["codec"] == ("vp8" if change_codec else "h264")
    await playing(page)
    sent = await wait_js(page, "() => pub.stats().codec", timeout=5)
    assert sent == ("vp8" if change_codec else "h264")


async def test_vp8_stalling_too_gives_up(node, open_page, site):
    page = await pair(open_page, site, [node.url], stream_name("vp8stall"),
                      pub_opts={"changeCodec": True}, codec="vp8")
    await page.evaluate(JS_STALL)
    gave_up = (await wait_event(page, "pub", "gave_up"))[0]
    assert gave_up["reason"] == "bitrate_zero", gave_up
    assert not await events(page, "pub", "restoring")


async def test_missing_pings_node_frozen(start_node, open_page, site):
    n1, n2 = start_node(), start_node()
    page = await pair(open_page, site, [n1.url, n2.url], stream_name("sigstop"))
    os.kill(n1.proc.pid, signal.SIGSTOP)
    try:
        pub = (await wait_event(page, "pub", "restored"))[0]
        sub = (await wait_event(page, "sub", "restored"))[0]
        assert pub["url"] == n2.url and sub["url"] == n2.url
        assert {pub["fault"], sub["fault"]} <= {"missing_pings", "media_silence",
                                                "connection_failed"}, (pub, sub)
        await playing(page)
    finally:
        os.kill(n1.proc.pid, signal.SIGCONT)


async def test_network_change_restores_at_once(node, open_page, site):
    page = await pair(open_page, site, [node.url], stream_name("netchange"))
    await page.context.set_offline(True)
    await asyncio.sleep(0.3)
    await page.context.set_offline(False)
    pub = (await wait_event(page, "pub", "restored"))[0]
    sub = (await wait_event(page, "sub", "restored"))[0]
    assert pub["fault"] == "network_change" and sub["fault"] == "network_change", (pub, sub)
    await playing(page)


async def test_manual_stop_never_restores(node, open_page, site):
    page = await pair(open_page, site, [node.url], stream_name("stop"))
    await page.evaluate("async () => { await sub.stop(); await pub.stop(); }")
    node.kill()
    await asyncio.sleep(1.5)
    for who in ("pub", "sub"):
        kinds = await page.evaluate(f"() => {who}Events.map((e) => e.kind + ':' + (e.state || ''))")
        assert kinds[-2:] == [f"stream:{'UNPUBLISHED' if who == 'pub' else 'STOPPED'}",
                              "session:DISCONNECTED"], kinds
        assert not await events(page, who, "restoring")


async def test_max_tries_gives_up(node, open_page, site):
    opts = {"maxTries": 3, "timeoutMs": 100}
    page = await pair(open_page, site, [node.url], stream_name("maxtries"), opts, opts)
    node.kill()
    for who in ("pub", "sub"):
        gave_up = (await wait_event(page, who, "gave_up"))[0]
        assert "max tries" in gave_up["reason"], gave_up
        assert gave_up["state"] == "FAILED"


async def test_whep_refused_falls_back_to_hls_and_back(node, open_page, site, missing):
    if not (HLSJS_DIST / "hls.min.mjs").is_file():
        missing("hls.js is not installed (npm install)")
    stream = stream_name("fallback")
    page = await open_page(site + "/")
    await page.evaluate(JS_START_PUB, {"urls": [node.url], "stream": stream,
                                       "opts": {"codec": "h264"}})

    async def refuse(route):
        await route.fulfill(status=503, body="refused by the test")

    await page.route("**/whep/**", refuse)
    await page.evaluate(JS_START_SUB, {"urls": [node.url], "stream": stream, "opts": {
        "transports": ["whep", "hls"], "transportProbeMs": 1500, "connectTimeoutS": 8}})
    assert await page.evaluate("() => sub.stats().transport") == "hls"
    assert (await events(page, "sub", "transport"))[0]["state"] == "hls"
    await playing(page, timeout=15)
    await page.unroute("**/whep/**")
    back = await wait_event(page, "sub", "transport", count=2, timeout=15)
    assert back[1]["state"] == "whep", back
    await playing(page)
