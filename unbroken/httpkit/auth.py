"""The shared-secret token check, for HTTP ``Authorization: Bearer`` and any other carrier."""

from __future__ import annotations

import hmac

from aiohttp import web

from unbroken.protocol.refusals import Refusal, Refused

__all__ = ["check_bearer", "token_matches"]


def token_matches(given: str | None, expected: str) -> bool:
    """True when no token is required, or `given` is it (compared in constant time)."""
    if not expected:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def check_bearer(request: web.Request, expected: str) -> None:
    """Raise ``Refused(unauthorized)`` unless the request carries the bearer token."""
    if not expected:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token_matches(given.strip(), expected):
        raise Refused(Refusal.UNAUTHORIZED, "missing or wrong bearer token",
                      headers={"WWW-Authenticate": 'Bearer realm="unbroken"'})
