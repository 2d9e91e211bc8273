"""What the node's HTTP endpoints share beyond ``unbroken.httpkit``: the application's
shared objects and the stream name in the path."""

from __future__ import annotations

from aiohttp import web

from unbroken.httpkit.cors import CORS_HEADERS
from unbroken.httpkit.errors import HttpError
from unbroken.protocol.refusals import Refusal, Refused
from unbroken.protocol.session import check_stream_name

__all__ = ["ADMISSION", "CORS_HEADERS", "STATE", "HttpError", "stream_name"]

# the application's shared objects: the node's state and its admission
STATE = web.AppKey("state")
ADMISSION = web.AppKey("admission")


def stream_name(request: web.Request) -> str:
    name = request.match_info["stream"]
    problem = check_stream_name(name)
    if problem:
        raise Refused(Refusal.BAD_STREAM_NAME, problem)
    return name
