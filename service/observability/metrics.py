"""Prometheus metrics, one registry per worker (so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.records import BatchResult

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric rill exports; see README "Metrics"."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_in = Counter("rill_records_in", "Records consumed", ["topic"], registry=r)
        self.records_out = Counter(
            "rill_records_out", "Records delivered to the sink", ["topic"], registry=r
        )
        self.records_dlq = Counter(
            "rill_records_dlq", "Records sent to the DLQ", ["topic", "stage", "reason"], registry=r
        )
        self.records_filtered = Counter(
            "rill_records_filtered", "Records dropped by a filter step", ["topic"], registry=r
        )
        self.batch_seconds = Histogram(
            "rill_batch_seconds",
            "Batch time, poll to commit",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_records = Histogram(
            "rill_batch_records",
            "Records per batch",
            buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000),
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "rill_delivery_seconds",
            "Time to deliver a batch's outputs (flush)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rebalances = Counter(
            "rill_rebalances", "Partition assignment changes", ["kind"], registry=r
        )
        self.assigned_partitions = Gauge(
            "rill_assigned_partitions", "Partitions assigned", registry=r
        )
        self.last_poll = Gauge(
            "rill_last_poll_timestamp_seconds", "When the poll loop last turned", registry=r
        )

    def count_batch(self, topic: str, result: BatchResult, delivered: int) -> None:
        """Add one batch's counts."""
        self.records_in.labels(topic).inc(result.consumed)
        if delivered:
            self.records_out.labels(topic).inc(delivered)
        if result.filtered:
            self.records_filtered.labels(topic).inc(result.filtered)
        for (stage, reason), n in result.dlq_reasons.items():
            self.records_dlq.labels(topic, stage, reason).inc(n)
        self.batch_records.observe(result.consumed)
