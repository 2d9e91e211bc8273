"""Building the scaling leader from the manager's configuration: the provider it names,
the leader lease in the manager's store, the health probe, the decision log."""

from __future__ import annotations

import secrets
import shlex
import socket
from typing import Any, Callable

import aiohttp
from prometheus_client import CollectorRegistry

from ..config import ManagerConfig
from ..providers import LocalProvider, LocalSettings, NodeProvider, StaticProvider, parse_port_range
from ..providers import parse_static_nodes
from ..registry import Registry
from ..store import ClusterStore
from .autoscaler import Autoscaler, ScalingSettings
from .decisions import DecisionLog
from .leader import LeaderLease

__all__ = ["HealthProber", "build_autoscaler", "build_provider"]

PROBE_TIMEOUT_S = 1.0


class HealthProber:
    """Owns the HTTP client that probes nodes' `/healthz` (bounded by a timeout)."""

    def __init__(self, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None

    async def __call__(self, url: str) -> bool:
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        try:
            async with self._http.get(f"{url.rstrip('/')}/healthz", timeout=self.timeout) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


def build_provider(config: ManagerConfig, manager_url: str, fingerprint: str | None,
                   cert_file: str | None, store: ClusterStore | None = None) -> NodeProvider:
    """The provider `config.provider` names, set up to register its nodes with this manager
    (the local provider records them in `store`, where any later leader finds them)."""
    if config.provider == "static":
        return StaticProvider(parse_static_nodes(config.static_nodes))
    if config.provider == "local":
        return LocalProvider(LocalSettings(
            manager_url=config.local_manager_url or manager_url, node_token=config.node_token,
            manager_fingerprint=fingerprint or "",
            manager_ca=cert_file if (cert_file and not fingerprint) else "",
            host=config.local_host, ports=parse_port_range(config.local_ports),
            drain_timeout=config.node_drain_timeout, extra_args=tuple(shlex.split(config.local_node_args)),
            log_dir=config.local_log_dir, state_file=config.local_state_file), store)
    if config.provider == "kubernetes":
        from ..providers.kubernetes import KubernetesProvider, load_template

        return KubernetesProvider(config.kubernetes_namespace, load_template(config.kubernetes_template),
                                  node_port=config.kubernetes_node_port, kubeconfig=config.kubernetes_kubeconfig)
    raise ValueError(f"no provider named {config.provider!r}")


def build_autoscaler(config: ManagerConfig, registry: Registry, metrics: CollectorRegistry,
                     sink: Callable[[str, str, dict[str, Any]], None], manager_url: str,
                     fingerprint: str | None, cert_file: str | None) -> tuple[Autoscaler, HealthProber]:
    provider = build_provider(config, manager_url, fingerprint, cert_file, registry.store)
    holder = f"{socket.gethostname()}:{config.port}:{secrets.token_hex(4)}"
    leader = LeaderLease(registry.store, holder, config.leader_lease)
    prober = HealthProber()
    settings = ScalingSettings(config.scaling_interval, config.fault_stall, config.fault_health_failures,
                               config.node_start_timeout, config.node_drain_timeout)
    policies = config.scaling_policies()
    if config.provider == "static":
        policies = {}
    autoscaler = Autoscaler(registry, provider, leader, policies, DecisionLog(metrics, sink), prober, settings)
    return autoscaler, prober


