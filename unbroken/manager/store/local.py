"""The in-process cluster store: the default for a single manager (no Redis)."""

from __future__ import annotations

import time
from typing import Callable

from ..model import NodeRecord
from .base import (
    ClusterEvent,
    ClusterSnapshot,
    ClusterStore,
    EventKind,
    EventSubscription,
    LeaseGrant,
    OriginClaim,
    StoreClosed,
    StoredNode,
)
from .subscription import QueueSubscription

__all__ = ["LocalStore"]


class LocalStore(ClusterStore):
    """Owns the cluster state in this process's memory, with the same semantics as the
    Redis store (leases measured on `clock`, set-if-absent claims, compare-and-delete
    release, per-member edge leases, events to every subscriber). Expired entries are
    dropped when next read or written."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._nodes: dict[str, tuple[NodeRecord, float]] = {}
        self._origins: dict[str, tuple[str, float]] = {}
        self._edges: dict[str, dict[str, float]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._tables: dict[str, dict[str, str]] = {}
        self._subscriptions: set[QueueSubscription] = set()
        self._closed = False

    # -- helpers ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    def _publish(self, event: ClusterEvent) -> None:
        for subscription in list(self._subscriptions):
            subscription.push(event)

    def _live_node(self, node_id: str, now: float) -> tuple[NodeRecord, float] | None:
        entry = self._nodes.get(node_id)
        if entry is not None and entry[1] <= now:
            del self._nodes[node_id]
            return None
        return entry

    def _live_owner(self, stream: str, now: float) -> str | None:
        entry = self._origins.get(stream)
        if entry is not None and entry[1] <= now:
            del self._origins[stream]
            return None
        return None if entry is None else entry[0]

    def _live_edges(self, stream: str, now: float) -> dict[str, float]:
        members = self._edges.get(stream)
        if members is None:
            return {}
        for node_id in [n for n, expiry in members.items() if expiry <= now]:
            del members[node_id]
        if not members:
            del self._edges[stream]
        return members

    def _claim(self, stream: str, node_id: str, ttl_s: float, replacing: str | None) -> OriginClaim:
        now = self._clock()
        owner = self._live_owner(stream, now)
        if owner is None or owner == node_id or (replacing is not None and owner == replacing):
            self._origins[stream] = (node_id, now + ttl_s)
            if owner != node_id:
                self._publish(ClusterEvent(EventKind.ORIGIN_CLAIMED, node_id=node_id, stream=stream))
                return OriginClaim(stream, node_id, acquired=True)
            return OriginClaim(stream, node_id, acquired=False)
        return OriginClaim(stream, owner, acquired=False)

    def _add_edge(self, stream: str, node_id: str, ttl_s: float) -> bool:
        now = self._clock()
        members = self._live_edges(stream, now)
        new = node_id not in members
        expiry = max(members.get(node_id, 0.0), now + ttl_s)
        self._edges.setdefault(stream, members)[node_id] = expiry
        if new:
            self._publish(ClusterEvent(EventKind.EDGE_ADDED, node_id=node_id, stream=stream, ttl_s=ttl_s))
        return new

    def _release(self, stream: str, node_id: str) -> bool:
        if self._live_owner(stream, self._clock()) != node_id:
            return False
        del self._origins[stream]
        self._publish(ClusterEvent(EventKind.ORIGIN_RELEASED, node_id=node_id, stream=stream))
        return True

    def _remove_edge(self, stream: str, node_id: str) -> bool:
        members = self._live_edges(stream, self._clock())
        if node_id not in members:
            return False
        del members[node_id]
        if not members:
            del self._edges[stream]
        self._publish(ClusterEvent(EventKind.EDGE_REMOVED, node_id=node_id, stream=stream))
        return True

    # -- ClusterStore ----------------------------------------------------------------

    async def put_node(self, record: NodeRecord, lease_s: float) -> dict[str, str]:
        self._check_open()
        self._nodes[record.node_id] = (record, self._clock() + lease_s)
        self._publish(ClusterEvent(EventKind.NODE_UPDATED, node_id=record.node_id, record=record, lease_s=lease_s))
        owners: dict[str, str] = {}
        for stream in sorted(record.streams):
            if record.role.takes_publishers:
                owners[stream] = self._claim(stream, record.node_id, lease_s, None).owner
            else:
                self._add_edge(stream, record.node_id, lease_s)
        return owners

    async def remove_node(self, record: NodeRecord) -> None:
        self._check_open()
        for stream in sorted(record.streams):
            if record.role.takes_publishers:
                self._release(stream, record.node_id)
            else:
                self._remove_edge(stream, record.node_id)
        self._nodes.pop(record.node_id, None)
        self._publish(ClusterEvent(EventKind.NODE_REMOVED, node_id=record.node_id))

    async def get_node(self, node_id: str) -> StoredNode | None:
        self._check_open()
        now = self._clock()
        entry = self._live_node(node_id, now)
        return None if entry is None else StoredNode(entry[0], entry[1] - now)

    async def claim_origin(
        self, stream: str, node_id: str, ttl_s: float, *, replacing: str | None = None
    ) -> OriginClaim:
        self._check_open()
        return self._claim(stream, node_id, ttl_s, replacing)

    async def release_origin(self, stream: str, node_id: str) -> bool:
        self._check_open()
        return self._release(stream, node_id)

    async def origin_of(self, stream: str) -> str | None:
        self._check_open()
        return self._live_owner(stream, self._clock())

    async def add_stream_edge(self, stream: str, node_id: str, ttl_s: float) -> bool:
        self._check_open()
        return self._add_edge(stream, node_id, ttl_s)

    async def remove_stream_edge(self, stream: str, node_id: str) -> bool:
        self._check_open()
        return self._remove_edge(stream, node_id)

    async def stream_edges(self, stream: str) -> frozenset[str]:
        self._check_open()
        return frozenset(self._live_edges(stream, self._clock()))

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> LeaseGrant:
        self._check_open()
        now = self._clock()
        current = self._leases.get(name)
        if current is None or current[1] <= now or current[0] == holder:
            self._leases[name] = (holder, now + ttl_s)
            return LeaseGrant(name, holder, ttl_s, held=True)
        return LeaseGrant(name, current[0], current[1] - now, held=False)

    async def release_lease(self, name: str, holder: str) -> bool:
        self._check_open()
        current = self._leases.get(name)
        if current is None or current[0] != holder or current[1] <= self._clock():
            return False
        del self._leases[name]
        return True

    async def put_entry(self, table: str, key: str, value: str) -> None:
        self._check_open()
        self._tables.setdefault(table, {})[key] = value

    async def delete_entry(self, table: str, key: str) -> bool:
        self._check_open()
        entries = self._tables.get(table, {})
        found = entries.pop(key, None) is not None
        if not entries:
            self._tables.pop(table, None)
        return found

    async def entries(self, table: str) -> dict[str, str]:
        self._check_open()
        return dict(self._tables.get(table, {}))

    async def snapshot(self) -> ClusterSnapshot:
        self._check_open()
        now = self._clock()
        nodes = []
        for node_id in list(self._nodes):
            entry = self._live_node(node_id, now)
            if entry is not None:
                nodes.append(StoredNode(entry[0], entry[1] - now))
        origins = {}
        for stream in list(self._origins):
            owner = self._live_owner(stream, now)
            if owner is not None:
                origins[stream] = owner
        edges = {}
        for stream in list(self._edges):
            members = self._live_edges(stream, now)
            if members:
                edges[stream] = frozenset(members)
        return ClusterSnapshot(tuple(nodes), origins, edges)

    def subscribe(self) -> EventSubscription:
        self._check_open()
        subscription = QueueSubscription(self._unsubscribe)
        subscription.mark_ready()
        self._subscriptions.add(subscription)
        return subscription

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        self._subscriptions.discard(subscription)

    async def report_suspect(self, node_id: str) -> None:
        self._check_open()
        self._publish(ClusterEvent(EventKind.NODE_SUSPECT, node_id=node_id))

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.end()
        self._subscriptions.clear()
