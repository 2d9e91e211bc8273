"""Route decisions: which node a publisher or a viewer of a stream goes to.

The selection functions are pure (views, a time, a random source in; a choice out) and
unit-tested as such. `Router` applies them to the registry's hot view and makes the one
store write a decision may need: claiming a new origin (set-if-absent), or reserving an
edge for a stream so the next viewer, through any manager, goes to the same edge.

Rules (design brief, "Selection"): only live, serving nodes under their limits take new
sessions; a node that already carries the stream is preferred; otherwise the less loaded
of two random picks, so that several managers deciding at once on the same (stale)
loads spread their choices instead of all piling onto the least loaded node.
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from .model import NodeRecord, NodeRole, NodeState
from .registry import NodeView, Registry
from .store import StoreUnavailable

__all__ = [
    "NoNodeAvailable",
    "OriginChoice",
    "RouteAnswer",
    "RouteError",
    "RouteKind",
    "Router",
    "StreamNotLive",
    "load_score",
    "routable",
    "select_origin",
    "select_play_node",
    "two_choices",
    "under_limits",
    "upstream_candidates",
]

log = logging.getLogger("unbroken.manager.routing")

PENDING_CLAIM_S = 10.0  # a new origin's claim holds this long before its heartbeats renew it
MAX_CLAIM_ATTEMPTS = 3


class RouteError(Exception):
    """No route; `status` is the HTTP status the public API answers with."""

    status = 500


class NoNodeAvailable(RouteError):
    """No live, serving node (in the group, under its limits) can take the session."""

    status = 404


class StreamNotLive(RouteError):
    """Nobody publishes the stream (a viewer retries after a moment)."""

    status = 409


class RouteKind(enum.Enum):
    PUBLISH = "publish"
    PLAY = "play"


@dataclass(frozen=True, slots=True)
class RouteAnswer:
    """Where to go: the node, and the ready WHIP (publish) or WHEP (play) URL there."""

    kind: RouteKind
    stream: str
    node_id: str
    role: NodeRole
    url: str

    @property
    def endpoint_url(self) -> str:
        path = "whip" if self.kind is RouteKind.PUBLISH else "whep"
        return f"{self.url.rstrip('/')}/{path}/{quote(self.stream, safe='')}"

    def to_json(self) -> dict[str, Any]:
        key = "whip_url" if self.kind is RouteKind.PUBLISH else "whep_url"
        return {
            "stream": self.stream,
            "node_id": self.node_id,
            "role": self.role.value,
            "url": self.url,
            key: self.endpoint_url,
        }

    @classmethod
    def for_view(cls, kind: RouteKind, stream: str, view: NodeView) -> RouteAnswer:
        return cls(kind, stream, view.node_id, view.role, view.record.url)


# -- pure selection -----------------------------------------------------------------


def under_limits(record: NodeRecord) -> bool:
    """Every declared limit still has room."""
    return all(ratio < 1.0 for ratio in record.limits.ratios(record.load))


def load_score(record: NodeRecord) -> tuple[float, int]:
    """Lower is less loaded: the highest load/limit ratio, then the session count."""
    return max(record.limits.ratios(record.load), default=0.0), record.load.sessions


def routable(view: NodeView, now: float, group: str | None) -> bool:
    """Takes a new session: lease holding, serving, under its limits, in the group."""
    return view.serving(now) and under_limits(view.record) and (group is None or view.group == group)


def two_choices(candidates: Sequence[NodeView], rng: random.Random) -> NodeView:
    """Power of two random choices: the less loaded of two distinct random candidates."""
    if not candidates:
        raise NoNodeAvailable("no candidate node")
    if len(candidates) == 1:
        return candidates[0]
    first, second = rng.sample(candidates, 2)
    return first if load_score(first.record) <= load_score(second.record) else second


def _least_loaded(candidates: Iterable[NodeView]) -> NodeView | None:
    return min(candidates, key=lambda v: (load_score(v.record), v.node_id), default=None)


@dataclass(frozen=True, slots=True)
class OriginChoice:
    """The origin for a publisher; `claim` says the stream's claim must be made for it
    (set-if-absent, or taking over from `replacing`, an owner that no longer serves)."""

    view: NodeView
    claim: bool
    replacing: str | None = None


def select_origin(
    stream: str,
    views: Iterable[NodeView],
    owner_id: str | None,
    now: float,
    rng: random.Random,
    group: str | None = None,
) -> OriginChoice:
    """The origin for a publisher of `stream`:
    1. the claimed owner if it serves (whatever the group filter and its load: a stream
       has one origin);
    2. else a serving origin whose record carries the stream (its claim was lost);
    3. else the less loaded of two random routable origins in the group.
    A claimed owner that no longer serves (gone, suspect, draining) is to be replaced."""
    views = list(views)
    publishers = [v for v in views if v.role.takes_publishers]
    owner = next((v for v in publishers if v.node_id == owner_id), None)
    if owner is not None and owner.serving(now):
        return OriginChoice(owner, claim=False)
    carrying = _least_loaded(v for v in publishers if v.serving(now) and v.record.carries(stream))
    if carrying is not None:
        return OriginChoice(carrying, claim=True, replacing=owner_id)
    candidates = [v for v in publishers if routable(v, now, group)]
    if not candidates:
        where = f" in group {group!r}" if group else ""
        raise NoNodeAvailable(f"no origin{where} can take a publisher")
    return OriginChoice(two_choices(candidates, rng), claim=True, replacing=owner_id)


def upstream_candidates(
    stream: str,
    views: Iterable[NodeView],
    owner_id: str | None,
    now: float,
    exclude: str | None = None,
) -> list[NodeView]:
    """Where an edge may pull `stream` from: live nodes that take publishers and carry it
    by their record (not one under suspicion, not `exclude`, the asking edge itself);
    serving ones before draining ones (a draining origin keeps its publisher until the
    publisher's new session feeds the stream elsewhere), the claimed owner first."""
    candidates = [v for v in views
                  if v.role.takes_publishers and v.live(now) and v.state is not NodeState.SUSPECT
                  and v.node_id != exclude and v.record.carries(stream)]
    return sorted(candidates, key=lambda v: (not v.serving(now), v.node_id != owner_id))


def select_play_node(
    stream: str,
    views: Iterable[NodeView],
    carriers: frozenset[str],
    owner_id: str | None,
    now: float,
    rng: random.Random,
    group: str | None = None,
) -> NodeView:
    """The node for a viewer of `stream`:
    - NoNodeAvailable if the group has no serving node that serves viewers at all;
    - StreamNotLive if no live origin carries the stream;
    - with serving edges in the group: one that carries the stream (`carriers`), else any,
      the less loaded of two random picks among those under their limits;
    - without: the stream's origin itself (the claimed owner first), if it serves, is in
      the group and is under its limits."""
    views = list(views)
    in_group = [v for v in views if group is None or v.group == group]
    edges = [v for v in in_group if v.role is NodeRole.EDGE and v.serving(now)]
    if not edges and not any(v.role.takes_publishers and v.serving(now) for v in in_group):
        where = f" in group {group!r}" if group else ""
        raise NoNodeAvailable(f"no serving node{where}")
    sources = [
        v
        for v in views
        if v.role.takes_publishers
        and v.live(now)
        and v.state in (NodeState.SERVING, NodeState.DRAINING)
        and v.record.carries(stream)
    ]
    if not sources:
        raise StreamNotLive(f"stream {stream!r} is not live")
    if edges:
        open_edges = [v for v in edges if under_limits(v.record)]
        if not open_edges:
            raise NoNodeAvailable("every edge is at its limits")
        carrying = [v for v in open_edges if v.node_id in carriers]
        return two_choices(carrying or open_edges, rng)
    open_sources = [v for v in sources if routable(v, now, group)]
    owner = next((v for v in open_sources if v.node_id == owner_id), None)
    chosen = owner or _least_loaded(open_sources)
    if chosen is None:
        raise NoNodeAvailable(f"the origin of {stream!r} takes no more viewers here")
    return chosen


# -- the router ---------------------------------------------------------------------


class Router:
    """Owns route decisions over a registry's hot view: a decision reads memory only,
    except the store write a new origin claim or a new edge reservation needs. When the
    store is down a decision still answers (availability first): the origin's next
    heartbeat re-asserts the claim."""

    def __init__(
        self,
        registry: Registry,
        *,
        rng: random.Random | None = None,
        pending_claim_s: float = PENDING_CLAIM_S,
        reservation_s: float | None = None,
    ) -> None:
        self.registry = registry
        self._rng = rng or random.Random()
        self._pending_claim_s = pending_claim_s
        self._reservation_s = reservation_s if reservation_s is not None else registry.lease_s

    async def route_publish(self, stream: str, group: str | None = None) -> RouteAnswer:
        """The origin for a publisher of `stream` (claimed for it when new)."""
        registry = self.registry
        owner_id = registry.origin_owner(stream)
        for _ in range(MAX_CLAIM_ATTEMPTS):
            choice = select_origin(stream, registry.views(), owner_id, registry.clock(), self._rng, group)
            chosen = choice.view
            if not choice.claim:
                return RouteAnswer.for_view(RouteKind.PUBLISH, stream, chosen)
            try:
                claim = await registry.store.claim_origin(
                    stream, chosen.node_id, self._pending_claim_s, replacing=choice.replacing
                )
            except StoreUnavailable as e:
                log.warning("routing %s to %s without a claim: %s", stream, chosen.node_id, e)
                return RouteAnswer.for_view(RouteKind.PUBLISH, stream, chosen)
            registry.note_origin(stream, claim.owner)
            if claim.owned_by(chosen.node_id):
                return RouteAnswer.for_view(RouteKind.PUBLISH, stream, chosen)
            owner = registry.view(claim.owner)
            if owner is not None and owner.role.takes_publishers and owner.serving(registry.clock()):
                return RouteAnswer.for_view(RouteKind.PUBLISH, stream, owner)
            owner_id = claim.owner  # an owner this manager sees as gone: take over from it
        raise NoNodeAvailable(f"could not claim an origin for {stream!r} in {MAX_CLAIM_ATTEMPTS} attempts")

    async def route_play(self, stream: str, group: str | None = None) -> RouteAnswer:
        """The node for a viewer of `stream`; a chosen edge that does not carry it yet is
        reserved for it in the store."""
        registry = self.registry
        carriers = registry.carriers(stream)
        chosen = select_play_node(
            stream,
            registry.views(),
            carriers,
            registry.origin_owner(stream),
            registry.clock(),
            self._rng,
            group,
        )
        if chosen.role is NodeRole.EDGE and chosen.node_id not in carriers:
            registry.note_edge(stream, chosen.node_id, self._reservation_s)
            try:
                await registry.store.add_stream_edge(stream, chosen.node_id, self._reservation_s)
            except StoreUnavailable as e:
                log.warning("edge reservation of %s for %s not shared: %s", chosen.node_id, stream, e)
        return RouteAnswer.for_view(RouteKind.PLAY, stream, chosen)
