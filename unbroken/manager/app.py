"""The manager's aiohttp application."""

from __future__ import annotations

from aiohttp import web

from unbroken.httpkit.errors import errors_and_cors
from unbroken.httpkit.ratelimit import ClientLimits, client_limits

from . import api, public
from .config import ManagerConfig
from .scaling import http as scaling_http
from .service import MANAGER, Manager
from .store import ClusterStore

__all__ = ["create_app"]


def create_app(config: ManagerConfig, store: ClusterStore | None = None) -> web.Application:
    manager = Manager(config, store)
    limits = ClientLimits(config.client_requests_per_s, config.client_request_burst,
                          config.client_sessions_per_s, config.client_session_burst)

    def limited(name: str) -> None:
        manager.metrics.limited.labels(name).inc()

    app = web.Application(
        middlewares=[errors_and_cors(), client_limits(limits, public.starts_session, limited)],
        client_max_size=config.max_body_bytes)
    app[MANAGER] = manager
    api.add_routes(app)
    scaling_http.add_routes(app)
    public.add_routes(app)

    async def on_startup(app: web.Application) -> None:
        await manager.start()

    async def on_cleanup(app: web.Application) -> None:
        await manager.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
