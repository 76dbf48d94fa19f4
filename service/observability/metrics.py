"""Prometheus metrics, one registry per worker (so tests can run several)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from service.observability.histogram import BatchHistogram
from service.records import TP, BatchResult

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric rill exports; see docs/operations.md, "Metrics and health"."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._behind_since: dict[TP, float] = {}
        # CPU, RSS, open fds, GC and the Python version, as the default registry has them.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.records_in = Counter("rill_records_in", "Records consumed", ["topic"], registry=r)
        self.records_out = Counter(
            "rill_records_out", "Records delivered to the sink", ["topic"], registry=r
        )
        self.records_rekeyed = Counter(
            "rill_records_rekeyed",
            "Records group_by sent to the repartition topic (stage one; not sink records)",
            ["topic"],
            registry=r,
        )
        self.records_dlq = Counter(
            "rill_records_dlq", "Records sent to the DLQ", ["topic", "stage", "reason"], registry=r
        )
        self.records_filtered = Counter(
            "rill_records_filtered", "Records dropped by a filter step", ["topic"], registry=r
        )
        self.table_loaded = Gauge(
            "rill_table_loaded",
            "1 once the table was read to its end at start (the worker waits for it)",
            ["table"],
            registry=r,
        )
        self.table_lag = Gauge(
            "rill_table_lag",
            "Records of the table's topic not in Redis yet (a table lagging the stream)",
            ["table"],
            registry=r,
        )
        self.table_misses = Counter(
            "rill_table_misses",
            "Records without a table row, by what became of them (null, drop, dlq)",
            ["topic", "action"],
            registry=r,
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
        self.records_late = Counter(
            "rill_records_late", "Records behind the watermark", ["topic"], registry=r
        )
        self.records_duplicate = Counter(
            "rill_records_duplicate",
            "Records dropped as duplicates of an id seen within the dedupe window",
            ["topic"],
            registry=r,
        )
        self.records_not_copartitioned = Counter(
            "rill_records_not_copartitioned",
            "Window input from a partition its window key does not hash to (murmur2 or "
            "CRC32): partial windows; re-key with group_by",
            ["topic"],
            registry=r,
        )
        self.records_routed = Counter(
            "rill_records_routed",
            "Outputs delivered to each routed topic (RILL_ROUTE_*)",
            ["topic", "output"],
            registry=r,
        )
        self.records_replayed = Counter(
            "rill_records_replayed",
            "Records at or below the applied offset, not re-applied",
            ["topic"],
            registry=r,
        )
        self.windows_closed = Counter(
            "rill_windows_closed", "Windows closed and emitted", ["topic"], registry=r
        )
        self.window_updates = Counter(
            "rill_window_updates", "Window updates emitted", ["topic"], registry=r
        )
        self.redis_seconds = Histogram(
            "rill_redis_seconds", "Window apply round trip", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.consumer_lag = Gauge(
            "rill_consumer_lag",
            "Records between the consumer's position and the end of the partition",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_lag_seconds = Gauge(
            "rill_consumer_lag_seconds",
            "Age of the last processed record while lagging (0 when caught up)",
            ["topic", "partition"],
            registry=r,
        )
        self.open_windows = Gauge(
            "rill_open_windows", "Windows open in Redis", ["topic", "partition"], registry=r
        )
        self.state_lost = Gauge(
            "rill_state_lost",
            "1 while a partition is held because Redis lost its window state "
            "(RILL_STATE_LOSS=fail)",
            ["topic", "partition"],
            registry=r,
        )
        self.partitions_fenced = Counter(
            "rill_partitions_fenced",
            "Partitions found fenced by another claim of their state while still assigned "
            "(rewound, paused and claimed again)",
            ["topic"],
            registry=r,
        )
        self.dlq_refused = Counter(
            "rill_dlq_refused",
            "Records the DLQ topic refused even as a reference (the worker stops)",
            ["topic"],
            registry=r,
        )
        self.state_losses = Counter(
            "rill_state_loss",
            "Partitions found with window state Redis lost, by what the worker did "
            "(held, or reset: went on with what Redis has)",
            ["topic", "partition", "action"],
            registry=r,
        )
        self.end_to_end_seconds = BatchHistogram(
            "rill_end_to_end_seconds",
            "Record timestamp to output delivered",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "rill_commit_seconds", "Offset store and commit", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.circuit_state = Gauge(
            "rill_circuit_state",
            "Circuit breaker: 0 closed, 1 open, 2 half open",
            ["dependency"],
            registry=r,
        )
        self.paused = Gauge(
            "rill_paused", "1 while partitions are paused by back-pressure", registry=r
        )
        self.retries = Counter("rill_retries", "Retried operations", ["dependency"], registry=r)
        self.last_poll = Gauge(
            "rill_last_poll_timestamp_seconds", "When the poll loop last turned", registry=r
        )

    def count_windows(self, topic: str, applied: Any) -> None:
        """Add what a window step did (an `WindowOutcome`)."""
        if applied.late:
            self.records_late.labels(topic).inc(applied.late)
        if applied.skipped:
            self.records_replayed.labels(topic).inc(applied.skipped)
        if applied.duplicates:
            self.records_duplicate.labels(topic).inc(applied.duplicates)
        closed = sum(1 for r in applied.results if r.final)
        if closed:
            self.windows_closed.labels(topic).inc(closed)
        if len(applied.results) - closed:
            self.window_updates.labels(topic).inc(len(applied.results) - closed)
        for (t, p), n in applied.open_windows.items():
            self.open_windows.labels(t, str(p)).set(n)

    def partition_lag(
        self, lags: Mapping[TP, int], now_s: float, last_ts_ms: Mapping[TP, int]
    ) -> None:
        """Show each partition's lag: records (end - position) and seconds.

        Lag in seconds is 0 when caught up; behind, it is the age of the last record
        processed, or, before any (a restart onto a backlog), how long the partition has
        been seen behind: a lower bound of the waiting records' age.

        Args:
            lags: records behind the end, per partition (see `kafka.progress`).
            now_s: the wall clock, in seconds.
            last_ts_ms: the timestamp of the last record processed per partition.
        """
        for tp, lag in lags.items():
            topic, pid = tp[0], str(tp[1])
            self.consumer_lag.labels(topic, pid).set(lag)
            if lag <= 0:
                self._behind_since.pop(tp, None)
                age = 0.0
            else:
                since = self._behind_since.setdefault(tp, now_s)
                ts = last_ts_ms.get(tp)
                age = max(0.0, now_s - ts / 1000) if ts else now_s - since
            self.consumer_lag_seconds.labels(topic, pid).set(age)

    def drop_partitions(self, pairs: list[tuple[str, int]]) -> None:
        """Remove per-partition series of partitions this worker no longer owns."""
        for topic, partition in pairs:
            self._behind_since.pop((topic, partition), None)
            for gauge in (self.consumer_lag, self.consumer_lag_seconds, self.open_windows):
                with contextlib.suppress(KeyError):
                    gauge.remove(topic, str(partition))

    def state_loss(self, tp: tuple[str, int], action: str) -> None:
        """A partition found with lost window state: `held` or `reset`."""
        topic, partition = tp[0], str(tp[1])
        self.state_losses.labels(topic, partition, action).inc()
        self.state_lost.labels(topic, partition).set(1 if action == "held" else 0)

    def state_released(self, pairs: list[tuple[str, int]]) -> None:
        """Partitions no longer held for lost state (revoked)."""
        for topic, partition in pairs:
            with contextlib.suppress(KeyError):
                self.state_lost.remove(topic, str(partition))

    def count_batch(self, topic: str, result: BatchResult, delivered: int) -> None:
        """Add one batch's counts."""
        self.records_in.labels(topic).inc(result.consumed)
        rekeyed = result.rekeyed() if delivered else 0
        if delivered > rekeyed:
            self.records_out.labels(topic).inc(delivered - rekeyed)
        if rekeyed:
            self.records_rekeyed.labels(topic).inc(rekeyed)
        if result.filtered:
            self.records_filtered.labels(topic).inc(result.filtered)
        for action, n in result.join_misses.items():
            self.table_misses.labels(topic, action).inc(n)
        for (stage, reason), n in result.dlq_reasons.items():
            self.records_dlq.labels(topic, stage, reason).inc(n)
        if result.consumed:  # window results closed by the idle tick are not a batch
            self.batch_records.observe(result.consumed)
