"""The worker loop: poll, process (pure), apply window state, deliver and commit.

It orchestrates only: the computing is in `processing`, the I/O in `kafka` and `state`,
the delivery mode in `runtime.guarantee`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from service import __version__
from service.app import open_plan
from service.config import Settings
from service.errors import StateLostError, TransientError
from service.kafka.progress import Progress
from service.observability.health import HealthServer, HealthState
from service.observability.metrics import Metrics
from service.observability.tracing import BatchTracer
from service.processing.batch import Plan, dlq_entry, emit, process_batch
from service.processing.dlq import add_to_dlq
from service.records import TP, BatchResult, DlqEntry, InRecord, first_offsets
from service.runtime.backpressure import BackPressure
from service.runtime.edges import REAL_EDGES
from service.runtime.gates import drop_applied, hold, hold_unresolved
from service.runtime.guarantee import GUARANTEES, Delivered, Guarantee, now_ms
from service.runtime.ports import Consumer, Edges
from service.runtime.report import Report
from service.runtime.state_loss import state_lost
from service.runtime.window_engine import EngineResult, InFlight, Keyed, WindowEngine

log = structlog.get_logger("rill.worker")
TICK_INTERVAL_S = 1.0


@dataclass(slots=True)
class _Pending:
    """A batch whose window apply is under way while the next batch is fetched."""

    records: list[InRecord]
    result: BatchResult
    owners: dict[TP, int]
    keyed: list[Keyed]
    last: dict[TP, int]
    now: int
    started: float
    flight: InFlight


class Worker:
    """One consumer-group member running a plan until asked to stop.

    Args:
        settings: the parsed settings.
        plan: the pure processing plan.
        metrics: where to count (a fresh registry when None).
        edges: how to open the clients (the real Kafka and Redis ones by default).
    """

    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        metrics: Metrics | None = None,
        edges: Edges = REAL_EDGES,
    ) -> None:
        self.settings = settings
        self.edges = edges
        self.plan = plan
        self.metrics = metrics or Metrics()
        self.health = HealthState(liveness_threshold_s=settings.observability.health_stall_s)
        self.tracer = BatchTracer(
            settings.observability.tracing_enabled, settings.observability.traces_exporter
        )
        self._stop = threading.Event()
        self._assigned: set[TP] = set()
        self._unclaimed: set[TP] = set()
        # Partitions held because Redis lost their window state (RILL_STATE_LOSS=fail):
        # unclaimed and paused until revoked or the worker restarts.
        self._lost: set[TP] = set()
        # Partitions waiting (rewound and paused) for a writer schema the registry owes.
        self._schema_held: set[TP] = set()
        # Bumped on every assignment: a batch delivers only for partitions still owned
        # as they were when it was polled.
        self._generation: dict[TP, int] = {}
        self._engine: WindowEngine | None = None
        # RILL_STATE_OVERLAP: one thread runs a batch's Redis round trip while the loop
        # fetches and decodes the next batch (`_pending`).
        self._pool: ThreadPoolExecutor | None = None
        self._pending: _Pending | None = None
        # Batches fetched but not delivered yet, for the lag (`_on_stats`): the one in
        # `_process`, and the one `_finish` delivers (retried behind back-pressure).
        self._current: Sequence[InRecord] = ()
        self._finishing: Sequence[InRecord] = ()
        self._flying: Future[Any] | None = None  # its round trip, until taken
        self._consumer: Consumer | None = None
        self._guarantee: Guarantee | None = None
        self.report = Report(
            self.metrics, settings.topics.input, settings.observability.summary_interval_s
        )
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

    # --- group membership -------------------------------------------------------------

    def _on_assign(self, pairs: list[TP]) -> None:
        self._settle_flight()
        self._assigned.update(pairs)
        for tp in pairs:
            self._generation[tp] = self._generation.get(tp, 0) + 1
        self.metrics.rebalances.labels("assign").inc()
        self.metrics.assigned_partitions.set(len(self._assigned))
        if self._engine is not None:
            # Claimed and reconciled by the loop, right after this callback: a reconcile
            # commits offsets in a transaction, which must not wait on the very rebalance
            # this callback is part of. Until then the partitions stay paused.
            self._unclaimed.update(pairs)
            self._pause(pairs)
        elif self.backpressure.paused:
            self._pause(pairs)

    def _pause(self, pairs: list[TP]) -> None:
        if self._consumer is not None:
            self._consumer.pause(pairs)

    def _claim_pending(self) -> None:
        """Reconcile assigned partitions whose state is not claimed yet."""
        assert self._guarantee is not None
        for tp in sorted(self._unclaimed - self._lost):
            try:
                self._guarantee.reconcile(tp)
            except StateLostError as exc:
                if not self._state_lost(tp, exc):
                    continue
            self._unclaimed.discard(tp)
            if not self.backpressure.paused and self._consumer is not None:
                self._consumer.resume([tp])

    def _state_lost(self, tp: TP, exc: StateLostError) -> bool:
        """Redis lost `tp`'s window state: True when it goes on (reset), False when held."""
        assert self._engine is not None
        assert self._guarantee is not None
        mode = self.settings.state.loss
        if state_lost(tp, exc, mode, self._engine, self._guarantee, self.metrics):
            return True
        self._lost.add(tp)
        self._pause([tp])
        return False

    def _hold_lost(self, exc: StateLostError, records: list[InRecord], consumer: Consumer) -> None:
        """An apply (or TTL refresh) found state gone: the partitions are claimed again.

        The batch goes back to the broker whole (partitions whose script ran find it
        applied, `stale`, and take its outbox); the claim compares Redis with what this
        worker had delivered and Kafka committed, and RILL_STATE_LOSS decides.
        """
        assert self._engine is not None
        log.warning("window state gone from Redis; claiming again", error=str(exc))
        # Every partition of the batch is claimed again, not only those found gone: the
        # scripts of the others may have run (a later fetch of them would find the batch
        # applied, `stale`, and the records after it would be skipped). The claim sets
        # each one's applied offset and hands back its outbox.
        # Not one fenced meanwhile: its claim is a newer owner's.
        mine, claimed = self._assigned, self._engine.owned
        again = {tp for tp in exc.tps if tp in mine}
        again.update(tp for r in records if (tp := r.topic_partition()) in mine and tp in claimed)
        kept = [r for r in records if r.topic_partition() in mine]
        if kept:
            consumer.rewind(kept)
        for tp in again:
            owned = self._engine.owned.get(tp)
            if owned is not None:
                self._engine.store.expect(tp, owned.acked)
        self._engine.revoke([*exc.tps, *again])
        self._unclaimed.update(again)
        self._pause(sorted(self._unclaimed))

    def _on_revoke(self, pairs: list[TP]) -> None:
        self._settle_flight()
        self._assigned.difference_update(pairs)
        self.metrics.rebalances.labels("revoke").inc()
        self.metrics.assigned_partitions.set(len(self._assigned))
        self._unclaimed.difference_update(pairs)
        self._lost.difference_update(pairs)
        self.metrics.state_released(pairs)
        self._schema_held.difference_update(pairs)
        self.metrics.drop_partitions(pairs)
        if self._guarantee is not None:
            self._guarantee.revoked(pairs)
        self.report.forget(pairs)
        if self._engine is not None:
            try:
                self._engine.flush_acks(pairs)
            except TransientError as exc:
                # Harmless: the next owner re-emits the outbox (duplicates, nothing lost).
                log.warning("outbox not acknowledged on revoke", error=str(exc))
            self._engine.revoke(pairs)

    def _on_stats(self, _stats: dict[str, Any]) -> None:
        """Export each partition's lag: end - position, the same in both modes.

        The consumer has just taken these statistics in (`Consumer.progress` reads them).
        """
        if self._consumer is None:
            return
        progress = self._consumer.progress(sorted(self._assigned))
        pending = self._pending.records if self._pending is not None else ()
        first = first_offsets([self._current, self._finishing, pending])
        behind = {tp: p.behind(first.get(tp)) for tp, p in progress.items()}
        lags = {tp: lag for tp, lag in behind.items() if lag is not None}
        self.metrics.partition_lag(lags, time.time(), self.report.last_ts)

    def _ready(self) -> tuple[bool, str]:
        if not self._assigned:
            return False, "no partitions assigned"
        if self._lost:
            names = ", ".join(f"{t}[{p}]" for t, p in sorted(self._lost))
            return False, f"window state lost in Redis, partitions held: {names}"
        if self._unclaimed:
            return False, f"{len(self._unclaimed)} partitions not reconciled"
        if self._engine is not None and not self._engine.store.ping():
            return False, "Redis does not answer"
        return True, f"{len(self._assigned)} partitions assigned"

    # --- start and stop ---------------------------------------------------------------

    def run(self) -> None:
        """Run until `request_stop()`; then finish the batch, commit and close."""
        self.edges.create_topics(self.settings)
        with ExitStack() as stack:
            consumer = self._start(stack)
            self._loop(consumer)
        self.report.dlq_counts(force=True)
        log.info("worker stopped")

    def _start(self, stack: ExitStack) -> Consumer:
        """Open every client in `stack` (closed in reverse order) and join the group."""
        s = self.settings
        open_plan(self.plan, stack)
        if s.observability.metrics_port:
            server = HealthServer(
                s.observability.metrics_port, self.metrics.registry, self.health
            ).start()
            stack.callback(server.close)
            self.health.ready_check = self._ready
        if self.plan.window is not None:
            store = self.edges.store(s, self.plan.window)
            stack.callback(store.close)
            self._engine = WindowEngine(
                self.plan.window, store, lambda rec, err: dlq_entry(self.plan, rec, err, now_ms())
            )
            if s.state.overlap and not self.tracer.enabled:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="rill-redis")
                stack.callback(self._pool.shutdown)
        producer = self.edges.producer(s)
        stack.callback(producer.close)
        consumer = self.edges.consumer(s, self._on_assign, self._on_revoke, self._on_stats)
        self._consumer = consumer
        self._guarantee = GUARANTEES[s.kafka.guarantee](
            self.plan,
            producer,
            consumer,
            self._engine,
            source_topic=s.topics.input,
            timeout_s=s.producer.delivery_timeout_s,
            on_delivered=self.report.delivered,
        )
        self._guarantee.start()
        consumer.start()
        stack.callback(consumer.close)
        stack.callback(self.tracer.close)
        log.info(
            "worker started",
            version=__version__,
            input=s.topics.input,
            output=s.topics.output,
            dlq=s.topics.dlq,
            group=s.kafka.group_id,
            guarantee=s.kafka.guarantee,
            steps=[step.name for step in self.plan.steps],
            window=s.window.kind if self.plan.window else None,
        )
        return consumer

    # --- the loop ---------------------------------------------------------------------

    def _loop(self, consumer: Consumer) -> None:
        s = self.settings
        next_tick = time.monotonic() + TICK_INTERVAL_S
        batch_no = 0
        while not self._stop.is_set():
            self.health.beat()
            self.metrics.last_poll.set_to_current_time()
            if self._unclaimed:
                # A claim while a round trip is under way could hand a partition of it a
                # new epoch before a retry of that round trip: finish it first.
                self._finish(consumer)
                self.backpressure.run("redis", self._claim_pending, consumer)
            records = consumer.consume(s.consumer.batch_size, s.consumer.poll_timeout_s)
            if self._schema_held:
                self._resume_schema_held(consumer)
            if records:
                batch_no += 1
                structlog.contextvars.bind_contextvars(batch=batch_no)
                self._current = records
                try:
                    self._process(records, consumer)
                finally:
                    self._current = ()
                structlog.contextvars.unbind_contextvars("batch")
            else:
                self._finish(consumer)  # nothing to overlap with: deliver it now
            if time.monotonic() >= next_tick:
                self._finish(consumer)
                self._tick(consumer)
                self.report.dlq_counts()
                next_tick = time.monotonic() + TICK_INTERVAL_S
            self.report.summary(len(self._assigned))
        self._finish(consumer)

    def _process(self, records: list[InRecord], consumer: Consumer) -> None:
        """One batch through the record flow: process, window, deliver and commit."""
        records = hold(records, self._unclaimed, consumer)
        records = self._hold_unresolved(self._drop_applied(records), consumer)
        if not records:
            self._finish(consumer)
            return
        started = time.perf_counter()
        if self._pool is not None:
            self._overlapped(records, consumer, started)
            return
        with self.tracer.batch(records):
            result = process_batch(records, self.plan, now_ms())
            owners = self._owners(result)
            try:
                self.backpressure.run("redis", partial(self._window_step, result), consumer)
            except StateLostError as exc:
                self._hold_lost(exc, records, consumer)
                return
            result.outputs = self.tracer.propagate(result.outputs)
            self.backpressure.run("kafka", partial(self._deliver, result, owners), consumer)
        self.report.batch(records, result, time.perf_counter() - started)

    def _overlapped(self, records: list[InRecord], consumer: Consumer, started: float) -> None:
        """The record flow with the Redis round trip of this batch running while the next
        one is fetched and decoded: process this batch (the previous one's round trip is
        still under way), finish and deliver the previous one, then start this one's.

        Delivery and commit order are unchanged: batch N is delivered before N+1's window
        state is even prepared (N+1's clocks start where N's reply left them).
        """
        result = process_batch(records, self.plan, now_ms())
        owners = self._owners(result)
        if self._round_trip_failed():
            # Redis failed the earlier batch's round trip: this batch goes back to Kafka
            # (fetched again once Redis answers, and counted as lag meanwhile), and the
            # earlier one is retried behind back-pressure.
            consumer.rewind(records)
            self._finish(consumer)
            return
        if not self._finish(consumer, later=records):
            return  # an earlier batch found state gone: this one went back to Kafka too
        assert self._engine is not None
        assert self._pool is not None
        keyed, carry, last = self._window_input(result)
        now = now_ms()
        flight = self._engine.begin(keyed, carry, last, self._pool.submit)
        self._pending = _Pending(records, result, owners, keyed, last, now, started, flight)
        self._flying = flight.future

    def _finish(self, consumer: Consumer, later: Sequence[InRecord] = ()) -> bool:
        """Take the pending batch's Redis replies, then deliver it (no-op without one).

        A failed round trip is done again synchronously behind back-pressure (the
        aggregator did not change meanwhile). Returns False when window state was found
        gone: the pending batch and `later` (records fetched after it) are rewound.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return True
        self._finishing = pending.records  # still counted as lag until delivered
        try:
            return self._finish_pending(pending, consumer, later)
        finally:
            self._finishing = ()

    def _finish_pending(
        self, pending: _Pending, consumer: Consumer, later: Sequence[InRecord]
    ) -> bool:
        engine = self._engine
        assert engine is not None
        first = True

        def step() -> EngineResult:
            nonlocal first
            if first:
                first = False
                try:
                    return engine.finish(pending.flight, pending.now)
                finally:
                    self._flying = None
            owned = engine.owned
            keyed = [k for k in pending.keyed if k.record.topic_partition() in owned]
            return engine.apply(keyed, pending.now, pending.flight.carry, pending.last)

        started = time.perf_counter()
        try:
            applied = self.backpressure.run("redis", step, consumer)
        except StateLostError as exc:
            self._hold_lost(exc, [*pending.records, *later], consumer)
            return False
        self.metrics.redis_seconds.observe(time.perf_counter() - started)
        self._applied(pending.result, applied, pending.now)
        self.backpressure.run(
            "kafka", partial(self._deliver, pending.result, pending.owners), consumer
        )
        self.report.batch(pending.records, pending.result, time.perf_counter() - pending.started)
        return True

    def _round_trip_failed(self) -> bool:
        """Wait for the round trip under way; whether it failed."""
        flying = self._flying
        if flying is None:
            return False
        wait([flying])
        return flying.exception() is not None

    def _settle_flight(self) -> None:
        """Wait for an apply round trip under way (a rebalance changes what is owned)."""
        if self._flying is not None:
            wait([self._flying])

    def _drop_applied(self, records: list[InRecord]) -> list[InRecord]:
        """Drop records at or below their partition's applied offset where the outbox holds
        every output of theirs, DLQ entries included (exactly-once): they were fully handled,
        and a new owner's fetch may start below the offset its reconcile committed."""
        if self._engine is None or self._guarantee is None or not self._guarantee.carries_dlq:
            return records
        applied = {tp: o.applied for tp, o in self._engine.owned.items() if o.applied >= 0}
        kept = drop_applied(records, applied)
        if len(kept) < len(records):
            replayed = self.metrics.records_replayed.labels(self.settings.topics.input)
            replayed.inc(len(records) - len(kept))
        return kept

    def _hold_unresolved(self, records: list[InRecord], consumer: Consumer) -> list[InRecord]:
        """Records whose writer schema the registry does not give yet wait in Kafka
        (`RegistryResolver.prefetch` asks for new ids first); after
        RILL_SCHEMA_REGISTRY_WAIT_S such records go to the DLQ instead."""
        resolver = self.plan.resolver
        if resolver is None or not records:
            return records
        ready, tps = hold_unresolved(records, resolver.prefetch(records), consumer)
        self._schema_held.update(tps)
        return ready

    def _resume_schema_held(self, consumer: Consumer) -> None:
        """Fetch the partitions that wait for the registry again once it may be asked."""
        resolver = self.plan.resolver
        if resolver is not None and resolver.due() and not self.backpressure.paused:
            consumer.resume(sorted(self._schema_held & self._assigned))
            self._schema_held.clear()

    def _owners(self, result: BatchResult) -> dict[TP, int]:
        """The assignment generation of each partition the batch delivers for."""
        return {tp: self._generation.get(tp, 0) for tp in result.partitions()}

    def _deliver(self, result: BatchResult, owners: dict[TP, int]) -> Delivered:
        """Deliver, without what this worker no longer owns as it did when it polled.

        A partition revoked (or revoked and assigned again) while the batch waited for
        Redis or Kafka belongs to its new owner, who redoes it from the committed offset
        and the outbox: delivering it here too would duplicate it, and committing its
        offset with the new generation would move the offset back.
        """
        assert self._guarantee is not None
        gone = {
            tp
            for tp in result.partitions()
            if tp not in self._assigned or self._generation.get(tp) != owners.get(tp)
        }
        if gone:
            result.trim(gone)
            log.info("revoked partitions trimmed from the batch", partitions=sorted(gone))
        return self._guarantee.deliver(result)

    def _window_step(self, result: BatchResult) -> None:
        """Steps 4-5 of the record flow: pre-aggregate and apply the batch to the store."""
        if self._engine is None:
            return
        started = time.perf_counter()
        now = now_ms()
        keyed, carry, last = self._window_input(result)
        applied = self._engine.apply(keyed, now, carry, last)
        self.metrics.redis_seconds.observe(time.perf_counter() - started)
        self._applied(result, applied, now)

    def _window_input(
        self, result: BatchResult
    ) -> tuple[list[Keyed], dict[TP, list[DlqEntry]], dict[TP, int]]:
        """What of a batch goes to the window: keyed records, carried DLQ entries, and the
        last offset per partition."""
        assert self._engine is not None
        assert self._guarantee is not None
        owned = self._engine.owned
        # Partitions revoked while the batch waited are its new owner's to redo: none of
        # their records is applied here, and their offsets are not committed.
        keyed = [k for k in result.keyed if k.record.topic_partition() in owned]
        carry: dict[TP, list[DlqEntry]] = {}
        if self._guarantee.carries_dlq:
            for entry in result.dlq:
                carry.setdefault(entry.source, []).append(entry)
        last = {tp: offset - 1 for tp, offset in result.next_offsets.items()}
        return keyed, carry, last

    def _applied(self, result: BatchResult, applied: EngineResult, now: int) -> None:
        """The window part's outcome into the batch: results, DLQ entries, sequences."""
        assert self._engine is not None
        owned = self._engine.owned
        emit(result, applied.results, applied.tps, self.plan, now)
        add_to_dlq(result, applied.dlq)
        # Fenced, or revoked while the batch waited: the new owner redoes these partitions
        # from the committed offset (their DLQ entries too) and takes their outbox.
        gone = applied.fenced | (result.next_offsets.keys() - owned.keys())
        if gone:
            result.trim(gone)
        result.seqs = applied.seqs
        if applied.skipped:
            log.warning(
                "records at or below the applied offset skipped: a replay after a restart, "
                "or offsets reset / the topic recreated (window state already has them)",
                skipped=applied.skipped,
            )
        self.metrics.count_windows(self.settings.topics.input, applied)

    def _tick(self, consumer: Consumer) -> None:
        """Close windows of idle partitions by wall clock, and deliver what closed.

        Two steps, each retried on its own: a failed delivery is retried with the same
        result (applying a new tick instead would close nothing and acknowledge the
        outbox entries that still hold the undelivered windows).
        """
        if self._engine is None:
            return
        try:
            self._keep_alive(consumer)
            result = self.backpressure.run("redis", self._tick_apply, consumer)
        except StateLostError as exc:
            self._hold_lost(exc, [], consumer)
            return
        owners = self._owners(result)
        self.backpressure.run("kafka", partial(self._deliver, result, owners), consumer)

    def _keep_alive(self, consumer: Consumer) -> None:
        """Refresh the TTL of the owned partitions' state (every few seconds): a quiet
        partition's state never expires while it is owned, and state gone is seen."""
        assert self._engine is not None
        epochs = {tp: owned.epoch for tp, owned in self._engine.owned.items()}
        lost = self.backpressure.run("redis", partial(self._engine.store.touch, epochs), consumer)
        if lost:
            raise StateLostError(lost)

    def _tick_apply(self) -> BatchResult:
        assert self._engine is not None
        at_end = {tp for tp, p in self._progress().items() if p.at_end}
        applied = self._engine.tick(now_ms(), at_end)
        result = BatchResult(seqs=applied.seqs)
        emit(result, applied.results, applied.tps, self.plan, now_ms())
        if applied.results:
            self.metrics.count_windows(self.settings.topics.input, applied)
        return result

    def _progress(self) -> dict[TP, Progress]:
        """Where the consumer is now in each partition this worker owns."""
        if self._consumer is None or self._engine is None:
            return {}
        return self._consumer.progress(sorted(self._engine.owned))

    def _restart_idle_clocks(self) -> None:
        if self._engine is not None:
            self._engine.restart_idle_clocks(now_ms())
