"""The manager's cluster-wide views built from the registry: streams (origin, edges,
viewers) and the node list, as the API and the dashboard show them."""

from __future__ import annotations

from typing import Any, Iterable

from .model import NodeRole
from .registry import NodeView, Registry

__all__ = ["live_views", "nodes_json", "streams_json"]


def live_views(registry: Registry) -> list[NodeView]:
    now = registry.clock()
    return sorted((v for v in registry.views() if v.live(now)), key=lambda v: v.node_id)


def nodes_json(registry: Registry) -> list[dict[str, Any]]:
    now = registry.clock()
    return [v.to_json(now) for v in live_views(registry)]


def streams_json(registry: Registry, views: Iterable[NodeView] | None = None) -> list[dict[str, Any]]:
    """Every stream some live node carries: its origin (the claim's owner when it is
    live, else the publisher-taking node that carries it), its edges (with the upstream
    each pulls from), and its viewers summed over the nodes."""
    views = live_views(registry) if views is None else list(views)
    live_ids = {v.node_id for v in views}
    streams: dict[str, dict[str, Any]] = {}
    for view in views:
        record = view.record
        viewers = dict(record.stream_viewers)
        upstreams = dict(record.upstreams)
        for name in record.streams:
            entry = streams.setdefault(name, {"name": name, "origin": None, "edges": [],
                                              "viewers": 0, "upstreams": {}})
            entry["viewers"] += viewers.get(name, 0)
            if record.role is NodeRole.EDGE:
                entry["edges"].append(view.node_id)
                if name in upstreams:
                    entry["upstreams"][view.node_id] = upstreams[name]
            elif entry["origin"] is None or registry.origin_owner(name) == view.node_id:
                entry["origin"] = view.node_id
    for name, entry in streams.items():
        owner = registry.origin_owner(name)
        if owner in live_ids:
            entry["origin"] = owner
        entry["edges"].sort()
    return [streams[name] for name in sorted(streams)]
