"""The edge's pulls: one per stream, started by its first viewer."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily

from .locator import UpstreamLocator
from .pull import UPSTREAM_WAIT_LIVE_MS, Pull, PullHost, PullState
from .upstream_client import ANSWER_MARGIN, UpstreamClient

__all__ = ["SETUP_WAIT", "Relay"]

log = logging.getLogger("unbroken.node.relay")

# s a viewer with no wait of its own waits for the pull's first attempt to settle
SETUP_WAIT = UPSTREAM_WAIT_LIVE_MS / 1000 + ANSWER_MARGIN


class Relay:
    """Owns the node's pulls (at most one per stream name), its upstream HTTP client and
    its metrics. Viewers ask for a stream with ``pull``; a pull ends by itself a linger
    time after its stream's last viewer left."""

    def __init__(self, host: PullHost, locator: UpstreamLocator, linger: float,
                 registry: CollectorRegistry) -> None:
        self.host = host
        self.locator = locator
        self.linger = linger
        self.client = UpstreamClient()
        self.pulls: dict[str, Pull] = {}
        self._stopping = False
        self.attempts = Counter(
            "unbroken_relay_pull_attempts", "Pull attempts by outcome (live, refused by an "
            "upstream, failed, live upstream session lost)", ["outcome"], registry=registry)
        self.refusals = Counter(
            "unbroken_relay_upstream_refusals", "Upstream answers other than 201 (0: "
            "unreachable)", ["status"], registry=registry)
        registry.register(_PullGauges(self))

    async def pull(self, name: str, wait: float) -> None:
        """Make sure `name` is being pulled, then wait (at most `wait` s, or SETUP_WAIT
        when 0) for it to be live here. Without a wait of its own the caller stops
        waiting at the first failed attempt (it gets "not live", the pull retries)."""
        pull = self._running(name)
        pull.waiting += 1
        try:
            await pull.wait_settled(wait or SETUP_WAIT, through_failures=wait > 0)
        finally:
            pull.waiting -= 1
            pull.hold()

    def _running(self, name: str) -> Pull:
        """`name`'s pull, started if there is none (or it has ended)."""
        pull = self.pulls.get(name)
        if pull is None or pull.ended:
            pull = self.pulls[name] = Pull(name, self.host, self.locator, self.client,
                                           self.linger, self._count, self._ended)
            pull.start()
            log.info("pull started", extra={"stream": name})
        return pull

    def _ended(self, pull: Pull) -> None:
        """A viewer that joined while the pull was ending keeps its stream."""
        if self.pulls.get(pull.name) is pull and not self._stopping and pull.has_viewers():
            self._running(pull.name)

    def hold(self, name: str) -> None:
        pull = self.pulls.get(name)
        if pull is not None:
            pull.hold()

    def _count(self, outcome: str, status: int | None) -> None:
        if outcome == "refused":
            self.refusals.labels(str(status)).inc()
            return
        self.attempts.labels(outcome).inc()

    def describe(self, name: str) -> dict | None:
        """The API's ``upstream`` figures of a relayed stream (None: not relayed)."""
        pull = self.pulls.get(name)
        return pull.snapshot() if pull is not None else None

    def upstream_urls(self) -> dict[str, str]:
        """Each stream pulled now and the upstream it comes from (for the manager)."""
        return {name: pull.upstream.url for name, pull in self.pulls.items()
                if pull.upstream is not None and not pull.ended}

    def forget_ended(self) -> None:
        for name, pull in list(self.pulls.items()):
            if pull.ended:
                del self.pulls[name]

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*(p.stop() for p in self.pulls.values()), return_exceptions=True)
        self.pulls.clear()
        await self.client.close()


class _PullGauges:
    """Live relay figures for /metrics."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def collect(self):
        self.relay.forget_ended()
        states = GaugeMetricFamily("unbroken_relay_pulls", "Pulls by state", labels=["state"])
        for state in PullState:
            if state is not PullState.ENDED:
                states.add_metric([state.value], sum(
                    1 for p in self.relay.pulls.values() if p.state is state))
        yield states
        packets = lost = 0
        for pull in self.relay.pulls.values():
            figures = pull.snapshot()
            packets += figures["packets"]
            lost += figures["packets_lost"]
        yield GaugeMetricFamily("unbroken_relay_packets",
                                "RTP packets received from upstreams by current pulls",
                                value=packets)
        yield GaugeMetricFamily("unbroken_relay_packets_lost",
                                "RTP packets lost on the way from upstreams (current pulls)",
                                value=lost)
