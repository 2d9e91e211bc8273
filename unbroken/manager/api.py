"""The manager's own HTTP API: node registration and heartbeats, routes, the cluster's
nodes and streams, health, metrics, and the dashboard with its live feed."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from unbroken.httpkit.auth import check_bearer, token_matches
from unbroken.protocol.faults import ROUTE_UNRESPONSIVE
from unbroken.httpkit.body import read_bytes
from unbroken.httpkit.errors import HttpError
from unbroken.httpkit.static import WEB_DIR

from .cluster import nodes_json, streams_json
from .feed import sse
from .model import InvalidRecord, NodeRecord
from .registry import HEARTBEAT_S, InvalidTransition, StaleRecord, UnknownNode
from .http_common import check_group, route_error, stream_name
from .routing import RouteError, RouteKind, upstream_candidates
from .service import MANAGER, Manager
from .store import StoreUnavailable

__all__ = ["add_routes"]

MAX_RECORD_BYTES = 256 * 1024
FEED_KEEPALIVE_S = 10.0


def _manager(request: web.Request) -> Manager:
    return request.app[MANAGER]


# -- nodes -----------------------------------------------------------------------------


async def put_node(request: web.Request) -> web.Response:
    """PUT /api/v1/nodes/{node_id}: a node's registration and every heartbeat."""
    manager = _manager(request)
    check_bearer(request, manager.config.node_token)
    try:
        record = NodeRecord.from_json(json.loads(await read_bytes(request, MAX_RECORD_BYTES)))
    except ValueError as e:  # InvalidRecord and JSON errors alike
        code = "bad_record" if isinstance(e, InvalidRecord) else "bad_json"
        raise HttpError(400, code, str(e)) from None
    if record.node_id != request.match_info["node_id"]:
        raise HttpError(400, "bad_record", "node_id differs from the path")
    store = "ok"
    if request.protocol is not None:
        manager.links.note(request.protocol, record.node_id)
    try:
        view = await manager.registry.heartbeat(record)
    except (InvalidTransition, StaleRecord) as e:
        raise HttpError(409, "bad_transition" if isinstance(e, InvalidTransition) else "stale", str(e)) from None
    except StoreUnavailable:
        store, view = "unavailable", manager.registry.view(record.node_id)
    return web.json_response({"node_id": record.node_id, "state": view.state.value if view else None,
                              "lease_s": manager.registry.lease_s, "heartbeat_s": HEARTBEAT_S,
                              "store": store})


async def delete_node(request: web.Request) -> web.Response:
    """DELETE /api/v1/nodes/{node_id}: the node leaves (its claims released)."""
    manager = _manager(request)
    check_bearer(request, manager.config.node_token)
    manager.links.forget(request.match_info["node_id"])
    try:
        await manager.registry.leave(request.match_info["node_id"])
    except UnknownNode:
        raise HttpError(404, "no_such_node", "no such node") from None
    except StoreUnavailable as e:
        raise HttpError(503, "store_unavailable", str(e), {"Retry-After": "1"}) from None
    return web.Response(status=204)


async def list_nodes(request: web.Request) -> web.Response:
    manager = _manager(request)
    check_bearer(request, manager.config.token)
    return web.json_response({"nodes": nodes_json(manager.registry)})


async def list_streams(request: web.Request) -> web.Response:
    manager = _manager(request)
    check_bearer(request, manager.config.token)
    return web.json_response({"streams": streams_json(manager.registry)})


# -- routes ----------------------------------------------------------------------------


async def get_route(request: web.Request) -> web.Response:
    """GET /api/v1/route/{publish|play}/{stream}[?group=][&unresponsive=NODE_ID]."""
    manager = _manager(request)
    check_bearer(request, manager.config.token)
    stream = stream_name(request)
    unresponsive = request.query.get(ROUTE_UNRESPONSIVE)
    if unresponsive:  # the client's last node stopped answering it: check it now
        manager.registry.report_unresponsive(unresponsive)
    try:
        answer = await manager.route(RouteKind(request.match_info["kind"]), stream, check_group(request))
    except RouteError as e:
        raise route_error(e) from None
    return web.json_response(answer.to_json())


async def locate(request: web.Request) -> web.Response:
    """GET /api/v1/locate/{stream}[?node=ID][&unresponsive=URL] (node token): where an edge
    may pull the stream from now, its origin first; `node` is the asking edge (left out of
    the answer), `unresponsive` an upstream whose events fell silent for it."""
    manager = _manager(request)
    check_bearer(request, manager.config.node_token)
    stream = stream_name(request)
    registry = manager.registry
    unresponsive = request.query.get(ROUTE_UNRESPONSIVE)  # an upstream that went silent
    if unresponsive:  # (its URL, as this answer gave it): checked at once
        for view in registry.views():
            if view.record.url == unresponsive:
                registry.report_unresponsive(view.node_id)
    views = upstream_candidates(stream, registry.views(), registry.origin_owner(stream),
                                registry.clock(), exclude=request.query.get("node"))
    return web.json_response({"stream": stream, "upstreams": [
        {"node": v.node_id, "role": v.role.value, "url": v.record.url, "state": v.state.value}
        for v in views]})


# -- operations ------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    manager = _manager(request)
    now = manager.registry.clock()
    live = sum(1 for v in manager.registry.views() if v.live(now))
    body = {"status": "draining" if manager.draining else "ok", "nodes": live,
            "store": type(manager.store).__name__, "uptime": round(manager.uptime(), 3)}
    return web.json_response(body, status=503 if manager.draining else 200)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=_manager(request).metrics.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4"})


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(str(WEB_DIR / "dashboard.html"))


async def feed(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/feed: text/event-stream of the cluster (first all of it, then every
    change). A browser's EventSource cannot send headers: `?token=` is accepted too."""
    manager = _manager(request)
    if manager.config.token and not token_matches(request.query.get("token"), manager.config.token):
        check_bearer(request, manager.config.token)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue = manager.feed.subscribe()
    try:
        await response.write(sse(manager.feed.snapshot()))
        while not manager.draining:
            try:
                async with asyncio.timeout(FEED_KEEPALIVE_S):
                    update = await queue.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(sse(update))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        manager.feed.unsubscribe(queue)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_put("/api/v1/nodes/{node_id}", put_node)
    app.router.add_delete("/api/v1/nodes/{node_id}", delete_node)
    app.router.add_get("/api/v1/nodes", list_nodes)
    app.router.add_get("/api/v1/streams", list_streams)
    app.router.add_get("/api/v1/route/{kind:publish|play}/{stream}", get_route)
    app.router.add_get("/api/v1/locate/{stream}", locate)
    app.router.add_get("/api/v1/feed", feed)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", dashboard)
    app.router.add_get("/dashboard", dashboard)
