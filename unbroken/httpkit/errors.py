"""JSON error answers and the middleware that turns every failure into one (with CORS)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from unbroken.protocol.errors import error_body
from unbroken.protocol.refusals import Refused

from .cors import CORS_HEADERS

__all__ = ["HttpError", "error", "errors_and_cors", "refusal_response"]


def error(status: int, code: str, reason: str, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, text=error_body(code, reason),
                        content_type="application/json", headers=headers)


class HttpError(Exception):
    """An HTTP-only failure (bad header, wrong content type...): its answer is ready."""

    def __init__(self, status: int, code: str, reason: str, headers: dict | None = None):
        super().__init__(reason)
        self.response = error(status, code, reason, headers)


def refusal_response(exc: Refused) -> web.Response:
    headers = dict(exc.headers)
    if exc.wire.retry_after:
        headers.setdefault("Retry-After", str(1 if exc.retry_after is None else exc.retry_after))
    return error(exc.status, exc.http_code, exc.reason, headers or None)


def errors_and_cors(on_error: Callable[[int], None] | None = None):
    """Middleware: HttpError, Refused and aiohttp's own 4xx/5xx become JSON error bodies;
    every answer gets the CORS headers. `on_error(status)` counts the failures."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        try:
            response = await handler(request)
        except HttpError as exc:
            response = exc.response
        except Refused as exc:
            response = refusal_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason,
                             allow)
        if response.status >= 400 and on_error is not None:
            on_error(response.status)
        for key, value in CORS_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    return middleware
