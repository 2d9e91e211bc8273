"""Fault names clients report (restore reports, events), and which of them mean the
stream should be looked for on another node."""

from __future__ import annotations

from enum import StrEnum

from .refusals import Refusal

__all__ = ["NODE_UNRESPONSIVE", "ROUTE_UNRESPONSIVE", "TRY_ELSEWHERE", "Fault", "reconnect_fault"]


class Fault(StrEnum):
    """What made a client restore. Stream ``FAILED`` codes (``Ending``/``Refusal``) and
    session-channel close codes are reported as faults under their own names too."""

    BITRATE_ZERO = "bitrate_zero"  # publisher: outbound bytes stopped (seed 004)
    MEDIA_SILENCE = "media_silence"  # player: no media for a while
    FRAMES_STALLED = "frames_stalled"  # player: video packets arrive, no frame is decoded
    UNPUBLISHED = "unpublished"  # player: the stream stayed inactive
    PUBLISHER_MOVED = "publisher_moved"  # player: the stream is live on another node
    NODE_DRAINING = "node_draining"  # the node asked us to move (drain)
    RECONNECT = "reconnect"  # the node asked us to renegotiate (e.g. codec changed)
    SESSION_FAILED = "session_failed"  # the session channel failed without a code
    STREAM_FAILED = "stream_failed"  # a stream_state FAILED without a code
    HLS_ERROR = "hls_error"  # HLS requests failing
    CONNECTION_FAILED = "connection_failed"  # the peer connection failed
    CONNECTION_CLOSED = "connection_closed"  # the peer connection closed
    NETWORK_CHANGE = "network_change"  # the local network changed (seed 004)
    MISSING_PINGS = "missing_pings"  # the node went silent (pings or keep-alives)
    SESSION_CLOSED = "session_closed"  # the node ended the event stream


# faults that say the node stopped answering this client (it may be frozen: its TCP port
# still takes connections): the client's next route request names the node
# (ROUTE_UNRESPONSIVE), and the manager checks it at once, out of routing meanwhile,
# rather than when its heartbeats are found missing
NODE_UNRESPONSIVE = frozenset({Fault.MISSING_PINGS})
ROUTE_UNRESPONSIVE = "unresponsive"  # GET /api/v1/route/...?unresponsive=<node id>

# faults after which the next attempt should not insist on the same node
TRY_ELSEWHERE = frozenset({Fault.UNPUBLISHED, Fault.PUBLISHER_MOVED, Fault.NODE_DRAINING,
                           Fault.RECONNECT})


def reconnect_fault(data: dict) -> Fault:
    """The fault a ``reconnect`` event (or ``node_draining`` message) means, by its code."""
    return Fault.NODE_DRAINING if data.get("code") == Refusal.DRAINING else Fault.RECONNECT
