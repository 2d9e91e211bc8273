"""The manager's hot view of the cluster: nodes, their lifecycle, who carries what.

Routing reads this view in memory (no store round trip per decision). It is fed by:
- heartbeats this manager receives (`Registry.heartbeat`), applied at once and written
  to the store;
- the store's events, which carry every other manager's writes (and echo our own);
- a snapshot of the store at start and whenever the event channel was lost (RESYNC).

A node's lease is measured here from when its record last arrived, on this manager's
clock: a lapsed lease takes the node out of routing at once (`NodeView.live`), and a
sweeper forgets it shortly after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace
from typing import Awaitable, Callable, Iterable

from .model import NodeRecord, NodeRole, NodeState
from .store import ClusterEvent, ClusterSnapshot, ClusterStore, EventKind, EventSubscription, StoreUnavailable

__all__ = [
    "DEFAULT_LEASE_S",
    "HEARTBEAT_S",
    "InvalidTransition",
    "NodeCheck",
    "NodeView",
    "Registry",
    "StaleRecord",
    "UnknownNode",
    "check_transition",
    "is_stale",
]

log = logging.getLogger("unbroken.manager.registry")

DEFAULT_LEASE_S = 3.0
HEARTBEAT_S = 1.0  # how often nodes are told to heartbeat
SWEEP_INTERVAL_S = 0.25
CHECK_TIMEOUT_S = 1.0
# a node that passed a check is not checked again on a client's word for this long: a
# client whose own network failed must not keep a healthy node out of routing
CLIENT_REPORT_HOLDOFF_S = 3.0
READY_TIMEOUT_S = 3.0
RESYNC_ATTEMPTS = 5
RESYNC_RETRY_S = 0.2
LEFT_MEMORY_S = 30.0  # how long a node that left is remembered as having left

NodeCheck = Callable[[NodeRecord], Awaitable[bool]]
"""Checks a suspect node over its public API (e.g. GET /healthz); True = healthy."""


class InvalidTransition(Exception):
    """A node reported a lifecycle state it cannot move to from its current one
    (e.g. back to serving after draining, without restarting)."""


class UnknownNode(LookupError):
    """No node with that id is in the view."""


# The states a node may report next, by the state it last reported (same instance).
# DRAINING is one-way: a node that wants to serve again restarts (a new instance).
_NEXT_REPORTED: dict[NodeState, frozenset[NodeState]] = {
    NodeState.JOINING: frozenset({NodeState.JOINING, NodeState.SERVING, NodeState.DRAINING}),
    NodeState.SERVING: frozenset({NodeState.SERVING, NodeState.DRAINING}),
    NodeState.DRAINING: frozenset({NodeState.DRAINING}),
}


def check_transition(previous: NodeRecord | None, current: NodeRecord) -> None:
    """Raise InvalidTransition if `current` cannot follow `previous` (the same node's
    last record); a new instance (a restarted node) starts afresh."""
    if previous is None or previous.instance != current.instance:
        return
    if current.state not in _NEXT_REPORTED[previous.state]:
        raise InvalidTransition(
            f"node {current.node_id}: {previous.state.value} -> {current.state.value} is not allowed"
        )


class StaleRecord(Exception):
    """A heartbeat older (lower `seq`, same instance) than one already applied."""


def is_stale(current: NodeView | None, record: NodeRecord) -> bool:
    """`record` is older than the view's record of the same instance."""
    return (
        current is not None
        and current.record.instance == record.instance
        and record.seq < current.record.seq
    )


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as this manager sees it: its last record, the effective state (the
    reported one, or SUSPECT while a check runs) and when its lease lapses (clock time)."""

    record: NodeRecord
    state: NodeState
    expires_at: float

    @property
    def node_id(self) -> str:
        return self.record.node_id

    @property
    def role(self) -> NodeRole:
        return self.record.role

    @property
    def group(self) -> str:
        return self.record.group

    def live(self, now: float) -> bool:
        """In the cluster: lease holding, not judged gone."""
        return self.state is not NodeState.GONE and now < self.expires_at

    def serving(self, now: float) -> bool:
        """Live and taking new sessions."""
        return self.state is NodeState.SERVING and now < self.expires_at

    def to_json(self, now: float) -> dict[str, object]:
        """The record with the manager's verdict: effective state, lease left (s)."""
        return {
            **self.record.to_json(),
            "state": self.state.value,
            "reported_state": self.record.state.value,
            "lease_left_s": round(max(0.0, self.expires_at - now), 3),
        }


class Registry:
    """Owns the hot view: node views by id, which nodes' records carry each stream, the
    origin owner of each stream, and edge reservations (edge set members with their own
    expiry); plus the tasks that follow the store's events, sweep lapsed leases and
    check suspect nodes."""

    def __init__(
        self,
        store: ClusterStore,
        check: NodeCheck,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        check_timeout_s: float = CHECK_TIMEOUT_S,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.lease_s = lease_s
        self.clock = clock
        self._check = check
        self._check_timeout_s = check_timeout_s
        self._passed_check_at: dict[str, float] = {}  # node id -> when it last passed one
        self._sweep_interval_s = sweep_interval_s
        self._views: dict[str, NodeView] = {}
        self._carriers: dict[str, set[str]] = {}
        self._origins: dict[str, str] = {}
        self._reserved_edges: dict[str, dict[str, float]] = {}
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._sharing: set[asyncio.Task[None]] = set()  # NODE_SUSPECT reports under way
        self._left: dict[str, float] = {}  # node id -> when it left (deregistered), recently
        self._subscription: EventSubscription | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        """Subscribe to the store's events, load a snapshot, start following. Raises
        StoreUnavailable if the store does not answer within `ready_timeout_s`."""
        self._subscription = self.store.subscribe()
        try:
            await self._subscription.wait_ready(ready_timeout_s)
            self._apply_snapshot(await asyncio.wait_for(self.store.snapshot(), ready_timeout_s))
        except (StoreUnavailable, TimeoutError) as e:
            await self._subscription.aclose()
            self._subscription = None
            raise StoreUnavailable(f"cluster store not ready: {e}") from e
        self._tasks = [
            asyncio.create_task(self._follow(self._subscription), name="unbroken-manager-registry-events"),
            asyncio.create_task(self._sweep(), name="unbroken-manager-registry-sweep"),
        ]

    async def close(self) -> None:
        tasks = self._tasks + list(self._checks.values()) + list(self._sharing)
        self._tasks, self._checks, self._sharing = [], {}, set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._subscription is not None:
            await self._subscription.aclose()
            self._subscription = None

    # -- what nodes tell us ----------------------------------------------------------

    async def heartbeat(self, record: NodeRecord) -> NodeView:
        """A node's registration or heartbeat: applied to the view at once, then written
        to the store (which re-asserts its claims and edge memberships). Raises
        InvalidTransition for an impossible state change and StaleRecord for a record
        older than one already seen (nothing is applied), and StoreUnavailable when the
        store is down (the view is applied all the same)."""
        current = self._views.get(record.node_id)
        if is_stale(current, record):
            raise StaleRecord(f"node {record.node_id}: heartbeat {record.seq} after {current.record.seq}")
        check_transition(current.record if current is not None else None, record)
        view = self._admit(record, self.lease_s)
        owners = await self.store.put_node(record, self.lease_s)
        self._origins.update(owners)
        return view

    async def leave(self, node_id: str) -> None:
        """The node leaves the cluster (deregistration): out of the view, its record,
        claims and edge memberships out of the store."""
        view = self._views.get(node_id)
        if view is None:
            raise UnknownNode(node_id)
        self._left[node_id] = self.clock()
        self._forget(node_id)
        await self.store.remove_node(view.record)

    # -- what the manager decides ----------------------------------------------------

    def mark_suspect(self, node_id: str, reason: str, share: bool = True) -> bool:
        """A request proxied to the node failed (or its heartbeat connection closed):
        out of routing at once and checked (bounded by the check timeout). Healthy →
        back to its reported state; unhealthy → gone from this manager's view until its
        next record arrives. With `share`, every other manager is told through the store
        (NODE_SUSPECT) and does the same at once, not at the end of the node's lease.
        False if the node is unknown, gone or already suspect."""
        view = self._views.get(node_id)
        if view is None or view.state in (NodeState.SUSPECT, NodeState.GONE):
            return False
        log.warning("node %s suspect: %s", node_id, reason)
        self._views[node_id] = replace(view, state=NodeState.SUSPECT)
        self._checks[node_id] = asyncio.create_task(
            self._check_suspect(view.record), name=f"unbroken-manager-check-{node_id}"
        )
        if share:
            task = asyncio.create_task(self._share_suspect(node_id),
                                       name=f"unbroken-manager-share-suspect-{node_id}")
            self._sharing.add(task)
            task.add_done_callback(self._sharing.discard)
        return True

    def report_unresponsive(self, node_id: str) -> bool:
        """A client says the node stopped answering it (NODE_UNRESPONSIVE): suspect, as
        after a failed proxied request, unless it passed a check within
        CLIENT_REPORT_HOLDOFF_S. False if nothing was done."""
        passed = self._passed_check_at.get(node_id)
        if passed is not None and self.clock() - passed < CLIENT_REPORT_HOLDOFF_S:
            return False
        return self.mark_suspect(node_id, "a client found it unresponsive")

    async def _share_suspect(self, node_id: str) -> None:
        try:
            await self.store.report_suspect(node_id)
        except Exception as e:  # the store is down: the others learn at the lease's end
            log.warning("could not tell the other managers node %s is suspect: %r",
                        node_id, e)

    def note_origin(self, stream: str, owner: str) -> None:
        """Record a claim this manager just made or read (its event will follow)."""
        self._origins[stream] = owner

    def note_edge(self, stream: str, node_id: str, ttl_s: float) -> None:
        """Record an edge reservation this manager just made (its event will follow)."""
        members = self._reserved_edges.setdefault(stream, {})
        members[node_id] = max(members.get(node_id, 0.0), self.clock() + ttl_s)

    # -- reading the view ------------------------------------------------------------

    def view(self, node_id: str) -> NodeView | None:
        return self._views.get(node_id)

    def views(self) -> Iterable[NodeView]:
        """Every node in the view (check `live(now)`: a lapsed lease is not yet swept)."""
        return self._views.values()

    def origin_owner(self, stream: str) -> str | None:
        """The stream's origin as last claimed (the owner may since have gone)."""
        return self._origins.get(stream)

    def carriers(self, stream: str) -> frozenset[str]:
        """Nodes that carry the stream by their last record, plus edges reserved for it
        (a manager routed a viewer there; the edge may not have pulled yet)."""
        ids = set(self._carriers.get(stream, ()))
        reserved = self._reserved_edges.get(stream)
        if reserved:
            now = self.clock()
            ids.update(node_id for node_id, expiry in reserved.items() if expiry > now)
        return frozenset(ids)

    # -- internals -------------------------------------------------------------------

    def _admit(self, record: NodeRecord, lease_s: float) -> NodeView:
        previous = self._views.get(record.node_id)
        if is_stale(previous, record):
            return previous  # type: ignore[return-value]
        state = record.state
        if previous is not None and previous.state is NodeState.SUSPECT:
            state = NodeState.SUSPECT  # the check decides, not the heartbeat
        view = NodeView(record, state, self.clock() + lease_s)
        self._views[record.node_id] = view
        old_streams = previous.record.streams if previous is not None else frozenset()
        for stream in old_streams - record.streams:
            self._uncarry(stream, record.node_id)
        for stream in record.streams - old_streams:
            self._carriers.setdefault(stream, set()).add(record.node_id)
        if previous is None or previous.record.state is not record.state:
            log.info("node %s (%s, %s): %s", record.node_id, record.role.value, record.url, state.value)
        return view

    def _uncarry(self, stream: str, node_id: str) -> None:
        carriers = self._carriers.get(stream)
        if carriers is not None:
            carriers.discard(node_id)
            if not carriers:
                del self._carriers[stream]

    def _forget(self, node_id: str) -> None:
        self._passed_check_at.pop(node_id, None)
        view = self._views.pop(node_id, None)
        if view is None:
            return
        for stream in view.record.streams:
            self._uncarry(stream, node_id)
        for stream in [s for s, members in self._reserved_edges.items() if node_id in members]:
            self._drop_reservation(stream, node_id)
        check = self._checks.pop(node_id, None)
        if check is not None and check is not asyncio.current_task():
            check.cancel()
        log.info("node %s gone", node_id)

    def _drop_reservation(self, stream: str, node_id: str) -> None:
        members = self._reserved_edges.get(stream)
        if members is not None:
            members.pop(node_id, None)
            if not members:
                del self._reserved_edges[stream]

    def apply_event(self, event: ClusterEvent) -> None:
        """Apply one store event to the view (RESYNC is handled by the follower)."""
        if event.kind is EventKind.NODE_UPDATED and event.record is not None:
            self._admit(event.record, event.lease_s or self.lease_s)
        elif event.kind is EventKind.NODE_REMOVED:  # it left (through another manager)
            if event.node_id in self._views:
                self._left[event.node_id] = self.clock()
            self._forget(event.node_id)
        elif event.kind is EventKind.ORIGIN_CLAIMED:
            self._origins[event.stream] = event.node_id
        elif event.kind is EventKind.ORIGIN_RELEASED:
            if self._origins.get(event.stream) == event.node_id:
                del self._origins[event.stream]
        elif event.kind is EventKind.EDGE_ADDED:
            self.note_edge(event.stream, event.node_id, event.ttl_s or self.lease_s)
        elif event.kind is EventKind.EDGE_REMOVED:
            self._drop_reservation(event.stream, event.node_id)
        elif event.kind is EventKind.NODE_SUSPECT:  # (our own report comes back too)
            self.mark_suspect(event.node_id, "another manager saw it fail", share=False)

    def _apply_snapshot(self, snapshot: ClusterSnapshot) -> None:
        """Merge a snapshot: records whose lease outlasts ours replace ours (a store that
        came back empty removes nothing: leases lapse by themselves); origins and edge
        reservations are taken as the store has them."""
        now = self.clock()
        for stored in snapshot.nodes:
            current = self._views.get(stored.record.node_id)
            if current is None or current.expires_at < now + stored.lease_left_s:
                self._admit(stored.record, stored.lease_left_s)
        self._origins = dict(snapshot.origins)
        self._reserved_edges = {
            stream: {node_id: now + self.lease_s for node_id in members} for stream, members in snapshot.edges.items()
        }

    async def _resync(self) -> None:
        for attempt in range(RESYNC_ATTEMPTS):
            try:
                self._apply_snapshot(await self.store.snapshot())
                return
            except StoreUnavailable as e:
                log.warning("resync attempt %d failed: %s", attempt + 1, e)
                await asyncio.sleep(RESYNC_RETRY_S * (attempt + 1))
        log.error("resync gave up after %d attempts; the view follows events and heartbeats", RESYNC_ATTEMPTS)

    async def _follow(self, subscription: EventSubscription) -> None:
        async for event in subscription:
            if event.kind is EventKind.RESYNC:
                await self._resync()
            else:
                self.apply_event(event)
                await asyncio.sleep(0)  # a burst of events never holds route decisions back

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            self.sweep()

    def left_recently(self, node_id: str) -> bool:
        """The node left the cluster itself (deregistered: a drain's end, a clean stop)
        within the last LEFT_MEMORY_S, rather than lapsing or failing its check."""
        at = self._left.get(node_id)
        return at is not None and self.clock() - at < LEFT_MEMORY_S

    def sweep(self) -> None:
        """Forget nodes whose lease lapsed and edge reservations that expired."""
        now = self.clock()
        for node_id in [n for n, at in self._left.items() if now - at >= LEFT_MEMORY_S]:
            del self._left[node_id]
        for node_id in [v.node_id for v in self._views.values() if v.expires_at <= now]:
            self._forget(node_id)
        for stream, members in list(self._reserved_edges.items()):
            for node_id in [n for n, expiry in members.items() if expiry <= now]:
                self._drop_reservation(stream, node_id)

    async def _check_suspect(self, record: NodeRecord) -> None:
        try:
            healthy = await asyncio.wait_for(self._check(record), self._check_timeout_s)
        except Exception as e:  # a check that fails in any way is a failed check
            log.warning("node %s check failed: %r", record.node_id, e)
            healthy = False
        finally:
            self._checks.pop(record.node_id, None)
        view = self._views.get(record.node_id)
        if view is None or view.state is not NodeState.SUSPECT:
            return
        if healthy:
            log.info("node %s passed its check", record.node_id)
            self._passed_check_at[record.node_id] = self.clock()
            self._views[record.node_id] = replace(view, state=view.record.state)
        else:
            self._forget(record.node_id)
