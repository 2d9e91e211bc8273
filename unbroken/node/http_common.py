"""What every node HTTP endpoint shares: auth, CORS, bounded bodies, error answers."""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import web

from unbroken.protocol.errors import error_body
from unbroken.protocol.names import valid_stream_name

BODY_TIMEOUT = 10.0  # seconds to receive a request body

# the application's shared objects: the node's state and its metrics
STATE = web.AppKey("state")
METRICS = web.AppKey("metrics")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post, "
                                     "Retry-After",
    "Access-Control-Max-Age": "86400",
}


def error(status: int, code: str, reason: str, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, text=error_body(code, reason),
                        content_type="application/json", headers=headers)


class HttpError(Exception):
    def __init__(self, status: int, code: str, reason: str, headers: dict | None = None):
        super().__init__(reason)
        self.response = error(status, code, reason, headers)


def check_token(request: web.Request, token: str) -> None:
    if not token:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                            token.encode()):
        raise HttpError(401, "unauthorized", "missing or wrong bearer token",
                        {"WWW-Authenticate": 'Bearer realm="unbroken"'})


def stream_name(request: web.Request) -> str:
    name = request.match_info["stream"]
    if not valid_stream_name(name):
        raise HttpError(400, "bad_stream_name",
                        "stream names are 1-128 letters, digits, '_', '.', '-'")
    return name


async def read_text(request: web.Request, content_type: str, limit: int) -> str:
    given = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if given != content_type:
        raise HttpError(415, "unsupported_media_type", f"Content-Type must be {content_type}",
                        {"Accept-Post": content_type} if content_type == "application/sdp"
                        else None)
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
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "bad_encoding", "body is not UTF-8") from None


@web.middleware
async def errors_and_cors(request: web.Request, handler):
    try:
        response = await handler(request)
    except HttpError as exc:
        response = exc.response
    except web.HTTPException as exc:
        if exc.status >= 400:
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason,
                             allow)
        else:
            raise
    metrics = request.app.get(METRICS)
    if response.status >= 400 and metrics is not None:
        metrics.requests_rejected.labels(str(response.status)).inc()
    for key, value in CORS_HEADERS.items():
        response.headers.setdefault(key, value)
    return response
