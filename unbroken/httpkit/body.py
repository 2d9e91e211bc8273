"""Request bodies read whole, but bounded in size and time."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .errors import HttpError

__all__ = ["BODY_TIMEOUT", "read_bytes", "read_text"]

BODY_TIMEOUT = 10.0  # seconds to receive a request body


async def read_text(request: web.Request, content_type: str, limit: int) -> str:
    given = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if given != content_type:
        raise HttpError(415, "unsupported_media_type", f"Content-Type must be {content_type}",
                        {"Accept-Post": content_type} if content_type == "application/sdp"
                        else None)
    body = await read_bytes(request, limit)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "bad_encoding", "body is not UTF-8") from None


async def read_bytes(request: web.Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (413 beyond), within BODY_TIMEOUT (408)."""
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, "body_too_large", f"body exceeds {limit} bytes")
    # read() returns what has arrived so far: keep reading until the end or past the limit;
    # a client that announces more than it sends must not hold the request forever
    body = b""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            while len(body) <= limit:
                chunk = await request.content.read(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
    except TimeoutError:
        raise HttpError(408, "body_timeout",
                        f"request body not complete within {BODY_TIMEOUT:g} s") from None
    if len(body) > limit:
        raise HttpError(413, "body_too_large", f"body exceeds {limit} bytes")
    return body
