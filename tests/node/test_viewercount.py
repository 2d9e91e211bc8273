"""Viewer counts are told per stream at most every VIEWERCOUNT_INTERVAL: a burst of joins
(every viewer of a killed node re-joining) is a few events, not one per join per viewer."""

import asyncio

from unbroken.node import state as state_module
from unbroken.node.config import NodeConfig
from unbroken.node.media_session import MediaSession
from unbroken.node.state import NodeState
from unbroken.protocol.states import Kind


class FakePeer:
    connection_state = "connected"


def join(state: NodeState, stream, heard: list, n: int) -> MediaSession:
    session = MediaSession(f"v{n}", Kind.PLAY, stream, FakePeer(), (None, None))
    session.events.listeners.append(
        lambda event, data: heard.append((session.id, event, data.get("viewercount"))))
    state.sessions[session.id] = session
    stream.subscriber_ids.add(session.id)
    state._push_viewer_count(stream)
    return session


async def test_a_burst_of_joins_is_told_once_at_once_then_once_with_the_final_number(
        monkeypatch):
    monkeypatch.setattr(state_module, "VIEWERCOUNT_INTERVAL", 0.1)
    state = NodeState(NodeConfig())
    stream = state.stream("s")
    heard: list = []
    join(state, stream, heard, 0)
    assert heard == [("v0", "viewercount", 1)]  # the first change: at once
    for n in range(1, 20):
        join(state, stream, heard, n)
    assert len(heard) == 1  # the rest waits for the end of the interval
    await asyncio.sleep(0.15)
    assert sorted(heard[1:]) == sorted((f"v{n}", "viewercount", 20) for n in range(20))
    await asyncio.sleep(0.15)
    heard.clear()
    state.sessions.pop("v3")
    stream.subscriber_ids.discard("v3")
    state._push_viewer_count(stream)  # quiet for a while: told at once again
    assert len(heard) == 19 and {count for _, _, count in heard} == {19}
    await state.stop()


async def test_a_pending_count_of_a_forgotten_stream_is_dropped(monkeypatch):
    monkeypatch.setattr(state_module, "VIEWERCOUNT_INTERVAL", 0.05)
    state = NodeState(NodeConfig())
    stream = state.stream("s")
    heard: list = []
    join(state, stream, heard, 0)
    join(state, stream, heard, 1)  # pending
    state.sessions.clear()
    stream.subscriber_ids.clear()
    state.forget_idle(stream)  # no source, no viewers: gone, and so is its pending count
    assert "s" not in state.streams and not state._viewercount_pending
    await asyncio.sleep(0.1)
    assert heard == [("v0", "viewercount", 1)]
