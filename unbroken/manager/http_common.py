"""What the manager's HTTP handlers share: request checks and route errors as answers."""

from __future__ import annotations

from aiohttp import web

from unbroken.httpkit.errors import HttpError
from unbroken.protocol.refusals import Refusal, Refused
from unbroken.protocol.session import check_stream_name

from .routing import RouteError, StreamNotLive

__all__ = ["check_group", "check_stream", "route_error", "stream_name"]


def check_stream(name: str) -> str:
    problem = check_stream_name(name)
    if problem:
        raise Refused(Refusal.BAD_STREAM_NAME, problem)
    return name


def stream_name(request: web.Request) -> str:
    return check_stream(request.match_info["stream"])


def check_group(request: web.Request) -> str | None:
    group = request.query.get("group")
    if group is not None and not (1 <= len(group) <= 64 and group.isprintable()):
        raise HttpError(400, "bad_group", "group must be 1-64 printable characters")
    return group


def route_error(error: RouteError, retry_after: int = 1) -> HttpError:
    """404 no node; 409 not live, with Retry-After."""
    if isinstance(error, StreamNotLive):
        return HttpError(error.status, "not_live", str(error), {"Retry-After": str(retry_after)})
    return HttpError(error.status, "no_node", str(error))
