"""Session-channel codes: ``error`` message codes and ``session_closing`` codes with the
WebSocket close code each one closes with."""

from __future__ import annotations

from enum import StrEnum

from .refusals import REFUSALS, Refusal

__all__ = ["CLOSE_CODES", "ChannelClose", "ErrorCode", "close_code"]


class ErrorCode(StrEnum):
    """``error`` message codes: bad input that the session survives."""

    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"  # not an object, binary frame, no "type"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"  # missing or wrong-typed field; `field` names it
    ALREADY_WELCOMED = "already_welcomed"
    DUPLICATE_ID = "duplicate_id"
    UNKNOWN_ID = "unknown_id"
    BAD_PONG = "bad_pong"


class ChannelClose(StrEnum):
    """``session_closing`` codes: why the node ends a session socket."""

    CLIENT_CLOSED = "client_closed"
    NODE_SHUTDOWN = "node_shutdown"
    MESSAGE_TOO_BIG = "message_too_big"
    INTERNAL_ERROR = "internal_error"
    PING_TIMEOUT = "ping_timeout"
    UNAUTHORIZED = "unauthorized"
    HELLO_REQUIRED = "hello_required"
    UNSUPPORTED_VERSION = "unsupported_version"
    RATE_LIMITED = "rate_limited"
    SLOW_READER = "slow_reader"
    # a proxy (the stream manager) between client and node stops: the node keeps the
    # session's streams for a resume, as when the socket breaks
    PROXY_GONE = "proxy_gone"


CLOSE_CODES: dict[str, int] = {
    ChannelClose.CLIENT_CLOSED: 1000,
    ChannelClose.NODE_SHUTDOWN: 1001,
    ChannelClose.MESSAGE_TOO_BIG: 1009,
    ChannelClose.INTERNAL_ERROR: REFUSALS[Refusal.INTERNAL_ERROR].close_code,
    ChannelClose.PING_TIMEOUT: 4000,
    ChannelClose.UNAUTHORIZED: REFUSALS[Refusal.UNAUTHORIZED].close_code,
    ChannelClose.HELLO_REQUIRED: 4002,
    ChannelClose.UNSUPPORTED_VERSION: 4003,
    ChannelClose.RATE_LIMITED: 4008,
    ChannelClose.SLOW_READER: 4009,
    ChannelClose.PROXY_GONE: 4010,
}


def close_code(code: str) -> int:
    """The WebSocket close code for a session_closing code (1008 when it has none)."""
    return CLOSE_CODES.get(code, 1008)
