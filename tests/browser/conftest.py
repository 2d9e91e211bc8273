"""Browser fixtures: Debian's Chromium driven by Playwright (never `playwright install`).

Tests in this package run in the session event loop (the browser is shared); mark test
modules with `pytestmark = pytest.mark.asyncio(loop_scope="session")`.
"""

import asyncio
import os

import pytest_asyncio

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # Show real host candidates (not mDNS .local names) so aiortc can reach Chromium.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

# Loads the SDK into a page as window.ub / window.fc (relative to the page's origin).
JS_IMPORT = """async () => {
  window.ub = await import('/web/unbroken.js');
  window.fc = await import('/web/framecode.js');
  window.sessions = [];
}"""

# Stops every session a test kept in window.sessions (DELETE on its Location).
JS_STOP_ALL = """async () => {
  for (const s of (window.sessions || [])) { try { await s.stop(); } catch (e) {} }
  window.sessions = [];
}"""


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(missing):
    if not os.path.exists(CHROMIUM):
        missing(f"{CHROMIUM} is missing")
    from playwright import async_api

    async with async_api.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True, timeout=30_000)
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="session")
async def open_page(browser):
    """Factory: `await open_page(url)` -> a Playwright Page in its own context, with the
    SDK imported (window.ub, window.fc). Sessions in window.sessions are stopped, and the
    page's console is printed, at teardown."""
    contexts = []
    pages = []
    logs: list[str] = []

    async def _open(url: str, import_sdk: bool = True):
        ctx = await browser.new_context()
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        page = await ctx.new_page()
        tag = f"page{len(pages)}"
        page.on("console", lambda m: None if "favicon" in (m.location or {}).get("url", "")
                else logs.append(f"{tag} [{m.type}] {m.text}"))
        page.on("pageerror", lambda e: logs.append(f"{tag} [pageerror] {e}"))
        pages.append(page)
        await page.goto(url)
        if import_sdk:
            await page.evaluate(JS_IMPORT)
        return page

    yield _open
    for page in pages:
        try:
            await asyncio.wait_for(page.evaluate(JS_STOP_ALL), 5)
        except Exception:
            pass
    for ctx in contexts:
        await ctx.close()
    if logs:
        print("\n".join(logs))

