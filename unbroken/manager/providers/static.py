"""The static provider: a fixed list of nodes, for health and routing only."""

from __future__ import annotations

from ..model import NodeRole
from .base import NodeProvider, ProvidedNode, ProviderError, ProviderState

__all__ = ["StaticProvider", "parse_static_nodes"]


def parse_static_nodes(text: str) -> list[tuple[str, str]]:
    """`id=url, id=url` (the manager's `static_nodes` setting) as (node id, URL) pairs."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        node_id, sep, url = item.partition("=")
        if not sep or not node_id.strip() or not url.strip().startswith(("http://", "https://")):
            raise ValueError(f"static_nodes: {item!r} is not id=http(s)://host:port")
        pairs.append((node_id.strip(), url.strip()))
    return pairs


class StaticProvider(NodeProvider):
    """Knows a fixed list of nodes (id, URL); starts and stops none: the scaling leader
    watches their health and takes faulty ones out of routing, and nothing more."""

    name = "static"
    scales = False

    def __init__(self, nodes: list[tuple[str, str]], group: str = "default",
                 role: NodeRole = NodeRole.ORIGIN) -> None:
        self._nodes = [ProvidedNode(node_id, group, role, url, ProviderState.RUNNING, "static")
                       for node_id, url in nodes]

    async def start_node(self, group: str, role: NodeRole) -> ProvidedNode:
        raise ProviderError("the static provider starts no nodes (a fixed list)")

    async def stop_node(self, node_id: str, drain_s: float) -> None:
        raise ProviderError("the static provider stops no nodes (a fixed list)")

    async def list_nodes(self) -> list[ProvidedNode]:
        return list(self._nodes)
