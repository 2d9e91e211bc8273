"""The node's aiohttp application."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from . import api, hls, session_channel, whip_whep
from unbroken.httpkit.errors import errors_and_cors

from .admission import Admission
from .config import NodeConfig
from .figures import live_figures
from .http_common import ADMISSION, STATE
from .relay import Relay, StaticUpstreams, UpstreamLocator
from .state import NodeState

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


WEB_FILE = re.compile(r"^[A-Za-z0-9_\-]{1,64}\.(html|js|css)$")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(str(WEB_DIR / "index.html"))


async def web_file(request: web.Request) -> web.FileResponse:
    """The browser module and pages; names are checked before the file system sees them."""
    name = request.match_info["name"]
    path = WEB_DIR / name
    if not WEB_FILE.match(name) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(str(path))


def upstream_locator(config: NodeConfig) -> UpstreamLocator:
    """Where an edge looks for the streams it pulls (the static ``--upstream`` list)."""
    return StaticUpstreams(config.upstream_urls, config.upstream_token)


def create_app(config: NodeConfig) -> web.Application:
    # client_max_size bounds every body aiohttp reads for us
    state = NodeState(config)
    metrics = state.metrics
    metrics.add_live_collector(lambda: live_figures(state))

    def count_rejected(status: int) -> None:
        metrics.requests_rejected.labels(str(status)).inc()

    app = web.Application(middlewares=[errors_and_cors(count_rejected)],
                          client_max_size=config.max_body_bytes)
    app[STATE] = state
    app[ADMISSION] = Admission(state)
    whip_whep.add_routes(app)
    api.add_routes(app)
    hls.setup(app, state, config)
    app.router.add_get("/", index)
    app.router.add_get("/web/{name}", web_file)

    relay: Relay | None = None
    if config.role == "edge":
        relay = Relay(state, upstream_locator(config), config.relay_linger,
                      metrics.registry)
        state.puller = relay

    async def on_startup(app: web.Application) -> None:
        await state.start()

    async def on_shutdown(app: web.Application) -> None:
        if relay is not None:
            await relay.stop()
        await state.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    # after state.stop: sockets get their streams' final states, then their close
    session_channel.setup(app)
    return app
