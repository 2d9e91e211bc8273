"""The dashboard's live feed: the cluster (nodes, streams) and a log of what happened
(node joined, serving, draining, suspect, lapsed; stream started, moved, ended), found by
comparing the registry's view every tick, and pushed to subscribers as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from typing import Any

from .cluster import live_views, nodes_json, streams_json
from .registry import Registry

__all__ = ["ClusterFeed", "sse"]

TICK_S = 0.5
HISTORY = 100
QUEUE = 8  # snapshots queued per subscriber; a slow one skips, it never blocks the feed


class ClusterFeed:
    """Owns the event log and the subscriber queues; `run()` ticks until cancelled."""

    def __init__(self, registry: Registry, tick_s: float = TICK_S) -> None:
        self.registry = registry
        self.tick_s = tick_s
        self.events: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._nodes: dict[str, str] = {}
        self._origins: dict[str, str | None] = {}
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="unbroken-manager-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def snapshot(self) -> dict[str, Any]:
        return {"nodes": nodes_json(self.registry), "streams": streams_json(self.registry),
                "events": list(self.events)}

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.tick_s)

    def _note(self, kind: str, text: str, **fields: Any) -> dict[str, Any]:
        event = {"t": round(time.time(), 3), "kind": kind, "text": text, **fields}
        self.events.append(event)
        return event

    def record(self, kind: str, text: str, fields: dict[str, Any]) -> None:
        """An event from elsewhere (the scaling leader's decisions): logged and pushed now."""
        event = self._note(kind, text, **fields)
        if not self._subscribers:
            return
        update = {"nodes": nodes_json(self.registry), "streams": streams_json(self.registry), "events": [event]}
        for queue in list(self._subscribers):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(update)

    def tick(self) -> list[dict[str, Any]]:
        """Compare with the last tick; record and push what changed."""
        views = live_views(self.registry)
        new: list[dict[str, Any]] = []
        nodes = {v.node_id: v.state.value for v in views}
        for node_id, state in nodes.items():
            before = self._nodes.get(node_id)
            if before is None:
                new.append(self._note("node_joined", f"node {node_id} joined ({state})", node=node_id))
            elif before != state:
                new.append(self._note(f"node_{state}", f"node {node_id}: {before} → {state}", node=node_id))
        for node_id in self._nodes.keys() - nodes.keys():
            new.append(self._note("node_lapsed", f"node {node_id} is gone (lease lapsed or left)",
                                  node=node_id))
        origins = {s["name"]: s["origin"] for s in streams_json(self.registry, views)}
        for name, origin in origins.items():
            if name not in self._origins:
                new.append(self._note("stream_started", f"stream {name} on {origin}", stream=name))
            elif self._origins[name] != origin and origin is not None:
                new.append(self._note("stream_moved", f"stream {name} moved: {self._origins[name]} → {origin}",
                                      stream=name))
        for name in self._origins.keys() - origins.keys():
            new.append(self._note("stream_ended", f"stream {name} ended", stream=name))
        self._nodes, self._origins = nodes, origins
        if self._subscribers:
            update = {"nodes": nodes_json(self.registry), "streams": streams_json(self.registry, views),
                      "events": new}
            for queue in list(self._subscribers):
                if queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                queue.put_nowait(update)
        return new


def sse(data: dict[str, Any], event: str = "cluster") -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
