"""Why the node refuses a request, and how each entry point says it: one table from a
refusal code to its HTTP status (and HTTP error code) and its session-channel answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["REFUSALS", "Refusal", "RefusalWire", "Refused"]


class Refusal(StrEnum):
    """A request the node will not serve (session channel: stream_state FAILED code or
    session_closing code; HTTP: the JSON error body's ``error``)."""

    BAD_STREAM_NAME = "bad_stream_name"
    BAD_SDP = "bad_sdp"
    UNSUPPORTED_CODEC = "unsupported_codec"  # no codec in the offer the node can use
    NEGOTIATION_FAILED = "negotiation_failed"
    NOT_LIVE = "not_live"  # play: the stream has no publisher
    STREAM_BUSY = "stream_busy"  # publish: the stream already has a publisher
    EDGE_NO_PUBLISH = "edge_no_publish"  # publish: an edge only serves viewers
    DRAINING = "draining"  # the node takes no new streams
    TOO_MANY_SESSIONS = "too_many_sessions"  # the node is full
    TOO_MANY_STREAMS = "too_many_streams"  # this socket session holds max_streams already
    UNAUTHORIZED = "unauthorized"
    BAD_WAIT_LIVE = "bad_wait_live"
    BAD_KEEPALIVE = "bad_keepalive"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class RefusalWire:
    """How one refusal looks on the wire."""

    status: int  # HTTP status
    http_code: str | None = None  # HTTP error code when it differs from the refusal code
    retry_after: bool = False  # HTTP: send Retry-After
    close_code: int | None = None  # session channel: the WebSocket close code, if it closes


REFUSALS: dict[Refusal, RefusalWire] = {
    Refusal.BAD_STREAM_NAME: RefusalWire(400),
    Refusal.BAD_SDP: RefusalWire(400),
    Refusal.UNSUPPORTED_CODEC: RefusalWire(406, http_code="negotiation_failed"),
    Refusal.NEGOTIATION_FAILED: RefusalWire(400),
    Refusal.NOT_LIVE: RefusalWire(409, retry_after=True),
    Refusal.STREAM_BUSY: RefusalWire(409),
    # for good on this node (no Retry-After): publishers belong on an origin
    Refusal.EDGE_NO_PUBLISH: RefusalWire(403),
    Refusal.DRAINING: RefusalWire(503, retry_after=True),
    Refusal.TOO_MANY_SESSIONS: RefusalWire(503, retry_after=True),
    Refusal.TOO_MANY_STREAMS: RefusalWire(429),
    Refusal.UNAUTHORIZED: RefusalWire(401, close_code=4001),
    Refusal.BAD_WAIT_LIVE: RefusalWire(400),
    Refusal.BAD_KEEPALIVE: RefusalWire(400),
    Refusal.INTERNAL_ERROR: RefusalWire(500, close_code=1011),
}


@dataclass
class Refused(Exception):
    """A refusal with its code, the reason for a human, and when to try again (s)."""

    code: Refusal
    reason: str
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.reason)

    @property
    def wire(self) -> RefusalWire:
        return REFUSALS[self.code]

    @property
    def status(self) -> int:
        return self.wire.status

    @property
    def http_code(self) -> str:
        return self.wire.http_code or self.code
