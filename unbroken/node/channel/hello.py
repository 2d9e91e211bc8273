"""The session channel's handshake: a valid ``hello`` (version, token) within the limit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from unbroken.httpkit.auth import token_matches
from unbroken.protocol import session as proto

from .outbox import Outbox


@dataclass(frozen=True)
class Hello:
    """What a client asked for in its hello, clamped to what the node allows."""

    ping_interval: int
    missing_pings: int
    client: str
    resume: tuple[str, str] | None = None  # (session id, resume token) to take over


def too_big(data: str | bytes, limit: int) -> bool:
    return len(data) > limit or isinstance(data, str) and len(data) * 4 > limit and \
        len(data.encode()) > limit


async def receive_hello(ws: web.WebSocketResponse, outbox: Outbox, timeout: float,
                        max_bytes: int, token: str, authorized: bool) -> Hello | None:
    """Wait for a valid hello; None (after an error and a close) when the session cannot
    start."""
    try:
        msg = await ws.receive(timeout)
    except asyncio.TimeoutError:
        outbox.close(proto.HELLO_REQUIRED, f"no hello within {timeout:g} s")
        return None
    if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and too_big(msg.data, max_bytes):
        outbox.close(proto.MESSAGE_TOO_BIG, f"a message exceeded {max_bytes} bytes")
        return None
    if msg.type != WSMsgType.TEXT:
        if msg.type == WSMsgType.BINARY:
            outbox.close(proto.HELLO_REQUIRED, "the first message must be a JSON hello")
        return None
    try:
        hello = proto.parse_client_message(msg.data)
    except proto.ProtocolError as exc:
        outbox.send(proto.error_from(exc))
        outbox.close(proto.HELLO_REQUIRED, "the first message must be a valid hello")
        return None
    if hello["type"] != "hello":
        outbox.send(proto.error(proto.HELLO_REQUIRED, "send hello first", hello["type"]))
        outbox.close(proto.HELLO_REQUIRED, "the first message must be hello")
        return None
    if hello["version"] not in proto.SUPPORTED_VERSIONS:
        versions = ", ".join(map(str, proto.SUPPORTED_VERSIONS))
        outbox.send(proto.error(proto.UNSUPPORTED_VERSION,
                                f"protocol version {hello['version']} is not supported; "
                                f"supported: {versions}", "hello"))
        outbox.close(proto.UNSUPPORTED_VERSION, f"supported versions: {versions}")
        return None
    if not authorized and not token_matches(hello.get("token", ""), token):
        outbox.send(proto.error(proto.UNAUTHORIZED, "missing or wrong token", "hello"))
        outbox.close(proto.UNAUTHORIZED, "missing or wrong token")
        return None
    resume = (hello["resume"], hello.get("resume_token", "")) if "resume" in hello else None
    return Hello(proto.clamp_ping_interval(hello.get("ping_interval")),
                 proto.clamp_missing_pings(hello.get("missing_pings")),
                 hello.get("client", ""), resume)
