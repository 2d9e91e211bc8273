"""Per-session event channels: what WHIP/WHEP server-sent events and the session socket
(``session_channel``) both tell a client, so the two never disagree."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from unbroken.protocol import session as proto

log = logging.getLogger("unbroken.node")

# stream states and the drain notice, with the same fields as on the session socket
STATE_EVENTS = ("stream_state", "node_draining")
# events a WHIP/WHEP client may subscribe to (draft-ietf-wish-whep, server-sent events)
WHEP_EVENTS = ("active", "inactive", "reconnect", "viewercount", *STATE_EVENTS)
MAX_QUEUED_EVENTS = 64


class EventChannel:
    def __init__(self) -> None:
        self.subscribed: set[str] = set(WHEP_EVENTS)
        self._queue: asyncio.Queue[tuple[str, dict] | None] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self.closed = False
        # called with every pushed event, subscribed or not (the session socket listens)
        self.listeners: list[Callable[[str, dict], None]] = []

    def push(self, event: str, data: dict | None = None) -> None:
        if self.closed:
            return
        for listener in list(self.listeners):
            try:
                listener(event, data or {})
            except Exception:
                log.exception("event listener failed")
        if event not in self.subscribed:
            return
        if self._queue.full():  # a reader that does not keep up loses the oldest events
            self._queue.get_nowait()
        self._queue.put_nowait((event, data or {}))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def next(self, timeout: float) -> tuple[str, dict] | None:
        """The next event; ("", {}) on timeout (time for a keep-alive); None when closed."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return "", {}


def sse_frame(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


# peer close reasons (as given to NodeState.end / Peer.close) -> stream_state code;
# None: ended on purpose (UNPUBLISHED / STOPPED), else FAILED
_ENDINGS = (
    ("deleted by client", None, proto.STOPPED_BY_CLIENT),
    ("stopped by client", None, proto.STOPPED_BY_CLIENT),
    ("session closed", None, proto.SESSION_CLOSED),
    ("replaced by a new publisher", None, proto.REPLACED),
    ("connection closed", None, proto.PEER_CLOSED),
    ("session lost", proto.FAILED, proto.SESSION_LOST),
    ("codec changed", proto.FAILED, proto.CODEC_CHANGED),
    ("media timeout", proto.FAILED, proto.MEDIA_TIMEOUT),
    ("no media before connect timeout", proto.FAILED, proto.CONNECT_TIMEOUT),
    ("not connected before connect timeout", proto.FAILED, proto.CONNECT_TIMEOUT),
    ("connection failed", proto.FAILED, proto.CONNECTION_FAILED),
    ("node shutting down", proto.FAILED, proto.NODE_SHUTDOWN),
)


def final_state(kind: str, close_reason: str) -> tuple[str, str]:
    """(stream state, code) of a session that ended for `close_reason`."""
    for prefix, state, code in _ENDINGS:
        if close_reason.startswith(prefix):
            return state or proto.ENDED_STATE[kind], code
    return proto.FAILED, proto.CLOSED
