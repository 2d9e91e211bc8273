"""Prometheus metrics of a manager (its own registry, exposed at /metrics)."""

from __future__ import annotations

from collections import Counter as Tally
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .model import NodeState
from .registry import NodeView

__all__ = ["ManagerMetrics"]

_ROUTE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class ManagerMetrics:
    """Route decision latency, nodes by state, proxied requests by status, proxy errors
    by reason, requests refused by the per-client limits."""

    def __init__(self, views: Callable[[], Iterable[NodeView]], clock: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.route_seconds = Histogram(
            "unbroken_manager_route_seconds", "Route decision latency", ["kind"],
            buckets=_ROUTE_BUCKETS, registry=self.registry)
        self.proxied = Counter(
            "unbroken_manager_proxied_requests", "Requests proxied to nodes, by answer status",
            ["kind", "status"], registry=self.registry)
        self.proxy_errors = Counter(
            "unbroken_manager_proxy_errors", "Proxied requests that failed at the node",
            ["reason"], registry=self.registry)
        self.limited = Counter(
            "unbroken_manager_client_limited", "Requests refused by the per-client limits",
            ["limit"], registry=self.registry)

        class Nodes:
            def collect(self):
                now = clock()
                family = GaugeMetricFamily("unbroken_manager_nodes", "Nodes by role and state",
                                           labels=["role", "state"])
                tally = Tally((v.role.value, v.state.value if v.live(now) else NodeState.GONE.value)
                              for v in views())
                for (role, state), count in sorted(tally.items()):
                    family.add_metric([role, state], count)
                yield family

        self.registry.register(Nodes())

    def render(self) -> bytes:
        return generate_latest(self.registry)
