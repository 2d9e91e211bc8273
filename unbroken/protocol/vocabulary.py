"""The whole shared vocabulary as JSON (``GET /api/v1/vocabulary``), so clients in other
languages (the browser SDK) can be tested to use the same names."""

from __future__ import annotations

from . import session, whip_whep
from .channel_codes import CLOSE_CODES, ChannelClose, ErrorCode
from .endings import Ending
from .faults import TRY_ELSEWHERE, Fault
from .refusals import REFUSALS
from .states import Kind, SessionState, StreamEvent, StreamState

__all__ = ["vocabulary"]


def vocabulary() -> dict:
    return {
        "session_states": list(SessionState),
        "stream_states": list(StreamState),
        "kinds": {kind.value: kind.path for kind in Kind},
        "stream_events": list(StreamEvent),
        "faults": list(Fault),
        "try_elsewhere": sorted(TRY_ELSEWHERE),
        "endings": {e.value: {"on_purpose": e.on_purpose} for e in Ending},
        "refusals": {code.value: {"status": wire.status,
                                  "http_error": wire.http_code or code.value,
                                  "retry_after": wire.retry_after,
                                  "close_code": wire.close_code}
                     for code, wire in REFUSALS.items()},
        "error_codes": list(ErrorCode),
        "session_closing": {code.value: CLOSE_CODES[code] for code in ChannelClose},
        "session_channel": {"path": session.PATH, "version": session.PROTOCOL_VERSION,
                            "client_messages": sorted(session.CLIENT_MESSAGES),
                            "server_messages": list(session.SERVER_MESSAGE_TYPES)},
        "whip_whep": {"sse_rel": whip_whep.SSE_REL,
                      "sse_events": list(whip_whep.SSE_EVENTS),
                      "replaces": whip_whep.REPLACES,
                      "wait_live_ms": whip_whep.WAIT_LIVE_MS,
                      "max_wait_live_ms": whip_whep.MAX_WAIT_LIVE_MS,
                      "keepalive_ms": whip_whep.KEEPALIVE_MS,
                      "keepalive_ms_range": [whip_whep.MIN_KEEPALIVE_MS,
                                             whip_whep.MAX_KEEPALIVE_MS]},
    }
