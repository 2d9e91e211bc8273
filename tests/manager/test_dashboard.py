"""The manager's live dashboard in Chromium: nodes, streams and the event feed appear and
follow the cluster as it changes (SSE), with no reload."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from cluster_helpers import pinned_http, wait_nodes

# tests/browser's Chromium settings, loaded by path (its conftest is not a package module)
_spec = importlib.util.spec_from_file_location(
    "browser_settings", Path(__file__).resolve().parent.parent / "browser" / "conftest.py")
_browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_browser)
CHROMIUM, CHROMIUM_ARGS = _browser.CHROMIUM, _browser.CHROMIUM_ARGS

pytestmark = pytest.mark.timeout(90)
SCREENSHOT = os.environ.get("UNBROKEN_DASHBOARD_SCREENSHOT")  # docs/manager-dashboard.png


async def test_dashboard_shows_the_cluster_live(start_manager, start_node, missing, tmp_path):
    if not os.path.exists(CHROMIUM):
        missing(f"{CHROMIUM} is missing")
    from playwright.async_api import async_playwright

    manager = start_manager()
    start_node(*manager.node_args("origin"))
    async with pinned_http(manager.fingerprint) as http:
        await wait_nodes(http, manager.url, 1)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            # the test's browser accepts the certificate made at start (as a user would)
            context = await browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 700})
            page = await context.new_page()
            await page.goto(manager.url + "/")
            await page.wait_for_function("document.querySelectorAll('#nodes tbody tr').length === 1",
                                         timeout=10_000)
            edge = start_node(*manager.node_args("edge"))
            await page.wait_for_function("document.querySelectorAll('#nodes tbody tr').length === 2",
                                         timeout=10_000)
            assert "edge" in await page.inner_text("#nodes")
            edge.kill()  # its lease lapses: the feed says so
            await page.wait_for_function(
                "[...document.querySelectorAll('#feed li')].some(li => li.dataset.kind === 'node_lapsed')",
                timeout=10_000)
            assert "joined" in await page.inner_text("#feed")
            await page.screenshot(path=SCREENSHOT or str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            await browser.close()
