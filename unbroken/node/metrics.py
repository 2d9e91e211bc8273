"""Prometheus metrics of a node (its own registry, exposed at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from unbroken.media.fastpath import PATH
from unbroken.media.rtc_internals import consent_freshness


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions_created = Counter(
            "unbroken_sessions_created", "Sessions created", ["kind"], registry=self.registry)
        self.sessions_closed = Counter(
            "unbroken_sessions_closed", "Sessions closed", ["kind", "reason"],
            registry=self.registry)
        self.requests_rejected = Counter(
            "unbroken_requests_rejected", "Requests answered with an error", ["status"],
            registry=self.registry)
        self.draining = Gauge("unbroken_draining", "1 while the node drains",
                              registry=self.registry)
        self.forwarding_path = Gauge(
            "unbroken_forwarding_path",
            "1 for the forwarding path in use: native (C fast path) or python (fallback)",
            ["path"], registry=self.registry)
        self.forwarding_path.labels(PATH.name).set(1)

    def add_live_collector(self, collect) -> None:
        """`collect()` returns (streams, publishers, subscribers, forwarded packets, bytes)."""

        class Live:
            def collect(self):
                streams, publishers, subscribers, packets, octets = collect()
                yield GaugeMetricFamily("unbroken_streams", "Streams known", value=streams)
                yield GaugeMetricFamily("unbroken_publishers", "Live publishers",
                                        value=publishers)
                yield GaugeMetricFamily("unbroken_subscribers", "Subscriber sessions",
                                        value=subscribers)
                yield GaugeMetricFamily("unbroken_forwarded_packets",
                                        "RTP packets sent to subscribers of live sessions",
                                        value=packets)
                yield GaugeMetricFamily("unbroken_forwarded_bytes",
                                        "RTP payload bytes sent to subscribers of live sessions",
                                        value=octets)
                consent = consent_freshness()
                if consent is not None:
                    yield CounterMetricFamily("unbroken_ice_consent_checks",
                                              "ICE consent requests sent (RFC 7675)",
                                              value=consent.sent)
                    yield CounterMetricFamily("unbroken_ice_consent_failures",
                                              "ICE consent requests unanswered or refused",
                                              value=consent.failed)
                    yield CounterMetricFamily("unbroken_ice_consent_expired",
                                              "Sessions closed because consent expired",
                                              value=consent.expired)

        self.registry.register(Live())

    def render(self) -> bytes:
        return generate_latest(self.registry)
