"""What the worker tells: counts and latency per delivery, DLQ lines, the summary line."""

from __future__ import annotations

import time
from collections import Counter

import structlog

from service.observability.metrics import Metrics
from service.observability.sampling import LogSampler
from service.records import TP, BatchResult, InRecord
from service.runtime.guarantee import Delivered

log = structlog.get_logger("rill.worker")


class Report:
    """Counts every delivery in one place, and keeps the log readable under a flood.

    Args:
        metrics: the worker's metrics.
        topic: the input topic (the label of every count).
        summary_interval_s: how often the summary line comes out.
        routed: outputs are routed (RILL_ROUTE_*): count them per output topic too.
    """

    def __init__(
        self, metrics: Metrics, topic: str, summary_interval_s: float, routed: bool = False
    ) -> None:
        self.metrics = metrics
        self.topic = topic
        self.routed = routed
        self.summary_interval_s = summary_interval_s
        # Kafka timestamp of the last record processed per partition (lag in seconds).
        self.last_ts: dict[TP, int] = {}
        self._totals = dict.fromkeys(("in", "out", "dlq", "filtered"), 0)
        self._dlq_lines = LogSampler()
        self._next_summary = time.monotonic() + summary_interval_s

    def delivered(self, result: BatchResult, delivered: Delivered) -> None:
        """Every delivery (batch, tick, reconcile) counted in one place."""
        self.metrics.commit_seconds.observe(delivered.commit_s)
        self.metrics.count_batch(self.topic, result, delivered.outputs)
        if self.routed and result.outputs:
            for output, n in Counter(o.topic for o in result.outputs).items():
                self.metrics.records_routed.labels(self.topic, output).inc(n)
        if delivered.moved:
            self.metrics.records_dlq.labels(self.topic, "produce", "refused").inc(delivered.moved)
        totals = self._totals
        totals["in"] += result.consumed
        totals["out"] += delivered.outputs - result.rekeyed()
        totals["dlq"] += len(result.dlq) + delivered.moved
        totals["filtered"] += result.filtered

    def batch(self, records: list[InRecord], result: BatchResult, seconds: float) -> None:
        """A batch went through: its time, its records' end-to-end latency, its DLQ lines."""
        self.metrics.batch_seconds.observe(seconds)
        now = time.time() * 1000
        self.metrics.end_to_end_seconds.observe_many(
            [max(0.0, now - r.timestamp_ms) / 1000 for r in records]
        )
        # Records are in offset order per partition: the last one of each wins.
        self.last_ts.update({(r.topic, r.partition): r.timestamp_ms for r in records})
        self.dlq_lines(result)
        log.debug("batch", **result.extra())

    def dlq_lines(self, result: BatchResult) -> None:
        """A line per DLQ entry of a delivery (a batch, or the window results of an idle
        tick), a few per reason under a flood."""
        sampler = self._dlq_lines
        for entry in result.dlq:
            if sampler.allow((entry.stage, entry.error_class)):
                log.warning("record to DLQ", **entry.reason())
        self.dlq_counts()

    def dlq_counts(self, force: bool = False) -> None:
        """Under a flood a few lines per DLQ reason: the rest come out here as counts."""
        sampler = self._dlq_lines
        for kind, count in sampler.due(force).items():
            log.warning(
                "more records to DLQ (not logged one by one; see rill_records_dlq)",
                reason=kind,
                count=count,
                interval_s=sampler.interval_s,
            )

    def summary(self, partitions: int) -> None:
        """The summary line, once per interval."""
        if time.monotonic() < self._next_summary:
            return
        log.info(
            "summary", interval_s=self.summary_interval_s, partitions=partitions, **self._totals
        )
        self._totals = dict.fromkeys(self._totals, 0)
        self._next_summary = time.monotonic() + self.summary_interval_s

    def forget(self, pairs: list[TP]) -> None:
        """Partitions revoked."""
        for tp in pairs:
            self.last_ts.pop(tp, None)
