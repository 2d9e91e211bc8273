"""The provider interface: how the scaling leader gets nodes started and stopped.

Three calls — start a node of a group and role, stop a node (draining it first, or at
once), list the nodes the provider runs — implemented by `local` (processes on this
machine), `kubernetes` (one Pod per node) and `static` (a fixed list: nothing to start).
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

from ..model import NodeRole

__all__ = ["NodeProvider", "ProvidedNode", "ProviderError", "ProviderState"]


class ProviderError(Exception):
    """The provider could not do what was asked (no free port, API refused, not supported)."""


class ProviderState(enum.Enum):
    """A provided node as its provider sees it (not as the manager's registry does)."""

    STARTING = "starting"   # asked for; not known to be running yet (a Pod not scheduled)
    RUNNING = "running"
    STOPPING = "stopping"   # asked to stop (draining), not gone yet
    EXITED = "exited"


@dataclass(frozen=True, slots=True)
class ProvidedNode:
    """One node a provider runs: the id it registers with, its group and role, the URL
    it serves on ("" while unknown, e.g. a Pod without an IP yet), its state and a
    detail for the log (a pid, a Pod phase)."""

    node_id: str
    group: str
    role: NodeRole
    url: str
    state: ProviderState
    detail: str = ""


class NodeProvider(abc.ABC):
    """Starts, stops and lists nodes. `scales` is False for a provider that cannot start
    nodes (static): the leader then only watches health."""

    name = ""
    scales = True

    async def start(self) -> None:
        """Get ready (connect to an API); the default has nothing to do."""

    @abc.abstractmethod
    async def start_node(self, group: str, role: NodeRole) -> ProvidedNode:
        """Start one node of `group` and `role`; returns at once with the node STARTING
        (it registers with the manager by itself). ProviderError if it cannot."""

    @abc.abstractmethod
    async def stop_node(self, node_id: str, drain_s: float) -> None:
        """Stop a node: with `drain_s` > 0 it drains first (no new sessions, clients told
        where to go) and is terminated at the latest `drain_s` later; 0 ends it at once
        (a faulty node). Returns once the stop is under way."""

    @abc.abstractmethod
    async def list_nodes(self) -> list[ProvidedNode]:
        """Every node this provider runs or was asked to stop and has not yet exited."""

    async def close(self) -> None:
        """Release what `start()` took; the nodes keep running."""
