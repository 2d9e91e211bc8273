"""Helpers for the manager tests: node records, and reading events with a bound."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterable

from unbroken.manager.model import NodeLimits, NodeLoad, NodeRecord, NodeRole, NodeState
from unbroken.manager.store import ClusterEvent, EventKind

EVENT_TIMEOUT_S = 3.0
_SEQ: dict[str, int] = {}


def record(
    node_id: str,
    role: NodeRole = NodeRole.ORIGIN,
    *,
    streams: Iterable[str] = (),
    state: NodeState = NodeState.SERVING,
    group: str = "default",
    sessions: int = 0,
    cpu: float = 0.0,
    limits: NodeLimits = NodeLimits(),
    port: int = 9000,
    seq: int | None = None,
) -> NodeRecord:
    """A node record; `seq` counts up by itself per node unless given."""
    if seq is None:
        seq = _SEQ[node_id] = _SEQ.get(node_id, 0) + 1
    return NodeRecord(
        node_id=node_id,
        role=role,
        url=f"http://10.0.0.1:{port}",
        group=group,
        instance="boot-1",
        seq=seq,
        state=state,
        load=NodeLoad(sessions=sessions, viewers=sessions, cpu=cpu),
        limits=limits,
        streams=frozenset(streams),
    )


async def next_event(
    events: AsyncIterator[ClusterEvent], *kinds: EventKind, timeout: float = EVENT_TIMEOUT_S
) -> ClusterEvent:
    """The next event of one of `kinds` (any kind when none is given), skipping others."""

    async def read() -> ClusterEvent:
        async for event in events:
            if not kinds or event.kind in kinds:
                return event
        raise AssertionError("the subscription ended")

    return await asyncio.wait_for(read(), timeout)


async def drain_events(events: AsyncIterator[ClusterEvent], quiet_s: float = 0.2) -> list[ClusterEvent]:
    """Every event that arrives until none came for `quiet_s`."""
    seen = []
    while True:
        try:
            seen.append(await asyncio.wait_for(anext(events), quiet_s))
        except TimeoutError:
            return seen
