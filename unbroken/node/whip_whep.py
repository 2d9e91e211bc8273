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

from unbroken.media.peer import NegotiationError
from unbroken.protocol.sdp import (
    SDP_CONTENT_TYPE,
    TRICKLE_CONTENT_TYPE,
    SdpError,
    check_offer,
    offer_ice_credentials,
    parse_trickle_fragment,
)

from .events import WHEP_EVENTS, sse_frame
from .http_common import CORS_HEADERS, STATE, HttpError, check_token, read_text, stream_name
from .state import NodeState, NotLive, Session, StreamBusy

log = logging.getLogger("unbroken.node.http")

SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events"
SSE_KEEPALIVE = 10.0
SSE_MIN_KEEPALIVE_MS = 100
MAX_WAIT_LIVE_MS = 5000
KIND_OF_PATH = {"whip": "publish", "whep": "play"}


def state_of(request: web.Request) -> NodeState:
    return request.app[STATE]


def _session(request: web.Request, path_kind: str) -> Session:
    session = state_of(request).sessions.get(request.match_info["session"])
    if (session is None or session.kind != KIND_OF_PATH[path_kind]
            or session.stream.name != request.match_info["stream"]):
        raise HttpError(404, "no_such_session", "no such session")
    return session


def _location(path_kind: str, session: Session) -> str:
    return f"/{path_kind}/{session.stream.name}/{session.id}"


async def _offer(request: web.Request) -> tuple[NodeState, str, str]:
    state = state_of(request)
    check_token(request, state.config.token)
    name = stream_name(request)
    if state.draining:
        raise HttpError(503, "draining", "node is draining", {"Retry-After": "1"})
    if len(state.sessions) >= state.config.max_sessions:
        raise HttpError(503, "too_many_sessions", "node is at its session limit",
                        {"Retry-After": "1"})
    offer = await read_text(request, SDP_CONTENT_TYPE, state.config.max_body_bytes)
    try:
        check_offer(offer)
    except SdpError as exc:
        raise HttpError(400, "bad_sdp", str(exc)) from None
    return state, name, offer


def _created(session: Session, path_kind: str, extra: dict | None = None) -> web.Response:
    headers = {
        "Location": _location(path_kind, session),
        "ETag": session.etag,
        "Accept-Patch": TRICKLE_CONTENT_TYPE,
        **(extra or {}),
    }
    return web.Response(status=201, text=session.answer, content_type="application/sdp",
                        headers=headers)


async def whip_post(request: web.Request) -> web.Response:
    state, name, offer = await _offer(request)
    try:
        session = await state.publish(name, offer, offer_ice_credentials(offer),
                                      replaces=request.query.get("replaces"))
    except StreamBusy:
        raise HttpError(409, "stream_busy",
                        f"stream {name!r} already has a live publisher") from None
    except NegotiationError as exc:
        raise HttpError(exc.status, "negotiation_failed", exc.reason) from None
    return _created(session, "whip", {"Link": _events_link("whip", session)})


async def whep_post(request: web.Request) -> web.Response:
    state, name, offer = await _offer(request)
    retry = {"Retry-After": str(state.config.retry_after)}
    try:
        session = await state.play(name, offer, offer_ice_credentials(offer),
                                   wait_live=_wait_live_seconds(request))
    except NotLive:
        raise HttpError(409, "not_live", f"stream {name!r} is not live", retry) from None
    except NegotiationError as exc:
        raise HttpError(exc.status, "negotiation_failed", exc.reason) from None
    return _created(session, "whep", {"Link": _events_link("whep", session)})


def session_handlers(path_kind: str):
    async def patch(request: web.Request) -> web.Response:
        state = state_of(request)
        check_token(request, state.config.token)
        session = _session(request, path_kind)
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
        check_token(request, state.config.token)
        session = _session(request, path_kind)
        await state.end(session, "deleted by client")
        return web.Response(status=200)

    return patch, delete


async def options(request: web.Request) -> web.Response:
    headers = dict(CORS_HEADERS)
    if request.match_info.get("session") is None:
        headers["Accept-Post"] = SDP_CONTENT_TYPE
    else:
        headers["Accept-Patch"] = TRICKLE_CONTENT_TYPE
    return web.Response(status=204, headers=headers)


def _events_link(path_kind: str, session: Session) -> str:
    events = f"{_location(path_kind, session)}/events"
    return f'<{events}>; rel="{SSE_REL}"; events="{",".join(WHEP_EVENTS)}"'


async def events_subscribe(request: web.Request) -> web.Response:
    """POST a JSON list of event names to subscribe to; 201 + Location of the stream."""
    state = state_of(request)
    check_token(request, state.config.token)
    session = _session(request, request.match_info["kind"])
    try:
        wanted = json.loads(await read_text(request, "application/json", 4096))
    except ValueError:
        raise HttpError(400, "bad_json", "body must be a JSON list of event names") from None
    if not isinstance(wanted, list) or not all(isinstance(e, str) for e in wanted):
        raise HttpError(400, "bad_json", "body must be a JSON list of event names")
    unknown = set(wanted) - set(WHEP_EVENTS)
    if unknown:
        raise HttpError(400, "unknown_event", f"unknown events: {sorted(unknown)}")
    session.events.subscribed = set(wanted)
    return web.Response(status=201, headers={"Location": request.path})


def _wait_live_seconds(request: web.Request) -> float:
    """`?wait_live_ms=` (an unbroken extension): hold a WHEP POST for a stream that is not
    live yet up to this long, instead of answering 409 at once; bounded."""
    value = request.query.get("wait_live_ms")
    if value is None:
        return 0.0
    try:
        ms = int(value)
    except ValueError:
        raise HttpError(400, "bad_wait_live", "wait_live_ms must be an integer") from None
    if not 0 <= ms <= MAX_WAIT_LIVE_MS:
        raise HttpError(400, "bad_wait_live", f"wait_live_ms must be in [0, {MAX_WAIT_LIVE_MS}]")
    return ms / 1000


def _keepalive_interval(request: web.Request) -> float:
    """`?keepalive_ms=` lets a client hear from the node often enough to tell a dead
    path from silence (like the session channel's pings); bounded."""
    value = request.query.get("keepalive_ms")
    if value is None:
        return SSE_KEEPALIVE
    try:
        ms = int(value)
    except ValueError:
        raise HttpError(400, "bad_keepalive", "keepalive_ms must be an integer") from None
    if not SSE_MIN_KEEPALIVE_MS <= ms <= SSE_KEEPALIVE * 1000:
        raise HttpError(400, "bad_keepalive",
                        f"keepalive_ms must be in [{SSE_MIN_KEEPALIVE_MS}, "
                        f"{int(SSE_KEEPALIVE * 1000)}]")
    return ms / 1000


async def events_stream(request: web.Request) -> web.StreamResponse:
    """text/event-stream of the session's events until the session ends; a comment
    line every keep-alive interval. WHIP sessions have it too (a publisher hears
    `reconnect` when the node drains, and can tell a dead node from the keep-alives)."""
    state = state_of(request)
    check_token(request, state.config.token)
    session = _session(request, request.match_info["kind"])
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", **CORS_HEADERS})
    keepalive = _keepalive_interval(request)
    await response.prepare(request)
    channel = session.events
    initial = "active" if session.stream.live else "inactive"
    await response.write(sse_frame(initial, {}))
    try:
        while True:
            item = await channel.next(keepalive)
            if item is None:
                break
            event, data = item
            if event and event not in channel.subscribed:
                continue  # queued before the client narrowed its subscription
            await response.write(sse_frame(event, data) if event else b": keep-alive\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


def add_routes(app: web.Application) -> None:
    whip_patch, whip_delete = session_handlers("whip")
    whep_patch, whep_delete = session_handlers("whep")
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
