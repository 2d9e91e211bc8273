"""Browser restore times per fault class: the browser SDK (web/unbroken.js) in Chromium.

    python bench/browser_restore.py [--quick] [--rounds N]

Set-up: two node processes; one Chromium page (Debian's /usr/bin/chromium through
Playwright) that publishes a canvas frame counter with `Publisher` (H264) and plays it
back with `Subscriber`, both with the URL list of the two nodes and default options.

Fault classes, `--rounds` each (10; `--quick`: 3):
  node_killed      SIGKILL of the node both clients are on (the other node is up); the
                   killed node is started again on its port before the next round.
  publisher_stall  the publisher's video sender loses its track (`replaceTrack(null)`):
                   outbound bytes stop → bitrate check → republish.
  node_frozen      SIGSTOP of the node both are on: no RST, nothing answers any more (the
                   missing keep-alives find it); SIGCONT + restart after the round.
  silent_loss      silent path loss (needs root: network namespaces): a second page whose
                   first node runs inside a network namespace (tests/netns_helpers.py
                   NodeInNetns), reached over a veth pair; the path is made silent (a
                   zero-length pfifo on both ends: no RST, no ICMP) and the clients find it
                   themselves and move to the second node (root namespace). Before each
                   round the clients are put back on the namespaced node (SIGKILL of the
                   other one, not measured); the path is restored after the round.

Per fault and client: `fault_to_restored_ms` (from the fault, page clock, to the client's
`restored` event: for the subscriber that is its first decoded frame after the fault) and
the SDK's report (detectMs, restoreMs, gapMs). Targets (design.md): node killed p95 ≤ 600 ms,
stall ≤ 1.2 s, silent loss ≤ 1.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, percentile, table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "unbroken" / "web"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns"]
TARGETS = {"node_killed": 600, "publisher_stall": 1200, "node_frozen": 1500, "silent_loss": 1500}
LOOP_FAULTS = ["node_killed", "publisher_stall", "node_frozen"]
PAGE_JS = """async ({urls, stream}) => {
  const ub = await import('/web/unbroken.js');
  const fc = await import('/web/framecode.js');
  window.src = fc.counterStream({fps: 30});
  window.ev = {pub: [], sub: []};
  window.pub = new ub.Publisher({urls, stream, codec: 'h264', mediaStream: src.stream});
  pub.on('restored', (e) => ev.pub.push(e));
  await pub.start();
  const v = document.createElement('video'); v.muted = true; document.body.append(v);
  window.sub = new ub.Subscriber({urls, stream, video: v});
  sub.on('restored', (e) => ev.sub.push(e));
  for (let i = 0; ; i++) { try { await sub.start(); break; } catch (e) { if (i > 50) throw e; } }
}"""
STALL_JS = """() => { const t = Date.now();
  pub.attempt.session.pc.getSenders().find((s) => s.track && s.track.kind === 'video').replaceTrack(null);
  return t; }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Node":
        self.proc = subprocess.Popen([sys.executable, "-m", "unbroken", "node", "--host", "127.0.0.1",
                                      "--port", str(self.port), "--log-level", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("node did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)


async def seen(page, who: str) -> int:
    """How many restores `who` reported so far (the next fault's report comes after them)."""
    return await page.evaluate(f"() => ev.{who}.length")


async def wait_count(page, who: str, n: int, timeout: float = 10.0) -> dict:
    """The n-th restore report of `who` (1-based), waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await page.evaluate(f"() => ev.{who}.length >= {n} ? ev.{who}[{n - 1}] : null")
        if got:
            return got
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{who}: no restore #{n} within {timeout} s")


async def current_node(page, nodes: list[Node]) -> Node:
    url = await page.evaluate("() => sub.url")
    return next(n for n in nodes if n.url == url)


async def silent_rounds(browser, page_url: str, rounds: int, out: dict) -> str | None:
    """The silent_loss rounds (see the module docstring); why they were skipped, or None."""
    sys.path.insert(0, str(ROOT / "tests"))
    import netns_helpers as nh

    reason = nh.unavailable()
    if reason:
        return f"silent_loss: {reason}"
    ns = nh.Netns("bb").create()
    near = None
    try:
        link = ns.add_link()
        ns.set_default_route(link)
        far = nh.NodeInNetns(ns, link.ns_ip, "--log-level", "warning").start()
        near = Node().start()
        page = await (await browser.new_context()).new_page()
        await page.goto(page_url)
        await page.evaluate(PAGE_JS, {"urls": [far.url, near.url], "stream": "bench-silent"})
        await asyncio.sleep(1.0)
        for _ in range(rounds):
            if await page.evaluate("() => [pub.url, sub.url]") != [far.url, far.url]:
                near.kill()  # back onto the namespaced node (not measured)
                deadline = time.monotonic() + 15
                while await page.evaluate("() => [pub.url, sub.url]") != [far.url, far.url]:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the clients did not come back to the namespaced node")
                    await asyncio.sleep(0.1)
                near.start()
                await asyncio.sleep(1.5)
            count = {who: await seen(page, who) for who in ("pub", "sub")}
            t0 = await page.evaluate("() => Date.now()")
            link.block()
            try:
                for who in ("pub", "sub"):
                    count[who] += 1
                    report = await wait_count(page, who, count[who])
                    out[who].append({**report, "fault_to_restored_ms": report["t"] * 1000 - t0})
            finally:
                link.unblock()
            await asyncio.sleep(1.5)
        await page.context.close()
    finally:
        if near:
            near.kill()
        ns.close()
    return None


async def run(rounds: int) -> dict:
    from aiohttp import web
    from playwright.async_api import async_playwright

    app = web.Application()
    app.router.add_static("/web/", WEB)

    async def index(_request):
        return web.Response(text="<!doctype html><title>bench</title>", content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    page_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"
    nodes = [Node().start(), Node().start()]
    samples: dict[str, dict[str, list[dict]]] = {f: {"pub": [], "sub": []} for f in TARGETS}
    skipped = None
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await (await browser.new_context()).new_page()
            await page.goto(page_url)
            await page.evaluate(PAGE_JS, {"urls": [n.url for n in nodes], "stream": "bench"})
            await asyncio.sleep(1.0)
            for fault in LOOP_FAULTS:
                for _ in range(rounds):
                    victim = await current_node(page, nodes)
                    count = {who: await seen(page, who) for who in ("pub", "sub")}
                    if fault == "publisher_stall":
                        t0 = await page.evaluate(STALL_JS)
                        whos = ["pub"]
                    else:
                        t0 = await page.evaluate("() => Date.now()")
                        os.kill(victim.proc.pid, signal.SIGKILL if fault == "node_killed" else signal.SIGSTOP)
                        whos = ["pub", "sub"]
                    for who in whos:
                        count[who] += 1
                        report = await wait_count(page, who, count[who])
                        samples[fault][who].append({**report, "fault_to_restored_ms": report["t"] * 1000 - t0})
                    if fault != "publisher_stall":
                        victim.kill()
                        victim.start()
                    await asyncio.sleep(1.5)  # settle: the restarted node is up, media flows
            skipped = await silent_rounds(browser, page_url, rounds, samples["silent_loss"])
            await browser.close()
    finally:
        for n in nodes:
            n.kill()
        await runner.cleanup()
    rows = []
    for fault, by_client in samples.items():
        for who, items in by_client.items():
            if not items:
                continue
            values = [s["fault_to_restored_ms"] for s in items]
            p95 = percentile(values, 95)
            rows.append({"fault": fault, "client": who, "n": len(values),
                         "p50_ms": round(percentile(values, 50), 1), "p95_ms": round(p95, 1),
                         "detect_p50_ms": round(percentile([s["detectMs"] for s in items], 50), 1),
                         "gap_p50_ms": round(percentile([s["gapMs"] for s in items], 50), 1),
                         "target_p95_ms": TARGETS[fault], "met": p95 <= TARGETS[fault]})
    return {"machine": machine(), "rounds": rounds, "summary": rows, "samples": samples,
            "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds per fault")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 10)
    results = asyncio.run(run(rounds))
    path = write_results("browser_restore", results, args.quick)
    print(table([("fault", "fault"), ("client", "client"), ("n", "n"), ("p50_ms", "p50 ms"),
                 ("p95_ms", "p95 ms"), ("detect_p50_ms", "detect p50"), ("gap_p50_ms", "gap p50"),
                 ("target_p95_ms", "target p95"), ("met", "met")], results["summary"]))
    if results.get("skipped"):
        print(f"\nskipped: {results['skipped']}")
    print(f"\n{path}")


if __name__ == "__main__":
    main()
