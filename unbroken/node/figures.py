"""What the node reports about itself: the API's stream and session views, and the live
figures of its metrics."""

from __future__ import annotations

import time

from unbroken.media.stream import Stream
from unbroken.protocol.states import Kind

from .state import NodeState, codec_names


def stream_info(state: NodeState, stream: Stream) -> dict:
    source = stream.source
    publisher = None
    upstream = state.puller.describe(stream.name) if state.puller is not None else None
    session = state.sessions.get(source.id) if source is not None else None
    if upstream is not None and source is not None and session is None:
        upstream["tracks"] = {kind: r.snapshot() for kind, r in source.receivers.items()}
    elif source is not None:
        publisher = {
            "session": source.id,
            "connection": session.peer.connection_state if session else "closed",
            "since": round(time.monotonic() - source.started_at, 3),
            "tracks": {kind: r.snapshot() for kind, r in source.receivers.items()},
        }
    return {
        "name": stream.name,
        "live": stream.live,
        "codecs": codec_names(stream),
        "publisher": publisher,
        "upstream": upstream,
        "viewers": len(stream.subscriber_ids),
    }


def session_infos(state: NodeState) -> list[dict]:
    now = time.monotonic()
    sessions = []
    for session in state.sessions.values():
        entry = {
            "id": session.id,
            "kind": session.kind,
            "stream": session.stream.name,
            "connection": session.peer.connection_state,
            "age": round(now - session.created_at, 3),
        }
        if session.kind == Kind.PLAY:
            entry["tracks"] = {kind: t.snapshot()
                               for kind, t in session.peer.downtracks.items()}
        sessions.append(entry)
    return sessions


def live_figures(state: NodeState) -> tuple[int, int, int, int, int]:
    """(streams, publishers, subscribers, forwarded packets, forwarded bytes)."""
    publishers = subscribers = packets = octets = 0
    for session in state.sessions.values():
        if session.kind == Kind.PUBLISH:
            publishers += 1
        else:
            subscribers += 1
            for track in session.peer.downtracks.values():
                packets += track.packets
                octets += track.octets
    return len(state.streams), publishers, subscribers, packets, octets
