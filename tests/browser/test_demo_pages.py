"""The seeds' demo pages load without console errors and work. With
UNBROKEN_SCREENSHOTS=docs their screenshots are written to docs/ (the PNGs the README links
to); otherwise to the test's temporary folder, so a test run never changes the repository."""

import asyncio
import itertools
import os
from pathlib import Path

import pytest

from test_restore_chromium import HLSJS_DIST, wait_js  # noqa: F401 (shared helpers)

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

DOCS = Path(__file__).resolve().parents[2] / "docs"


def screenshot_path(tmp_path: Path, name: str) -> str:
    folder = DOCS if os.environ.get("UNBROKEN_SCREENSHOTS") == "docs" else tmp_path
    return str(folder / name)
_names = itertools.count()
# errors these tests cause on purpose: a refused WHEP POST, requests while offline
CAUSED = ("503", "ERR_INTERNET_DISCONNECTED", "ERR_NETWORK_CHANGED")


async def open_demo(browser, url):
    ctx = await browser.new_context(viewport={"width": 1200, "height": 900})
    ctx.set_default_timeout(15_000)
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"{m.text} {m.location.get('url')}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(url)
    return ctx, page, errors


def unexpected(errors):
    return [e for e in errors if not any(c in e for c in CAUSED)]


async def test_index_links_the_demo_pages(node, browser):
    ctx, page, errors = await open_demo(browser, node.url + "/")
    try:
        links = await page.eval_on_selector_all("nav a", "(as) => as.map((a) => a.getAttribute('href'))")
        assert "/web/restore.html" in links and "/web/failover.html" in links
        assert errors == []
    finally:
        await ctx.close()


async def test_stream_auto_restore_page(node, browser, tmp_path):
    stream = f"demo-restore-{next(_names)}"
    ctx, page, errors = await open_demo(browser, f"{node.url}/web/restore.html?stream={stream}&source=counter")
    try:
        knobs = await page.evaluate("() => ({t: timeoutMs.value, p: pingPeriodMs.value, m: missingPings.value})")
        assert knobs == {"t": "1000", "p": "250", "m": "3"}  # our fast defaults
        await page.click("#publish")
        await page.click("#play")
        await wait_js(page, "() => demo.sub && demo.sub.stats().framesDecoded > 10", timeout=10)
        await page.check("#changeCodec")  # takes effect on the next publisher: show the knob
        await page.click("#stall")
        row = await wait_js(page, "() => document.querySelector('#restores tr')?.textContent", timeout=10)
        assert "pub" in row and "bitrate_zero" in row, row
        assert await page.text_content("#pubStream") == "PUBLISHING"
        assert await page.text_content("#subSession") == "ESTABLISHED"
        await asyncio.sleep(1.0)
        await page.screenshot(path=screenshot_path(tmp_path, "demo-stream-auto-restore.png"), full_page=True)
        assert errors == [], errors
        await page.click("#stopPlay")
        await page.click("#unpublish")
    finally:
        await ctx.close()


async def test_failover_subscriber_page(node, browser, tmp_path, missing):
    if not (HLSJS_DIST / "hls.min.mjs").is_file():
        missing("hls.js is not installed (npm install)")
    stream = f"demo-failover-{next(_names)}"
    pctx, publisher, _ = await open_demo(browser, f"{node.url}/web/restore.html?stream={stream}&source=counter")
    ctx, page, errors = await open_demo(browser, f"{node.url}/web/failover.html?stream={stream}")
    try:
        await publisher.click("#publish")
        await wait_js(publisher, "() => demo.pub && demo.pub.state === 'PUBLISHING'")
        support = await page.text_content("#support")
        assert "WebRTC yes" in support and "MSE yes" in support, support

        async def refuse(route):
            await route.fulfill(status=503, body="refused by the test")

        await page.route("**/whep/**", refuse)  # WebRTC refused: HLS takes over
        await page.fill("#transportProbeMs", "1500")
        await page.click("#play")
        await wait_js(page, "() => demo.sub && demo.sub.stats().transport === 'hls' "
                            "&& demo.sub.stats().framesDecoded > 0", timeout=20)
        await page.unroute("**/whep/**")  # and back to WHEP when it works again
        await wait_js(page, "() => demo.sub.stats().transport === 'whep'", timeout=15)
        await ctx.set_offline(True)  # a network change: restored at once
        await asyncio.sleep(0.2)
        await ctx.set_offline(False)
        row = await wait_js(page, "() => document.querySelector('#restores tr')?.textContent", timeout=10)
        assert "network_change" in row, row
        await wait_js(page, "() => demo.sub.stats().framesDecoded > 5", timeout=10)
        await asyncio.sleep(1.0)
        await page.screenshot(path=screenshot_path(tmp_path, "demo-failover-subscriber.png"), full_page=True)
        assert unexpected(errors) == [], errors
    finally:
        await ctx.close()
        await pctx.close()
