"""Why a media session ended: a typed value chosen where the session is ended, carried to
the stream_state it produces (never read back out of the human-readable reason)."""

from __future__ import annotations

from enum import StrEnum

from .states import ENDED_STATE, Kind, StreamState

__all__ = ["Ending"]


class Ending(StrEnum):
    """The stream_state ``code`` of an ended session, with its default reason text and
    whether it ended on purpose (UNPUBLISHED / STOPPED) or FAILED."""

    STOPPED = "stopped"  # stop message, or DELETE of the resource
    SESSION_CLOSED = "session_closed"  # the client closed the session socket
    REPLACED = "replaced"  # another publisher took the stream over
    PEER_CLOSED = "peer_closed"  # the client closed its peer connection (DTLS close)
    CONNECT_TIMEOUT = "connect_timeout"  # ICE/DTLS did not connect (or no media) in time
    CONNECTION_FAILED = "connection_failed"  # ICE/DTLS failed
    MEDIA_TIMEOUT = "media_timeout"  # the publisher's media stopped
    CODEC_CHANGED = "codec_changed"  # play: the publisher came back with another codec
    NODE_SHUTDOWN = "node_shutdown"  # the node stopped (after draining)
    SESSION_LOST = "session_lost"  # the session socket was lost
    CLOSED = "closed"  # any other end

    @property
    def on_purpose(self) -> bool:
        return self in _ON_PURPOSE

    def final_state(self, kind: Kind) -> StreamState:
        return ENDED_STATE[Kind(kind)] if self.on_purpose else StreamState.FAILED


_ON_PURPOSE = frozenset({Ending.STOPPED, Ending.SESSION_CLOSED, Ending.REPLACED,
                         Ending.PEER_CLOSED})
