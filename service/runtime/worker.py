"""The worker loop: poll, process (pure), deliver and commit. It orchestrates only."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

import structlog

from service import __version__
from service.config import Settings
from service.kafka.admin import ensure_topics, partition_count
from service.kafka.clients import consumer_config, producer_config
from service.kafka.consumer import GroupConsumer
from service.kafka.producer import BatchProducer
from service.observability.health import HealthServer, HealthState
from service.observability.metrics import Metrics
from service.processing.batch import Plan, process_batch
from service.processing.dlq import reason_of
from service.runtime.commit import deliver_and_commit, now_ms

log = structlog.get_logger("rill.worker")
DEFAULT_PARTITIONS = 4


class Worker:
    """One consumer-group member running a plan until asked to stop.

    Args:
        settings: the parsed settings.
        plan: the pure processing plan.
        metrics: where to count (a fresh registry when None).
    """

    def __init__(self, settings: Settings, plan: Plan, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.plan = plan
        self.metrics = metrics or Metrics()
        self.health = HealthState(liveness_threshold_s=60.0)
        self._stop = threading.Event()
        self._assigned: set[tuple[str, int]] = set()

    def request_stop(self) -> None:
        """Finish the current batch, commit, leave the group (safe from a signal handler)."""
        self._stop.set()

    def _on_assign(self, pairs: list[tuple[str, int]]) -> None:
        self._assigned.update(pairs)
        self.metrics.rebalances.labels("assign").inc()
        self.metrics.assigned_partitions.set(len(self._assigned))

    def _on_revoke(self, pairs: list[tuple[str, int]]) -> None:
        self._assigned.difference_update(pairs)
        self.metrics.rebalances.labels("revoke").inc()
        self.metrics.assigned_partitions.set(len(self._assigned))

    def _ready(self) -> tuple[bool, str]:
        if not self._assigned:
            return False, "no partitions assigned"
        return True, f"{len(self._assigned)} partitions assigned"

    def _create_topics(self) -> None:
        s = self.settings
        common = s.librdkafka_common()
        partitions = partition_count(common, s.input_topic) or DEFAULT_PARTITIONS
        ensure_topics(common, [s.input_topic, s.output_topic, s.dlq_topic], partitions)

    def run(self) -> None:
        """Run until `request_stop()`; then finish the batch, commit and close."""
        s = self.settings
        self._create_topics()
        with ExitStack() as stack:
            if s.metrics_port:
                server = HealthServer(s.metrics_port, self.metrics.registry, self.health).start()
                stack.callback(server.close)
                self.health.ready_check = self._ready
            producer = BatchProducer(producer_config(s)).start()
            stack.callback(producer.close)
            consumer = GroupConsumer(
                consumer_config(s), [s.input_topic], self._on_assign, self._on_revoke
            ).start()
            stack.callback(consumer.close)
            log.info(
                "worker started",
                version=__version__,
                input=s.input_topic,
                output=s.output_topic,
                dlq=s.dlq_topic,
                group=s.group_id,
                steps=[step.name for step in self.plan.steps],
            )
            self._loop(consumer, producer)
        log.info("worker stopped")

    def _loop(self, consumer: GroupConsumer, producer: BatchProducer) -> None:
        s, m = self.settings, self.metrics
        totals = {"in": 0, "out": 0, "dlq": 0, "filtered": 0}
        next_summary = time.monotonic() + s.summary_interval_s
        while not self._stop.is_set():
            self.health.beat()
            m.last_poll.set_to_current_time()
            records = consumer.consume(s.batch_size, s.poll_timeout_s)
            if records:
                started = time.perf_counter()
                result = process_batch(records, self.plan, now_ms())
                flush_started = time.perf_counter()
                delivered, moved = deliver_and_commit(
                    result,
                    producer,
                    consumer,
                    dlq_topic=s.dlq_topic,
                    source_topic=s.input_topic,
                    version=__version__,
                    timeout_s=s.delivery_timeout_s,
                )
                m.delivery_seconds.observe(time.perf_counter() - flush_started)
                m.count_batch(s.input_topic, result, delivered)
                if moved:
                    m.records_dlq.labels(s.input_topic, "produce", "refused").inc(moved)
                m.batch_seconds.observe(time.perf_counter() - started)
                totals["in"] += result.consumed
                totals["out"] += delivered
                totals["dlq"] += len(result.dlq) + moved
                totals["filtered"] += result.filtered
                for entry in result.dlq:
                    log.warning("record to DLQ", **reason_of(entry.headers))
                log.debug("batch", **result.extra())
            if time.monotonic() >= next_summary:
                log.info(
                    "summary",
                    interval_s=s.summary_interval_s,
                    partitions=len(self._assigned),
                    **totals,
                )
                totals = dict.fromkeys(totals, 0)
                next_summary = time.monotonic() + s.summary_interval_s
