"""The node's public paths, served by the manager: WHIP/WHEP offers (routed), PATCH and
DELETE on their sessions and their server-sent events (the node found from the path),
the session channel (`GET /ws`), HLS, and the demo pages. Clients never need a node's
address; any manager replica serves any follow-up request (see paths.py)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from urllib.parse import quote, urlencode

from aiohttp import web

from unbroken.httpkit.body import read_bytes
from unbroken.httpkit.cors import CORS_HEADERS
from unbroken.httpkit.errors import HttpError
from unbroken.httpkit.static import add_web_routes
from unbroken.protocol.refusals import Refusal, Refused
from unbroken.protocol.whip_whep import MAX_WAIT_LIVE_MS, REPLACES, WAIT_LIVE_MS

from .http_common import check_group, check_stream, route_error, stream_name
from .model import NodeRole
from .paths import ForgedPath, split_segment
from .proxy import NodeFailure
from .registry import NodeView
from .routing import RouteAnswer, RouteError, RouteKind, StreamNotLive, routable, two_choices
from .service import MANAGER, Manager

__all__ = ["add_routes", "starts_session"]

SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
ROUTE_ATTEMPTS = 2  # a node found dead while connecting: the offer goes to another one
LIVE_POLL_S = 0.05
_rng = random.Random()


def _manager(request: web.Request) -> Manager:
    return request.app[MANAGER]


def _refuse_when_draining(manager: Manager) -> None:
    if manager.draining:
        raise Refused(Refusal.DRAINING, "the manager is draining; use another one")


def target(manager: Manager, node_id: str) -> NodeView:
    """A registered node whose lease holds; 404 for anything else (forged, gone), except
    a node not heard of by a manager that has just started: 503 (it may be one whose
    first heartbeat here is still to come; its clients keep their sessions)."""
    view = manager.registry.view(node_id)
    if view is None and manager.learning_nodes():
        raise HttpError(503, "node_not_known_yet", "this manager has just started and does "
                        "not know that node yet", {"Retry-After": "1"})
    if view is None or not view.live(manager.registry.clock()):
        raise HttpError(404, "no_such_session", "no such session")
    return view


def _session_target(request: web.Request) -> tuple[NodeView, str]:
    """The node and the node's own path for a session path of ours."""
    manager = _manager(request)
    kind = request.match_info["kind"]
    stream = stream_name(request)
    try:
        ref = split_segment(request.match_info["session"])
    except ForgedPath:
        raise HttpError(404, "no_such_session", "no such session") from None
    return target(manager, ref.node_id), f"/{kind}/{quote(stream, safe='')}/{ref.session}"


# -- offers ----------------------------------------------------------------------------


async def _offer(request: web.Request, kind: RouteKind) -> web.StreamResponse:
    manager = _manager(request)
    stream = stream_name(request)
    _refuse_when_draining(manager)
    group = check_group(request)
    body = await read_bytes(request, manager.config.max_body_bytes)
    query = [(k, v) for k, v in request.query.items() if k != "group"]
    query = [(k, _node_session(v) if k == REPLACES else v) for k, v in query]
    path = f"/{'whip' if kind is RouteKind.PUBLISH else 'whep'}/{quote(stream, safe='')}"
    if query:
        path += "?" + urlencode(query)
    wait_live = _wait_live_s(request) if kind is RouteKind.PLAY else 0.0
    for attempt in range(ROUTE_ATTEMPTS):
        answer = await _route_waiting(manager, kind, stream, group, wait_live)
        view = manager.registry.view(answer.node_id)
        if view is None:
            continue
        try:
            return await manager.proxy.forward(request, view, path, kind.value, body)
        except NodeFailure as e:
            if not e.retryable or attempt + 1 == ROUTE_ATTEMPTS:
                raise
    raise HttpError(404, "no_node", "no node could take the session")


def _wait_live_s(request: web.Request) -> float:
    """WHEP's `?wait_live_ms=` (checked again by the node): the manager too waits that
    long for the stream to be live somewhere before answering 409."""
    try:
        return min(max(int(request.query.get(WAIT_LIVE_MS, "0")), 0), MAX_WAIT_LIVE_MS) / 1000
    except ValueError:
        return 0.0


async def _route_waiting(manager: Manager, kind: RouteKind, stream: str, group: str | None,
                         wait_s: float) -> RouteAnswer:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await manager.route(kind, stream, group)
        except StreamNotLive as e:
            if time.monotonic() >= deadline:
                raise route_error(e) from None
        except RouteError as e:
            raise route_error(e) from None
        await asyncio.sleep(LIVE_POLL_S)


def _node_session(value: str) -> str:
    """`?replaces=` names our session path segment; the node knows its own part."""
    try:
        return split_segment(value).session
    except ForgedPath:
        return value


async def whip_post(request: web.Request) -> web.StreamResponse:
    return await _offer(request, RouteKind.PUBLISH)


async def whep_post(request: web.Request) -> web.StreamResponse:
    return await _offer(request, RouteKind.PLAY)


async def session_request(request: web.Request) -> web.StreamResponse:
    """PATCH/DELETE on a session, POST/GET on its events: to the session's node."""
    manager = _manager(request)
    view, path = _session_target(request)
    if request.match_info.get("events"):
        path += "/events"
    if request.query_string:
        path += "?" + request.query_string
    body = None
    if request.method in ("PATCH", "POST"):
        body = await read_bytes(request, manager.config.max_body_bytes)
    return await manager.proxy.forward(request, view, path, "session", body)


async def options(request: web.Request) -> web.Response:
    headers = dict(CORS_HEADERS)
    if request.match_info.get("session") is None:
        headers["Accept-Post"] = SDP
    else:
        headers["Accept-Patch"] = TRICKLE
    return web.Response(status=204, headers=headers)


# -- the session channel ---------------------------------------------------------------


async def websocket(request: web.Request) -> web.StreamResponse:
    """GET /ws[?stream=NAME&kind=publish|play]: the socket goes to the node that route
    would pick for that stream; without a stream, to the less loaded of two serving
    publisher-taking nodes (a socket may then publish and play there). ``?node=ID``: to
    that node only (a client resuming its session there)."""
    manager = _manager(request)
    _refuse_when_draining(manager)
    stream = request.query.get("stream")
    kind = request.query.get("kind", "play")
    if kind not in ("publish", "play"):
        raise HttpError(400, "bad_kind", "kind must be publish or play")
    if stream is not None:
        check_stream(stream)
    group = check_group(request)
    node = request.query.get("node")
    if node is not None:  # a resume: only that node keeps the session
        return await manager.proxy.websocket(request, target(manager, node), request.path_qs)
    for attempt in range(ROUTE_ATTEMPTS):
        if stream is None:
            view = _any_node(manager, group)
        else:
            try:
                answer = await manager.route(RouteKind(kind), stream, group)
            except RouteError as e:
                raise route_error(e) from None
            view = manager.registry.view(answer.node_id)
            if view is None:
                continue
        try:
            return await manager.proxy.websocket(request, view, request.path_qs)
        except NodeFailure as e:
            if not e.retryable or attempt + 1 == ROUTE_ATTEMPTS:
                raise
    raise HttpError(404, "no_node", "no node could take the session channel")


def _any_node(manager: Manager, group: str | None) -> NodeView:
    now = manager.registry.clock()
    views = [v for v in manager.registry.views() if routable(v, now, group)]
    publishers = [v for v in views if v.role.takes_publishers]
    try:
        return two_choices(publishers or views, _rng)
    except RouteError as e:
        raise route_error(e) from None


# -- HLS -------------------------------------------------------------------------------


async def hls(request: web.Request) -> web.StreamResponse:
    """GET /hls/{stream}/{file}: every request of a stream goes to the same node (by
    rendezvous hashing over the nodes that carry it, edges first), on every replica, so
    a player's playlist and segments agree."""
    manager = _manager(request)
    stream = stream_name(request)
    file = request.match_info["file"]
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", file) or ".." in file:
        raise HttpError(404, "not_found", "no such file")
    view = await _hls_node(manager, stream, check_group(request))
    path = f"/hls/{quote(stream, safe='')}/{file}"
    if request.query_string:
        path += "?" + request.query_string
    return await manager.proxy.forward(request, view, path, "hls")


async def _hls_node(manager: Manager, stream: str, group: str | None) -> NodeView:
    registry = manager.registry
    now = registry.clock()
    live = [v for v in registry.views() if v.live(now) and (group is None or v.group == group)]
    carriers = registry.carriers(stream)
    candidates = [v for v in live if v.role is NodeRole.EDGE and v.node_id in carriers] or [
        v for v in live if v.role.takes_publishers and v.record.carries(stream)]
    if not candidates:
        try:
            answer = await manager.route(RouteKind.PLAY, stream, group)
        except RouteError as e:
            raise route_error(e) from None
        chosen = registry.view(answer.node_id)
        if chosen is None:
            raise HttpError(404, "no_node", "no node serves the stream")
        return chosen
    return max(candidates, key=lambda v: hashlib.sha256(f"{stream}\0{v.node_id}".encode()).digest())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/whip/{stream}", whip_post)
    app.router.add_post("/whep/{stream}", whep_post)
    app.router.add_route("OPTIONS", "/{kind:whip|whep}/{stream}", options)
    session = "/{kind:whip|whep}/{stream}/{session}"
    app.router.add_patch(session, session_request)
    app.router.add_delete(session, session_request)
    app.router.add_route("OPTIONS", session, options)
    app.router.add_post(session + "/{events:events}", session_request)
    app.router.add_get(session + "/{events:events}", session_request)
    app.router.add_route("OPTIONS", session + "/{events:events}", options)  # CORS preflight
    app.router.add_get("/ws", websocket)
    app.router.add_get("/hls/{stream}/{file}", hls)
    add_web_routes(app)


def starts_session(request: web.Request) -> bool:
    """Requests that count against the per-client session limit."""
    return (request.method == "POST" and request.path.count("/") == 2
            and request.path.startswith(("/whip/", "/whep/"))) or request.path == "/ws"
