"""Chromium publishes and plays through the stream manager over HTTPS: the page is served
by the manager (a secure origin), the browser SDK's `urls` is the manager's URL, and the
manager's TLS proxy carries WHIP/WHEP and their event streams to a plain-HTTP node; media
goes straight to the node. The manager's certificate is self-signed (made at start), so
the test's browser context uses `ignore_https_errors=True` — a real deployment serves a
certificate the browser trusts. Frames advance: the canvas frame counter the publisher
draws is read back from the subscriber's <video>. When the node under them is SIGKILLed,
publisher and subscriber restore through the manager (a new POST routed to the other
node) and the counter advances again."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time

import pytest
from test_restore_chromium import JS_COUNTER_ADVANCES, wait_js  # shared helpers

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]

NODE_TOKEN = "browser-node-token"
START_TIMEOUT_S = 15.0

# the SDK from the manager's origin, and a <video> to play into
JS_SETUP = """async () => {
  window.ub = await import('/web/unbroken.js');
  window.fc = await import('/web/framecode.js');
  window.sessions = [];
  const v = document.createElement('video');
  Object.assign(v, {id: 'v', muted: true, autoplay: true, playsInline: true, width: 320});
  document.body.appendChild(v);
}"""

JS_PUBLISH_AND_PLAY = """async ({urls, stream}) => {
  window.src = fc.counterStream({fps: 30});
  window.pub = new ub.Publisher({urls, stream, mediaStream: src.stream, codec: 'vp8'});
  window.pubEvents = []; pub.on('event', (e) => pubEvents.push(e));
  window.sessions.push(pub);
  await pub.start();
  window.sub = new ub.Subscriber({urls, stream, video: document.getElementById('v')});
  window.subEvents = []; sub.on('event', (e) => subEvents.push(e));
  window.sessions.push(sub);
  const deadline = performance.now() + 10000;
  for (;;) {
    try { await sub.start(); break; } catch (e) {
      if (performance.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return [pub.stats(), sub.stats()];
}"""

class Manager:
    """An `unbroken manager` process with a self-signed certificate (fingerprint read back)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"https://127.0.0.1:{port}"
        self.log_path = f"/tmp/unbroken-browser-manager-{port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "unbroken", "manager", "--host", "127.0.0.1", "--port", str(port),
                 "--node-token", NODE_TOKEN, "--tls-self-signed"], stdout=log, stderr=subprocess.STDOUT)
        self.fingerprint = ""

    def wait_started(self) -> "Manager":
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = open(self.log_path, errors="replace").read()
            found = re.search(r"fingerprint ([0-9A-F:]{95})", text)
            if found and "listening on" in text:
                self.fingerprint = found.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"manager did not start: {open(self.log_path, errors='replace').read()[-3000:]}")

    def node_args(self) -> list[str]:
        return ["--manager", self.url, "--role", "origin", "--node-token", NODE_TOKEN,
                "--manager-fingerprint", self.fingerprint]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def open_manager_page(browser, manager: "Manager"):
    """A page of the manager's origin with the SDK loaded, once a node serves; (context,
    page, console lines)."""
    # self-signed manager certificate: this test's browser context accepts it
    context = await browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(15_000)
    page = await context.new_page()
    logs: list[str] = []
    page.on("console", lambda m: logs.append(f"[{m.type}] {m.text}"))
    await page.goto(f"{manager.url}/")
    await page.evaluate(JS_SETUP)
    await wait_js(page, """async (url) => {
      const r = await fetch(url + '/api/v1/nodes');
      return r.ok && (await r.json()).nodes.some((n) => n.state === 'serving');
    }""", manager.url, timeout=15)
    return context, page, logs


async def stop_all(page, logs: list[str]) -> None:
    await asyncio.wait_for(page.evaluate("async () => { for (const s of sessions) await s.stop(); }"), 10)
    if logs:
        print("\n".join(logs))


async def test_chromium_publishes_and_plays_through_the_manager_over_https(browser, start_node):
    manager = Manager(free_port()).wait_started()
    context = None
    try:
        node = start_node(*manager.node_args())
        context, page, logs = await open_manager_page(browser, manager)
        try:
            pub_stats, sub_stats = await page.evaluate(JS_PUBLISH_AND_PLAY,
                                                       {"urls": [manager.url], "stream": "browser-mgr"})
            assert pub_stats["url"] == manager.url and sub_stats["url"] == manager.url
            advanced = await wait_js(page, JS_COUNTER_ADVANCES, 500, timeout=15)
            assert advanced[1] > advanced[0]
            stats = await page.evaluate("() => [pub.stats(), sub.stats()]")
            assert stats[0]["state"] == "PUBLISHING" and stats[1]["state"] == "PLAYING", stats
            assert node.proc.poll() is None
        finally:
            await stop_all(page, logs)
    finally:
        if context is not None:
            await context.close()
        manager.kill()


async def test_chromium_restores_through_the_manager_after_a_node_sigkill(browser, start_node):
    manager = Manager(free_port()).wait_started()
    context = None
    try:
        nodes = {f"origin-127.0.0.1-{n.port}": n
                 for n in (start_node(*manager.node_args()) for _ in range(2))}
        context, page, logs = await open_manager_page(browser, manager)
        try:
            await page.evaluate(JS_PUBLISH_AND_PLAY, {"urls": [manager.url], "stream": "browser-kill"})
            await wait_js(page, JS_COUNTER_ADVANCES, 300, timeout=15)
            origin = await wait_js(page, """async (url) => {
              const r = await fetch(url + '/api/v1/streams');
              const s = r.ok && (await r.json()).streams.find((s) => s.name === 'browser-kill');
              return s && s.origin;
            }""", manager.url, timeout=10)
            nodes[origin].proc.kill()
            for who in ("pub", "sub"):
                restored = await wait_js(page, f"() => {who}Events.find((e) => e.kind === 'restored')",
                                         timeout=15)
                print(f"{who}: restored through the manager after a node SIGKILL: {restored}")
                assert restored["url"] == manager.url
            await wait_js(page, JS_COUNTER_ADVANCES, 300, timeout=15)
            survivor = next(n for node_id, n in nodes.items() if node_id != origin)
            assert survivor.proc.poll() is None
            gave_up = await page.evaluate("() => [...pubEvents, ...subEvents].filter((e) => e.kind === 'gave_up')")
            assert not gave_up
        finally:
            await stop_all(page, logs)
    finally:
        if context is not None:
            await context.close()
        manager.kill()


JS_PUBLISH = """async ({urls, stream}) => {
  window.src = fc.counterStream({fps: 30});
  window.pub = new ub.Publisher({urls, stream, mediaStream: src.stream, codec: 'h264'});
  window.sessions.push(pub);
  await pub.start();
}"""


async def test_failover_subscriber_page_from_the_manager(browser, start_node):
    """Seed 000's page on a secure origin (the manager's): WHEP refused, it plays HLS
    through the manager, and moves to WHEP through the manager once WHEP is allowed."""
    manager = Manager(free_port()).wait_started()
    context = None
    try:
        start_node(*manager.node_args())
        context, publisher, logs = await open_manager_page(browser, manager)
        try:
            await publisher.evaluate(JS_PUBLISH, {"urls": [manager.url], "stream": "seed000"})
            page = await context.new_page()
            await page.goto(f"{manager.url}/web/failover.html?stream=seed000")

            async def refuse(route):
                await route.fulfill(status=503, body="refused by the test")

            await page.route("**/whep/**", refuse)  # WebRTC refused: HLS through the manager
            await page.fill("#transportProbeMs", "1500")
            await page.click("#play")
            await wait_js(page, "() => demo.sub && demo.sub.stats().transport === 'hls' "
                                "&& demo.sub.stats().framesDecoded > 0", timeout=30)
            # the page's own origin (relative URLs: '') is the manager
            assert (await page.evaluate("() => demo.sub.stats().url")) in ("", manager.url)
            await page.unroute("**/whep/**")  # and back to WHEP through the manager
            await wait_js(page, "() => demo.sub.stats().transport === 'whep' "
                                "&& demo.sub.stats().framesDecoded > 0", timeout=20)
            await page.evaluate("async () => { await demo.sub.stop(); }")
        finally:
            await stop_all(publisher, logs)
    finally:
        if context is not None:
            await context.close()
        manager.kill()
