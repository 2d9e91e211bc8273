"""The node's aiohttp application."""

from __future__ import annotations

from aiohttp import web

from . import api, hls, session_channel, whip_whep
from unbroken.httpkit.errors import errors_and_cors
from unbroken.httpkit.static import WEB_DIR, add_web_routes
from unbroken.httpkit.ratelimit import ClientLimits, client_limits

from .admission import Admission
from .config import NodeConfig
from .channel.limits import Limits
from .figures import live_figures
from .http_common import ADMISSION, STATE
from .relay import ManagerUpstreams, Relay, StaticUpstreams, UpstreamLocator
from .state import NodeState


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(str(WEB_DIR / "index.html"))


def _starts_session(request: web.Request) -> bool:
    return (request.method == "POST" and request.path.count("/") == 2
            and request.path.startswith(("/whip/", "/whep/"))) or request.path == "/ws"


def upstream_locator(config: NodeConfig, link) -> UpstreamLocator:
    """Where an edge looks for the streams it pulls: the static ``--upstream`` list, else
    the stream manager it registered with."""
    if config.upstream_urls:
        return StaticUpstreams(config.upstream_urls, config.upstream_token)
    return ManagerUpstreams(link.locate, config.upstream_token, config.manager)


def create_app(config: NodeConfig) -> web.Application:
    # client_max_size bounds every body aiohttp reads for us
    state = NodeState(config)
    metrics = state.metrics
    metrics.add_live_collector(lambda: live_figures(state))

    def count_rejected(status: int) -> None:
        metrics.requests_rejected.labels(str(status)).inc()

    limits = ClientLimits(config.client_requests_per_s, config.client_request_burst,
                          config.client_sessions_per_s, config.client_session_burst)
    app = web.Application(middlewares=[errors_and_cors(count_rejected),
                                       client_limits(limits, _starts_session)],
                          client_max_size=config.max_body_bytes)
    app[STATE] = state
    app[ADMISSION] = Admission(state)
    whip_whep.add_routes(app)
    api.add_routes(app)
    hls.setup(app, state, config)
    app.router.add_get("/", index)
    add_web_routes(app)

    link = None
    if config.manager:
        from .manager_link import ManagerLink

        link = ManagerLink(state, config)

    relay: Relay | None = None
    if config.role == "edge":
        relay = Relay(state, upstream_locator(config, link), config.relay_linger,
                      metrics.registry)
        state.puller = relay

    async def on_startup(app: web.Application) -> None:
        await state.start()
        if link is not None:
            await link.start()

    async def on_shutdown(app: web.Application) -> None:
        if link is not None:
            await link.stop()
        if relay is not None:
            await relay.stop()
        await state.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    # after state.stop: sockets get their streams' final states, then their close
    session_channel.setup(app, Limits(resume_ms=config.session_resume_ms))
    return app
