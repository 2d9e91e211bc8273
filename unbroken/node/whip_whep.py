"""WHIP ingest (RFC 9725) and WHEP playback (draft-ietf-wish-whep) endpoints.

Both follow one resource model: POST an SDP offer to /{whip|whep}/{stream},
get 201 + answer + Location of the session resource; PATCH it with a trickle-ICE
fragment; DELETE it to end the session. Sessions of both also offer server-sent
events (active, inactive, reconnect, viewercount), advertised in a Link header.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web
from aiortc.sdp import candidate_from_sdp

from unbroken.httpkit.auth import check_bearer
from unbroken.httpkit.body import read_text
from unbroken.httpkit.cors import CORS_HEADERS
from unbroken.httpkit.errors import HttpError
from unbroken.protocol.endings import Ending
from unbroken.protocol.refusals import Refusal, Refused
from unbroken.protocol.sdp import (
    SDP_CONTENT_TYPE,
    TRICKLE_CONTENT_TYPE,
    SdpError,
    parse_trickle_fragment,
)
from unbroken.protocol.states import Kind
from unbroken.protocol.whip_whep import (
    KEEPALIVE_MS,
    MAX_KEEPALIVE_MS,
    MAX_WAIT_LIVE_MS,
    MIN_KEEPALIVE_MS,
    REPLACES,
    SSE_EVENTS,
    WAIT_LIVE_MS,
    events_link,
)

from .admission import OfferRequest
from .events import sse_frame
from .http_common import ADMISSION, STATE
from .media_session import MediaSession
from .state import NodeState

log = logging.getLogger("unbroken.node.http")

def state_of(request: web.Request) -> NodeState:
    return request.app[STATE]


def _session(request: web.Request, kind: Kind) -> MediaSession:
    session = state_of(request).sessions.get(request.match_info["session"])
    if (session is None or session.kind != kind
            or session.stream.name != request.match_info["stream"]):
        raise HttpError(404, "no_such_session", "no such session")
    return session


async def _offer_post(request: web.Request, kind: Kind, **options) -> web.Response:
    """POST /whip|whep/{stream}: the offer goes through the node's admission."""
    state = state_of(request)
    check_bearer(request, state.config.token)
    admission = request.app[ADMISSION]
    name = request.match_info["stream"]
    admission.check_open(name, kind)
    offer = await read_text(request, SDP_CONTENT_TYPE, state.config.max_body_bytes)
    session = await admission.admit(OfferRequest(kind, name, offer, **options))
    resource = session.resource
    return web.Response(status=201, text=session.answer, content_type="application/sdp",
                        headers={"Location": resource.location, "ETag": session.etag,
                                 "Accept-Patch": TRICKLE_CONTENT_TYPE,
                                 "Link": events_link(resource)})


async def whip_post(request: web.Request) -> web.Response:
    return await _offer_post(request, Kind.PUBLISH, replaces=request.query.get(REPLACES))


async def whep_post(request: web.Request) -> web.Response:
    return await _offer_post(request, Kind.PLAY, wait_live=_wait_live_seconds(request))


def session_handlers(kind: Kind):
    async def patch(request: web.Request) -> web.Response:
        state = state_of(request)
        check_bearer(request, state.config.token)
        session = _session(request, kind)
        body = await read_text(request, TRICKLE_CONTENT_TYPE, state.config.max_body_bytes)
        if_match = request.headers.get("If-Match")
        if if_match and if_match != "*" and if_match != session.etag:
            raise HttpError(412, "etag_mismatch", "If-Match does not match the session ETag")
        try:
            frag = parse_trickle_fragment(body)
        except SdpError as exc:
            raise HttpError(400, "bad_sdpfrag", str(exc)) from None
        ufrag, pwd = session.remote_ice
        if (frag.ice_ufrag and frag.ice_ufrag != ufrag) or (frag.ice_pwd and frag.ice_pwd != pwd):
            # RFC 9725 4.3.1: trickle supported, ICE restart not → 422; client starts anew
            raise HttpError(422, "ice_restart_unsupported",
                            "ICE restart is not supported; create a new session")
        for mid, line in frag.candidates:
            try:  # aiortc's candidate parser asserts or raises on malformed fields
                candidate = candidate_from_sdp(line.split(":", 1)[1])
                candidate.sdpMid = mid
                candidate.sdpMLineIndex = None if mid is not None else 0
                await session.peer.pc.addIceCandidate(candidate)
            except (ValueError, IndexError, AssertionError):
                raise HttpError(400, "bad_candidate",
                                f"malformed candidate: {line[:80]!r}") from None
        return web.Response(status=204)

    async def delete(request: web.Request) -> web.Response:
        state = state_of(request)
        check_bearer(request, state.config.token)
        session = _session(request, kind)
        await state.end(session, Ending.STOPPED, "deleted by client")
        return web.Response(status=200)

    return patch, delete


async def options(request: web.Request) -> web.Response:
    headers = dict(CORS_HEADERS)
    if request.match_info.get("session") is None:
        headers["Accept-Post"] = SDP_CONTENT_TYPE
    else:
        headers["Accept-Patch"] = TRICKLE_CONTENT_TYPE
    return web.Response(status=204, headers=headers)


async def events_subscribe(request: web.Request) -> web.Response:
    """POST a JSON list of event names to subscribe to; 201 + Location of the stream."""
    state = state_of(request)
    check_bearer(request, state.config.token)
    session = _session(request, Kind.of_path(request.match_info["kind"]))
    try:
        wanted = json.loads(await read_text(request, "application/json", 4096))
    except ValueError:
        raise HttpError(400, "bad_json", "body must be a JSON list of event names") from None
    if not isinstance(wanted, list) or not all(isinstance(e, str) for e in wanted):
        raise HttpError(400, "bad_json", "body must be a JSON list of event names")
    unknown = set(wanted) - set(SSE_EVENTS)
    if unknown:
        raise HttpError(400, "unknown_event", f"unknown events: {sorted(unknown)}")
    session.events.subscribed = set(wanted)
    return web.Response(status=201, headers={"Location": request.path})


def _wait_live_seconds(request: web.Request) -> float:
    """`?wait_live_ms=` (an unbroken extension): hold a WHEP POST for a stream that is not
    live yet up to this long, instead of answering 409 at once; bounded."""
    return _bounded_ms(request, WAIT_LIVE_MS, 0, MAX_WAIT_LIVE_MS, 0, Refusal.BAD_WAIT_LIVE)


def _keepalive_interval(request: web.Request) -> float:
    """`?keepalive_ms=` lets a client hear from the node often enough to tell a dead
    path from silence (like the session channel's pings); bounded."""
    return _bounded_ms(request, KEEPALIVE_MS, MIN_KEEPALIVE_MS, MAX_KEEPALIVE_MS,
                       MAX_KEEPALIVE_MS, Refusal.BAD_KEEPALIVE)


def _bounded_ms(request: web.Request, name: str, low: int, high: int, default: int,
                refusal: Refusal) -> float:
    """Query parameter `name`, integer ms in [low, high], as seconds."""
    value = request.query.get(name)
    if value is None:
        return default / 1000
    try:
        ms = int(value)
    except ValueError:
        raise Refused(refusal, f"{name} must be an integer") from None
    if not low <= ms <= high:
        raise Refused(refusal, f"{name} must be in [{low}, {high}]")
    return ms / 1000


async def events_stream(request: web.Request) -> web.StreamResponse:
    """text/event-stream of the session's events until the session ends; a comment
    line every keep-alive interval. WHIP sessions have it too (a publisher hears
    `reconnect` when the node drains, and can tell a dead node from the keep-alives)."""
    state = state_of(request)
    check_bearer(request, state.config.token)
    session = _session(request, Kind.of_path(request.match_info["kind"]))
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", **CORS_HEADERS})
    keepalive = _keepalive_interval(request)
    await response.prepare(request)
    channel = session.events
    queue = channel.attach()
    try:
        initial = "active" if session.stream.live else "inactive"
        await response.write(sse_frame(initial, {}))
        while True:
            item = await channel.next(queue, keepalive)
            if item is None:
                break
            event, data = item
            if event and event not in channel.subscribed:
                continue  # queued before the client narrowed its subscription
            await response.write(sse_frame(event, data) if event else b": keep-alive\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        channel.detach(queue)
    return response


def add_routes(app: web.Application) -> None:
    whip_patch, whip_delete = session_handlers(Kind.PUBLISH)
    whep_patch, whep_delete = session_handlers(Kind.PLAY)
    app.router.add_post("/whip/{stream}", whip_post)
    app.router.add_route("OPTIONS", "/whip/{stream}", options)
    app.router.add_patch("/whip/{stream}/{session}", whip_patch)
    app.router.add_delete("/whip/{stream}/{session}", whip_delete)
    app.router.add_route("OPTIONS", "/whip/{stream}/{session}", options)
    app.router.add_post("/whep/{stream}", whep_post)
    app.router.add_route("OPTIONS", "/whep/{stream}", options)
    app.router.add_patch("/whep/{stream}/{session}", whep_patch)
    app.router.add_delete("/whep/{stream}/{session}", whep_delete)
    app.router.add_route("OPTIONS", "/whep/{stream}/{session}", options)
    app.router.add_post("/{kind:whip|whep}/{stream}/{session}/events", events_subscribe)
    app.router.add_get("/{kind:whip|whep}/{stream}/{session}/events", events_stream)
    # CORS preflight: a page on another origin sends its token with the events request
    app.router.add_route("OPTIONS", "/{kind:whip|whep}/{stream}/{session}/events", options)
