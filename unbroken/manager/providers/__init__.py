"""Node providers for the scaling leader: local processes, Kubernetes Pods, a static list."""

from __future__ import annotations

from .base import NodeProvider, ProvidedNode, ProviderError, ProviderState
from .local import LocalProvider, LocalSettings, parse_port_range
from .node_api import NodeDrainer
from .static import StaticProvider, parse_static_nodes

__all__ = [
    "LocalProvider",
    "LocalSettings",
    "NodeDrainer",
    "NodeProvider",
    "ProvidedNode",
    "ProviderError",
    "ProviderState",
    "StaticProvider",
    "parse_port_range",
    "parse_static_nodes",
]
