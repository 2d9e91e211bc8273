"""The manager's parts wired together: store, registry, router, proxy, metrics, feed."""

from __future__ import annotations

import time

from aiohttp import web

from .config import ManagerConfig
from .heartbeat_links import HeartbeatLinks
from .feed import ClusterFeed
from .metrics import ManagerMetrics
from .proxy import NodeProxy, ProxySettings
from .registry import HEARTBEAT_S, Registry
from .routing import RouteAnswer, Router, RouteKind
from .store import ClusterStore, open_store

__all__ = ["MANAGER", "Manager"]


class Manager:
    """Owns one manager's state; `start()`/`close()` bracket its life. `draining` is set
    on SIGTERM: no new sessions, open streams and sockets get `drain_timeout` to end."""

    def __init__(self, config: ManagerConfig, store: ClusterStore | None = None) -> None:
        self.config = config
        self.store = store or open_store(config.redis_url, prefix=config.redis_prefix)
        self.proxy: NodeProxy
        self.registry = Registry(self.store, self._check, lease_s=config.lease)
        self.router = Router(self.registry)
        self.metrics = ManagerMetrics(self.registry.views, self.registry.clock)
        self.proxy = NodeProxy(self.registry, self.metrics,
                               ProxySettings(config.node_connect_timeout, config.node_answer_timeout))
        self.feed = ClusterFeed(self.registry)
        self.links = HeartbeatLinks(self._heartbeat_connection_closed)
        self.draining = False
        self._started = time.monotonic()  # a step of the wall clock must not move intervals
        self.autoscaler = None  # the scaling leader's loop, when a provider is configured
        self._prober = None

    async def start_scaling(self, url: str, fingerprint: str | None, cert_file: str | None) -> None:
        """Start the scaling leader's loop (once the manager listens at `url`: local
        nodes register there) when `config.provider` names a provider."""
        if not self.config.provider:
            return
        from .scaling.setup import build_autoscaler

        self.autoscaler, self._prober = build_autoscaler(
            self.config, self.registry, self.metrics.registry, self.feed.record, url, fingerprint, cert_file)
        await self.autoscaler.start()

    def uptime(self) -> float:
        return time.monotonic() - self._started

    def learning_nodes(self) -> bool:
        """Just started: a node missing from the registry may be one that has not sent its
        first heartbeat here yet (a restarted manager with an in-process store)."""
        return time.monotonic() - self._started < self.registry.lease_s + HEARTBEAT_S

    def _heartbeat_connection_closed(self, node_id: str) -> None:
        if not self.draining:  # our own shutdown closes every connection: no verdict
            self.registry.mark_suspect(node_id, "heartbeat connection closed")

    async def _check(self, record) -> bool:
        return await self.proxy.check(record)

    async def start(self) -> None:
        await self.proxy.start()
        await self.registry.start()
        self.feed.start()

    async def close(self) -> None:
        if self.autoscaler is not None:
            await self.autoscaler.close()
            await self._prober.close()
        await self.feed.close()
        await self.registry.close()
        await self.proxy.close()
        await self.store.close()

    async def route(self, kind: RouteKind, stream: str, group: str | None = None) -> RouteAnswer:
        """A route decision, timed into the latency histogram."""
        started = time.perf_counter()
        try:
            if kind is RouteKind.PUBLISH:
                return await self.router.route_publish(stream, group)
            return await self.router.route_play(stream, group)
        finally:
            self.metrics.route_seconds.labels(kind.value).observe(time.perf_counter() - started)


MANAGER = web.AppKey("manager", Manager)
