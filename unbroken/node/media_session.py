"""One media session: a publish or a play of a stream, over one peer connection."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from unbroken.media.peer import Peer
from unbroken.media.stream import Stream
from unbroken.protocol.endings import Ending
from unbroken.protocol.states import Kind, StreamState
from unbroken.protocol.whip_whep import Resource

from .events import EventChannel


@dataclass
class MediaSession:
    """Owns what the node knows of one publish or play: its peer, the answer it got, its
    stream state, why it ended, and the event channel its clients listen to."""

    id: str
    kind: Kind
    stream: Stream
    peer: Peer
    remote_ice: tuple[str | None, str | None]
    answer: str = ""
    etag: str = field(default_factory=lambda: '"' + secrets.token_hex(8) + '"')
    events: EventChannel = field(default_factory=EventChannel)
    created_at: float = field(default_factory=time.monotonic)
    # stream state: None until media flows, then PUBLISHING/PLAYING, then a terminal one
    state: StreamState | None = None
    # set by whoever ends the session; None when the peer connection ended by itself
    ending: Ending | None = None

    @property
    def resource(self) -> Resource:
        return Resource(self.kind, self.stream.name, self.id)

    def final_state(self) -> tuple[StreamState, Ending]:
        """The state and code this session ends in."""
        ending = self.ending
        if ending is None:  # the peer connection closed or failed by itself
            connection = self.peer.connection_state
            ending = (Ending.CONNECTION_FAILED if connection == "failed"
                      else Ending.PEER_CLOSED if connection == "closed" else Ending.CLOSED)
        return ending.final_state(self.kind), ending
