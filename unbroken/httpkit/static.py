"""Static files (the browser SDK, demo pages, the dashboard) served from one folder;
names are checked before the file system sees them."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

__all__ = ["WEB_DIR", "add_web_routes", "vendor_file", "web_file"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
WEB_FILE = re.compile(r"^[A-Za-z0-9_\-]{1,64}\.(html|js|css)$")
# hls.js is an npm dependency of the project (package.json), never copied into the repo:
# served from the project's node_modules when it is installed there, 404 otherwise
HLSJS_DIST = WEB_DIR.parent.parent / "node_modules" / "hls.js" / "dist"
VENDOR_FILES = {"hls.min.js": HLSJS_DIST, "hls.min.mjs": HLSJS_DIST, "hls.mjs": HLSJS_DIST}


async def web_file(request: web.Request) -> web.FileResponse:
    """GET /web/{name}: a file of unbroken/web."""
    name = request.match_info["name"]
    path = WEB_DIR / name
    if not WEB_FILE.match(name) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(str(path))


async def vendor_file(request: web.Request) -> web.FileResponse:
    """GET /web/vendor/{name}: a third-party browser module installed with npm (only the
    names listed)."""
    name = request.match_info["name"]
    folder = VENDOR_FILES.get(name)
    if folder is None or not (folder / name).is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(str(folder / name), headers={"Content-Type": "text/javascript"})


def add_web_routes(app: web.Application) -> None:
    """The browser SDK, the demo pages and the vendored browser modules."""
    app.router.add_get("/web/{name}", web_file)
    app.router.add_get("/web/vendor/{name}", vendor_file)
