"""Read-only JSON API, health and metrics of a node."""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web

from unbroken.httpkit.auth import check_bearer
from unbroken.media.fastpath import PATH
from unbroken.media.rtc_internals import udp_mux
from unbroken.protocol.node_admin import DRAIN_PATH, parse_drain_request
from unbroken.protocol.vocabulary import vocabulary

from .figures import session_infos, stream_info
from .http_common import STATE, HttpError, stream_name
from .state import NodeState

log = logging.getLogger("unbroken.node")


def _state(request: web.Request) -> NodeState:
    return request.app[STATE]


async def list_streams(request: web.Request) -> web.Response:
    state = _state(request)
    check_bearer(request, state.config.token)
    return web.json_response({"streams": [stream_info(state, s)
                                          for s in state.streams.values()]})


async def get_stream(request: web.Request) -> web.Response:
    state = _state(request)
    check_bearer(request, state.config.token)
    stream = state.streams.get(stream_name(request))
    if stream is None:
        raise HttpError(404, "no_such_stream", "no such stream")
    return web.json_response(stream_info(state, stream))


async def list_sessions(request: web.Request) -> web.Response:
    state = _state(request)
    check_bearer(request, state.config.token)
    return web.json_response({"sessions": session_infos(state)})


async def healthz(request: web.Request) -> web.Response:
    state = _state(request)
    status = "draining" if state.draining else "ok"
    mux = udp_mux()
    return web.json_response({"status": status, "sessions": len(state.sessions),
                              "streams": len(state.streams), "forwarding": PATH.name,
                              # the shared ICE port per local address (bound at first use)
                              "ice_udp": mux.ports() if mux is not None else None,
                              "uptime": round(time.time() - state.started_at, 3)})


async def drain(request: web.Request) -> web.Response:
    """POST /api/v1/drain (node token): drain and exit, as on SIGTERM (protocol.node_admin)."""
    state = _state(request)
    if not state.config.node_token:
        raise HttpError(403, "forbidden", "this node has no node token: drain it with SIGTERM")
    check_bearer(request, state.config.node_token)
    body = await request.read()
    try:
        timeout = parse_drain_request(json.loads(body) if body.strip() else None)
    except ValueError as e:  # JSONDecodeError is one
        raise HttpError(400, "bad_request", str(e)) from None
    left = state.request_drain(state.config.drain_timeout if timeout is None else timeout)
    log.info("drain requested", extra={"timeout": timeout, "left": round(left, 3)})
    return web.json_response({"status": "draining", "node_id": state.config.node_id or None,
                              "timeout_s": round(left, 3)}, status=202)


async def metrics(request: web.Request) -> web.Response:
    body = _state(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def get_vocabulary(request: web.Request) -> web.Response:
    """The shared names (states, codes, events, extensions) for clients to check against."""
    return web.json_response(vocabulary())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/vocabulary", get_vocabulary)
    app.router.add_get("/api/v1/streams", list_streams)
    app.router.add_get("/api/v1/streams/{stream}", get_stream)
    app.router.add_get("/api/v1/sessions", list_sessions)
    app.router.add_get("/healthz", healthz)
    app.router.add_post(DRAIN_PATH, drain)
    app.router.add_get("/metrics", metrics)
