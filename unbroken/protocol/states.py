"""Session and stream states, stream kinds and stream events: the names every server and
client reports, defined once."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTIVE_STATE", "ENDED_STATE", "TERMINAL_STATES", "Kind", "SessionState",
           "StreamEvent", "StreamState"]


class SessionState(StrEnum):
    """What a client reports about its signaling session (seed 004)."""

    ESTABLISHED = "ESTABLISHED"  # welcome received
    DISCONNECTED = "DISCONNECTED"  # closed by the client on purpose: never restored
    FAILED = "FAILED"  # lost: missing pings, socket error, closed by the node


class StreamState(StrEnum):
    """Where one publish or play is (sent by the node in stream_state)."""

    PUBLISHING = "PUBLISHING"  # the node receives the publisher's media
    UNPUBLISHED = "UNPUBLISHED"  # publishing ended on purpose (stop, DELETE, replaced)
    PLAYING = "PLAYING"  # the node sends the stream's media to the player
    STOPPED = "STOPPED"  # playing ended on purpose (stop, DELETE)
    FAILED = "FAILED"  # refused or lost; the code says why


class Kind(StrEnum):
    """What a media session does with its stream: the session-channel message type, the
    API's ``kind`` field, and (``path``) the HTTP path that makes one."""

    PUBLISH = "publish"
    PLAY = "play"

    @property
    def path(self) -> str:
        return "whip" if self is Kind.PUBLISH else "whep"

    @classmethod
    def of_path(cls, path: str) -> "Kind":
        return cls.PUBLISH if path == "whip" else cls.PLAY


class StreamEvent(StrEnum):
    """What happens to a played stream (stream_event, and server-sent events)."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    VIEWERCOUNT = "viewercount"


ACTIVE_STATE = {Kind.PUBLISH: StreamState.PUBLISHING, Kind.PLAY: StreamState.PLAYING}
ENDED_STATE = {Kind.PUBLISH: StreamState.UNPUBLISHED, Kind.PLAY: StreamState.STOPPED}
TERMINAL_STATES = (StreamState.UNPUBLISHED, StreamState.STOPPED, StreamState.FAILED)
