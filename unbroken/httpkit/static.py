"""Static files (the browser SDK, demo pages, the dashboard) served from one folder;
names are checked before the file system sees them."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

__all__ = ["WEB_DIR", "web_file"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
WEB_FILE = re.compile(r"^[A-Za-z0-9_\-]{1,64}\.(html|js|css)$")


async def web_file(request: web.Request) -> web.FileResponse:
    """GET /web/{name}: a file of unbroken/web."""
    name = request.match_info["name"]
    path = WEB_DIR / name
    if not WEB_FILE.match(name) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(str(path))
