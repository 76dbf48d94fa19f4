"""The worker loop: poll, process (pure), apply window state, deliver and commit.

It orchestrates only: the computing is in `processing`, the I/O in `kafka` and `state`.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from functools import partial
from typing import Any, TypeVar

import structlog

from service import __version__
from service.config import Settings
from service.errors import DeliveryError
from service.kafka.admin import ensure_topics, partition_count
from service.kafka.clients import consumer_config, producer_config
from service.kafka.consumer import GroupConsumer
from service.kafka.producer import BatchProducer
from service.observability.health import HealthServer, HealthState
from service.observability.metrics import Metrics
from service.observability.tracing import BatchTracer
from service.processing.batch import Plan, dlq_entry, encode_results, process_batch
from service.processing.dlq import SOURCE_PARTITION, SOURCE_TOPIC, add_to_dlq, reason_of
from service.processing.windows import ops_of
from service.records import BatchResult, InRecord, OutRecord
from service.runtime.backpressure import BackPressure
from service.runtime.commit import deliver_and_commit, deliver_in_transaction, now_ms
from service.runtime.exactly_once import Ledger, reconcile
from service.runtime.windowing import EngineResult, WindowEngine
from service.state.redis_store import TP, RedisWindowStore, StateError

log = structlog.get_logger("rill.worker")
T = TypeVar("T")
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
        self.health = HealthState(liveness_threshold_s=settings.health_stall_s)
        self.tracer = BatchTracer(settings.tracing_enabled, settings.otel_traces_exporter)
        self._stop = threading.Event()
        self._assigned: set[TP] = set()
        self._unclaimed: set[TP] = set()
        self._engine: WindowEngine | None = None
        self._producer: BatchProducer | None = None
        self._consumer: GroupConsumer | None = None
        self._last_ts: dict[TP, int] = {}
        self._eos = settings.processing_guarantee == "exactly_once"
        self._ledger = Ledger()
        self._lagging: set[TP] = set()
        self.backpressure = BackPressure(
            settings,
            self.metrics,
            self.health,
            self._stop,
            claimed=lambda: sorted(self._assigned - self._unclaimed),
            on_resume=self._restart_idle_clocks,
        )

    def request_stop(self) -> None:
        """Finish the current batch, commit, leave the group (safe from a signal handler)."""
        self._stop.set()

    def _on_assign(self, pairs: list[TP]) -> None:
        self._assigned.update(pairs)
        self.metrics.rebalances.labels("assign").inc()
        self.metrics.assigned_partitions.set(len(self._assigned))
        if self._engine is not None:
            self._unclaimed.update(pairs)
            try:
                self._claim_pending()
            except (StateError, DeliveryError) as exc:
                # Redis or Kafka is away: keep these partitions paused until it is back.
                log.warning(
                    "partitions not reconciled yet",
                    error=str(exc),
                    partitions=sorted(self._unclaimed),
                )
                if self._consumer is not None:
                    self._consumer.pause(sorted(self._unclaimed))
        if self.backpressure.paused and self._consumer is not None:
            self._consumer.pause(pairs)

    def _claim_pending(self) -> None:
        """Reconcile assigned partitions whose state is not claimed yet."""
        for tp in sorted(self._unclaimed):
            self._reconcile(tp)
            self._unclaimed.discard(tp)
            if not self.backpressure.paused and self._consumer is not None:
                self._consumer.resume([tp])

    def _reconcile(self, tp: TP) -> None:
        """Claim a partition's state and re-emit what its last owner left undelivered."""
        assert self._engine is not None
        assert self._producer is not None
        now = now_ms()
        if self._eos:
            assert self._consumer is not None
            reconcile(
                tp,
                now,
                engine=self._engine,
                producer=self._producer,
                consumer=self._consumer,
                plan=self.plan,
                ledger=self._ledger,
                timeout_s=self.settings.delivery_timeout_s,
            )
            return
        results, late, seq = self._engine.assign(tp, now)
        if not (results or late):
            return
        outputs, dlq = encode_results(results, self.plan, now)
        self._producer.send(outputs)
        self._producer.send([*dlq, *late])
        if self._producer.flush(self.settings.delivery_timeout_s):
            log.warning("outbox re-emit refused records", topic=tp[0], partition=tp[1])
        self._engine.acknowledge(tp, seq)
        self._engine.flush_acks([tp])
        log.info(
            "outbox re-emitted", topic=tp[0], partition=tp[1], results=len(results), late=len(late)
        )

    def _on_revoke(self, pairs: list[TP]) -> None:
        self._assigned.difference_update(pairs)
        self.metrics.rebalances.labels("revoke").inc()
        self.metrics.assigned_partitions.set(len(self._assigned))
        self._unclaimed.difference_update(pairs)
        self.metrics.drop_partitions(pairs)
        self._ledger.forget(pairs)
        for tp in pairs:
            self._last_ts.pop(tp, None)
        if self._engine is not None:
            try:
                self._engine.flush_acks(pairs)
            except StateError as exc:
                # Harmless: the next owner re-emits the outbox (duplicates, nothing lost).
                log.warning("outbox not acknowledged on revoke", error=str(exc))
            self._engine.revoke(pairs)

    def _on_stats(self, stats: dict[str, Any]) -> None:
        lags = self.metrics.partition_stats(stats, time.time(), self._last_ts)
        self._lagging = {tp for tp, lag in lags.items() if lag > 0}

    def _ready(self) -> tuple[bool, str]:
        if not self._assigned:
            return False, "no partitions assigned"
        if self._unclaimed:
            return False, f"{len(self._unclaimed)} partitions not reconciled"
        if self._engine is not None and not self._engine.store.ping():
            return False, "Redis does not answer"
        return True, f"{len(self._assigned)} partitions assigned"

    def _create_topics(self) -> None:
        s = self.settings
        common = s.librdkafka_common()
        partitions = partition_count(common, s.input_topic) or DEFAULT_PARTITIONS
        topics = [s.input_topic, s.output_topic, s.dlq_topic]
        if s.late_topic:
            topics.append(s.late_topic)
        ensure_topics(common, topics, partitions)

    def run(self) -> None:
        """Run until `request_stop()`; then finish the batch, commit and close."""
        s = self.settings
        self._create_topics()
        with ExitStack() as stack:
            if s.metrics_port:
                server = HealthServer(s.metrics_port, self.metrics.registry, self.health).start()
                stack.callback(server.close)
                self.health.ready_check = self._ready
            if self.plan.window is not None:
                self._engine = self._start_engine(stack)
            self._producer = BatchProducer(producer_config(s)).start()
            stack.callback(self._producer.close)
            if self._eos:
                self._producer.init_transactions(s.delivery_timeout_s)
            consumer = GroupConsumer(
                consumer_config(s),
                [s.input_topic],
                self._on_assign,
                self._on_revoke,
                self._on_stats,
            )
            self._consumer = consumer
            consumer.start()
            stack.callback(consumer.close)
            stack.callback(self.tracer.close)
            log.info(
                "worker started",
                version=__version__,
                input=s.input_topic,
                output=s.output_topic,
                dlq=s.dlq_topic,
                group=s.group_id,
                steps=[step.name for step in self.plan.steps],
                window=s.window_type if self.plan.window else None,
            )
            self._loop(consumer, self._producer)
        log.info("worker stopped")

    def _start_engine(self, stack: ExitStack) -> WindowEngine:
        s, window = self.settings, self.plan.window
        assert window is not None
        engine = WindowEngine(
            window,
            RedisWindowStore(
                s.redis_url.get_secret_value(),
                cluster=s.redis_cluster,
                prefix=s.redis_prefix,
                group=s.group_id,
                kind=window.spec.kind,
                size_ms=window.spec.size_ms,
                emit=window.emit,
                ops=ops_of(window.aggregations),
                ttl_s=s.state_ttl_s,
                timeout_s=s.redis_timeout_s,
                password=s.redis_password.get_secret_value() if s.redis_password else None,
                ssl_ca_certs=s.redis_ssl_ca_certs,
            ),
            lambda record, error: dlq_entry(self.plan, record, error, now_ms()),
        )
        engine.store.start()
        stack.callback(engine.store.close)
        return engine

    def _window_step(self, result: BatchResult) -> EngineResult | None:
        """Steps 4-5 of the record flow: pre-aggregate and apply the batch to Redis."""
        if self._engine is None:
            return None
        started = time.perf_counter()
        now = now_ms()
        owned = self._engine.owned
        # Partitions revoked while the batch waited are its new owner's to redo.
        keyed = [k for k in result.keyed if k.record.topic_partition() in owned]
        carry: dict[TP, list[OutRecord]] = {}
        if self._eos:
            # The batch's DLQ records travel in the outbox too: a new owner that skips
            # the applied records re-emits them with the window results.
            for entry in result.dlq:
                why = reason_of(entry.headers)
                source = (why.get(SOURCE_TOPIC, ""), int(why.get(SOURCE_PARTITION, "-1")))
                carry.setdefault(source, []).append(entry)
        applied = self._engine.apply(keyed, now, carry)
        self.metrics.redis_seconds.observe(time.perf_counter() - started)
        outputs, dlq = encode_results(applied.results, self.plan, now)
        result.outputs.extend(outputs)
        add_to_dlq(result, [*dlq, *applied.dlq])
        for tp in applied.fenced:
            result.next_offsets.pop(tp, None)
        self.metrics.count_windows(self.settings.input_topic, applied)
        return applied

    def _tick(self, producer: BatchProducer) -> None:
        """Close windows of idle partitions by wall clock, and deliver what closed."""
        if self._engine is None:
            return
        applied = self._engine.tick(now_ms(), self._lagging)
        if applied.results:
            result = BatchResult()
            outputs, dlq = encode_results(applied.results, self.plan, now_ms())
            result.outputs.extend(outputs)
            add_to_dlq(result, dlq)
            self._deliver(result, producer, None, applied.seqs)
            self.metrics.count_windows(self.settings.input_topic, applied)
        for tp, seq in applied.seqs.items():
            self._engine.acknowledge(tp, seq)

    def _deliver(
        self,
        result: BatchResult,
        producer: BatchProducer,
        consumer: GroupConsumer | None,
        seqs: dict[TP, int] | None = None,
    ) -> tuple[int, int]:
        s = self.settings
        started = time.perf_counter()
        if self._eos:
            assert self._consumer is not None
            offsets = self._ledger.offsets(result.next_offsets, seqs or {})
            delivered, moved, commit_s = deliver_in_transaction(
                result, producer, self._consumer, offsets=offsets, timeout_s=s.delivery_timeout_s
            )
            self._ledger.committed(offsets, seqs or {})
        else:
            delivered, moved, commit_s = deliver_and_commit(
                result,
                producer,
                consumer,
                dlq_topic=s.dlq_topic,
                source_topic=s.input_topic,
                version=__version__,
                timeout_s=s.delivery_timeout_s,
            )
        self.metrics.commit_seconds.observe(commit_s)
        self.metrics.delivery_seconds.observe(time.perf_counter() - started)
        self.metrics.count_batch(s.input_topic, result, delivered)
        if moved:
            self.metrics.records_dlq.labels(s.input_topic, "produce", "refused").inc(moved)
        return delivered, moved

    def _observe_latency(self, records: list[InRecord]) -> None:
        """End-to-end latency of each record, and the last timestamp per partition."""
        now = time.time() * 1000
        self.metrics.end_to_end_seconds.observe_many(
            [max(0.0, now - r.timestamp_ms) / 1000 for r in records]
        )
        # Records are in offset order per partition: the last one of each wins.
        self._last_ts.update({(r.topic, r.partition): r.timestamp_ms for r in records})

    def _restart_idle_clocks(self) -> None:
        if self._engine is not None:
            self._engine.restart_idle_clocks(now_ms())

    def _loop(self, consumer: GroupConsumer, producer: BatchProducer) -> None:
        s, m = self.settings, self.metrics
        totals = {"in": 0, "out": 0, "dlq": 0, "filtered": 0}
        next_summary = time.monotonic() + s.summary_interval_s
        next_tick = time.monotonic() + 1.0
        batch_no = 0
        while not self._stop.is_set():
            self.health.beat()
            m.last_poll.set_to_current_time()
            if self._unclaimed:
                self.backpressure.run("redis", self._claim_pending, consumer)
            records = consumer.consume(s.batch_size, s.poll_timeout_s)
            if records:
                batch_no += 1
                structlog.contextvars.bind_contextvars(batch=batch_no)
                started = time.perf_counter()
                with self.tracer.batch(records):
                    if self.plan.resolver is not None:
                        self.plan.resolver.prefetch(records)
                    result = process_batch(records, self.plan, now_ms())
                    applied = self.backpressure.run(
                        "redis", partial(self._window_step, result), consumer
                    )
                    result.outputs = self.tracer.propagate(result.outputs)
                    seqs = applied.seqs if applied is not None else None
                    delivered, moved = self.backpressure.run(
                        "kafka",
                        partial(self._deliver, result, producer, consumer, seqs),
                        consumer,
                    )
                if applied is not None and self._engine is not None:
                    for tp, seq in applied.seqs.items():
                        self._engine.acknowledge(tp, seq)
                m.batch_seconds.observe(time.perf_counter() - started)
                self._observe_latency(records)
                totals["in"] += result.consumed
                totals["out"] += delivered
                totals["dlq"] += len(result.dlq) + moved
                totals["filtered"] += result.filtered
                for entry in result.dlq:
                    log.warning("record to DLQ", **reason_of(entry.headers))
                log.debug("batch", **result.extra())
                structlog.contextvars.unbind_contextvars("batch")
            if time.monotonic() >= next_tick:
                self.backpressure.run("redis", partial(self._tick, producer), consumer)
                next_tick = time.monotonic() + 1.0
            if time.monotonic() >= next_summary:
                log.info(
                    "summary",
                    interval_s=s.summary_interval_s,
                    partitions=len(self._assigned),
                    **totals,
                )
                totals = dict.fromkeys(totals, 0)
                next_summary = time.monotonic() + s.summary_interval_s
