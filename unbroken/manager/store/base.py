"""The cluster store's interface, its events and its errors.

A ClusterStore is the state that every manager shares (LiveKit's pkg/routing is the model:
one interface, a local and a Redis implementation):

- node records, each under a lease that the node's heartbeats renew;
- each stream's origin, claimed with set-if-absent and released only by its owner
  (compare-and-delete) so one node's cleanup can never un-route a stream another node
  carries (LiveKit #4797, #4316);
- each stream's edges, a set whose members hold their own lease;
- named tables of small entries without lease (what the scaling leader's provider
  started: any later leader finds it there);
- an event channel that every manager subscribes to, so its in-memory view stays hot;
- a snapshot to rebuild that view after the channel was lost (e.g. a Redis restart).

Every write publishes its event atomically with the change; a manager applies its own
events like anyone else's, so applying an event must be idempotent.
"""

from __future__ import annotations

import abc
import enum
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..model import InvalidRecord, NodeRecord

__all__ = [
    "ClusterEvent",
    "ClusterSnapshot",
    "ClusterStore",
    "EventKind",
    "EventSubscription",
    "LeaseGrant",
    "OriginClaim",
    "StoreClosed",
    "StoreError",
    "StoreUnavailable",
    "StoredNode",
]


class StoreError(Exception):
    """Base of the cluster store's errors."""


class StoreUnavailable(StoreError):
    """The backing store cannot be reached (Redis down or restarting); retry later."""


class StoreClosed(StoreError):
    """The store was closed."""


class EventKind(enum.Enum):
    """What changed in the cluster state. RESYNC is not a change: the subscription lost
    events (the channel broke and came back, or the subscriber fell behind) and the
    subscriber must rebuild from `ClusterStore.snapshot()`."""

    NODE_UPDATED = "node_updated"
    NODE_REMOVED = "node_removed"
    ORIGIN_CLAIMED = "origin_claimed"
    ORIGIN_RELEASED = "origin_released"
    EDGE_ADDED = "edge_added"
    EDGE_REMOVED = "edge_removed"
    # a manager saw the node fail (a proxied request, its heartbeat connection): every
    # manager takes it out of routing and checks it itself (no state in the store)
    NODE_SUSPECT = "node_suspect"
    RESYNC = "resync"


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """One change, as published on the channel. `record` and `lease_s` come with
    NODE_UPDATED; `ttl_s` with EDGE_ADDED (how long the membership holds)."""

    kind: EventKind
    node_id: str = ""
    stream: str = ""
    record: NodeRecord | None = None
    lease_s: float = 0.0
    ttl_s: float = 0.0

    def to_json(self) -> str:
        data: dict[str, Any] = {"kind": self.kind.value}
        if self.node_id:
            data["node_id"] = self.node_id
        if self.stream:
            data["stream"] = self.stream
        if self.record is not None:
            data["record"] = self.record.to_json()
        if self.lease_s:
            data["lease_ms"] = round(self.lease_s * 1000)
        if self.ttl_s:
            data["ttl_ms"] = round(self.ttl_s * 1000)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ClusterEvent:
        """Parse an event; a malformed one raises InvalidRecord."""
        try:
            data = json.loads(text)
            kind = EventKind(data["kind"])
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidRecord(f"malformed cluster event: {e}") from None
        record = data.get("record")
        return cls(
            kind=kind,
            node_id=str(data.get("node_id", "")),
            stream=str(data.get("stream", "")),
            record=None if record is None else NodeRecord.from_json(record),
            lease_s=float(data.get("lease_ms", 0)) / 1000,
            ttl_s=float(data.get("ttl_ms", 0)) / 1000,
        )


@dataclass(frozen=True, slots=True)
class OriginClaim:
    """The answer to a claim: who owns the stream now, and whether this call made
    `owner` the owner (False when it already was, or when someone else owns it)."""

    stream: str
    owner: str
    acquired: bool

    def owned_by(self, node_id: str) -> bool:
        return self.owner == node_id


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """The answer to a lease request: who holds the named lease now, and for how long
    still (seconds, measured by the store). `held` says whether the caller holds it."""

    name: str
    holder: str
    left_s: float
    held: bool


@dataclass(frozen=True, slots=True)
class StoredNode:
    """A node record as stored, with what is left of its lease."""

    record: NodeRecord
    lease_left_s: float


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Everything the store holds at one moment: live node records, origin owners by
    stream, and edges by stream (only members whose lease holds)."""

    nodes: tuple[StoredNode, ...] = ()
    origins: Mapping[str, str] = field(default_factory=dict)
    edges: Mapping[str, frozenset[str]] = field(default_factory=dict)


class EventSubscription(abc.ABC):
    """One subscriber's stream of ClusterEvents, in the order they were published.
    Iterate it (`async for event in sub`), and `aclose()` it when done. Waiting for the
    next event is cancel-safe: a cancelled wait loses no event."""

    def __aiter__(self) -> EventSubscription:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> ClusterEvent: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    @abc.abstractmethod
    async def wait_ready(self, timeout: float) -> None:
        """Return once the subscription receives everything published from now on;
        StoreUnavailable after `timeout` seconds."""


class ClusterStore(abc.ABC):
    """Shared cluster state; see the module docstring. Every method may raise
    StoreUnavailable (the backing store is down) or StoreClosed."""

    @abc.abstractmethod
    async def put_node(self, record: NodeRecord, lease_s: float) -> dict[str, str]:
        """A heartbeat: store the record under a lease of `lease_s`, and re-assert what it
        carries — for a node that takes publishers, claim (set-if-absent) or refresh its
        origin claim on each stream it carries, with the same lease; for an edge, renew its
        membership in each stream's edge set. That re-assertion is how the state returns
        after the store lost it. Publishes NODE_UPDATED (plus ORIGIN_CLAIMED/EDGE_ADDED for
        what is new). Returns the origin owner of each stream a publisher-taking node
        carries (another node when someone else holds the claim)."""

    @abc.abstractmethod
    async def remove_node(self, record: NodeRecord) -> None:
        """The node left: delete its record, release its origin claims on the streams it
        carries (compare-and-delete: only claims it still owns) and its edge memberships.
        Publishes NODE_REMOVED."""

    @abc.abstractmethod
    async def get_node(self, node_id: str) -> StoredNode | None:
        """The node's record if its lease holds."""

    @abc.abstractmethod
    async def claim_origin(
        self, stream: str, node_id: str, ttl_s: float, *, replacing: str | None = None
    ) -> OriginClaim:
        """Make `node_id` the stream's origin if nobody is (set-if-absent), or if the owner
        is `replacing` (compare-and-set: taking over from a node known to be gone); refresh
        the claim's TTL if it already owns it. Publishes ORIGIN_CLAIMED when ownership
        changed."""

    @abc.abstractmethod
    async def release_origin(self, stream: str, node_id: str) -> bool:
        """Delete the claim only if `node_id` owns it (compare-and-delete); True if it did.
        Publishes ORIGIN_RELEASED when it did."""

    @abc.abstractmethod
    async def origin_of(self, stream: str) -> str | None:
        """The stream's origin owner, if claimed."""

    @abc.abstractmethod
    async def add_stream_edge(self, stream: str, node_id: str, ttl_s: float) -> bool:
        """Put `node_id` in the stream's edge set for `ttl_s` (never shortening a longer
        membership); True if it was not a member. Publishes EDGE_ADDED when new."""

    @abc.abstractmethod
    async def remove_stream_edge(self, stream: str, node_id: str) -> bool:
        """Take `node_id` out of the stream's edge set; True if it was a member.
        Publishes EDGE_REMOVED when it was."""

    @abc.abstractmethod
    async def stream_edges(self, stream: str) -> frozenset[str]:
        """The stream's edges whose membership holds."""

    @abc.abstractmethod
    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> LeaseGrant:
        """A named lease (e.g. the scaling leader's): take it if nobody holds it
        (set-if-absent), or renew it for `ttl_s` if `holder` already does; otherwise
        leave it and say who holds it. Leases live beside the cluster state and publish
        no event."""

    @abc.abstractmethod
    async def release_lease(self, name: str, holder: str) -> bool:
        """Give the lease up only if `holder` holds it (compare-and-delete); True if it did."""

    @abc.abstractmethod
    async def put_entry(self, table: str, key: str, value: str) -> None:
        """Set `key` in a named table of small strings (e.g. the local provider's record
        of the nodes it started, which every manager's leader must find). Tables live
        beside the cluster state, without lease or event: their owner deletes entries."""

    @abc.abstractmethod
    async def delete_entry(self, table: str, key: str) -> bool:
        """Delete `key` from the table; True if it was there."""

    @abc.abstractmethod
    async def entries(self, table: str) -> dict[str, str]:
        """Every key and value of the table."""

    @abc.abstractmethod
    async def snapshot(self) -> ClusterSnapshot:
        """Everything the store holds now, to (re)build a view."""

    @abc.abstractmethod
    def subscribe(self) -> EventSubscription:
        """A new subscription to every event published from now on."""

    @abc.abstractmethod
    @abc.abstractmethod
    async def report_suspect(self, node_id: str) -> None:
        """Tell every manager (NODE_SUSPECT) that this one saw `node_id` fail."""

    async def ping(self) -> None:
        """Return if the store answers; StoreUnavailable otherwise."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and end every subscription."""
