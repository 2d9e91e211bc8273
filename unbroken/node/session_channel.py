"""The session channel: ``GET /ws``, one WebSocket per client session.

The protocol (messages, fields, codes) is ``unbroken.protocol.session`` and
``docs/session-channel.md``; the server side lives in ``unbroken.node.channel``. Publish
and play go through the node's ``Admission`` like WHIP/WHEP (same checks, options,
codecs, limits and conflicts); what the socket reports about a stream comes from the
media session's ``EventChannel`` (the source of the WHIP/WHEP server-sent events too).
One session's bad input or death never touches another: every socket has its own tasks,
its own bounded outbox and bounded handles; its streams end when it ends.
"""

from __future__ import annotations

from aiohttp import web

from unbroken.httpkit.auth import check_bearer
from unbroken.httpkit.errors import HttpError
from unbroken.protocol import session as proto
from unbroken.protocol.refusals import Refusal, Refused

from .channel.limits import Limits
from .channel.outbox import HARD_LIMIT_FACTOR, Socket
from .channel.registry import MAX_SOCKETS, ChannelRegistry
from .channel.socket_session import CLOSE_TIMEOUT, SocketSession
from .http_common import ADMISSION

CHANNELS = web.AppKey("session_channels", ChannelRegistry)


async def ws_handler(request: web.Request) -> web.StreamResponse:
    registry = request.app[CHANNELS]
    state = registry.state
    authorized = False
    if "Authorization" in request.headers:  # non-browser clients may use the header
        check_bearer(request, state.config.token)
        authorized = True
    ws = Socket(max_msg_size=registry.limits.max_message_bytes * HARD_LIMIT_FACTOR,
                heartbeat=None, compress=False, timeout=CLOSE_TIMEOUT, autoping=True)
    if not ws.can_prepare(request).ok:
        raise HttpError(426, "upgrade_required", "GET /ws needs a WebSocket upgrade",
                        {"Upgrade": "websocket", "Connection": "Upgrade"})
    if state.draining:
        raise Refused(Refusal.DRAINING, "node is draining")
    if len(registry.sockets) >= MAX_SOCKETS:
        raise Refused(Refusal.TOO_MANY_SESSIONS, "node is at its session limit")
    await ws.prepare(request)
    await SocketSession(registry, ws, request, authorized).run()
    return ws


async def list_channels(request: web.Request) -> web.Response:
    registry = request.app[CHANNELS]
    check_bearer(request, registry.state.config.token)
    return web.json_response({"channels": registry.snapshot()})


def setup(app: web.Application, limits: Limits | None = None) -> ChannelRegistry:
    """Add ``GET /ws`` (and ``GET /api/v1/channels``); close every socket on shutdown
    (after the node's streams ended, so their final states are sent first)."""
    registry = ChannelRegistry(app[ADMISSION], limits)
    app[CHANNELS] = registry
    app.router.add_get(proto.PATH, ws_handler)
    app.router.add_get("/api/v1/channels", list_channels)

    async def on_shutdown(app: web.Application) -> None:
        await registry.shutdown()

    app.on_shutdown.append(on_shutdown)
    return registry
