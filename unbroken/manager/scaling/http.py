"""`GET /api/v1/scaling`: the scaling leader, each group's last decision, recent entries."""

from __future__ import annotations

from aiohttp import web

from unbroken.httpkit.auth import check_bearer

from ..service import MANAGER

__all__ = ["add_routes"]


async def scaling_status(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    check_bearer(request, manager.config.token)
    if manager.autoscaler is None:
        return web.json_response({"provider": None, "leading": False})
    return web.json_response(manager.autoscaler.status())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/scaling", scaling_status)
