"""The worker loop: poll, process (pure), apply window state, deliver and commit.

It orchestrates only: the computing is in `processing`, the I/O in `kafka` and `state`,
the delivery mode in `runtime.guarantee`, each partition's state in `runtime.partitions`.
A batch and an idle tick take the one path: begin the window round trip, finish it
(retried behind back-pressure, a replayed call told by the store), settle what it did to
the partitions, deliver, acknowledge.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import structlog

from service.errors import TransientError
from service.processing.batch import Plan
from service.records import TP, BatchResult, InRecord, first_offsets
from service.runtime.backpressure import BackPressure
from service.runtime.batches import Pending, now_ms, settle, window_input
from service.runtime.claims import Claims
from service.runtime.copartition import CopartitionCheck
from service.runtime.edges import Consumer, Table
from service.runtime.enrichment import process
from service.runtime.gates import drop_replayed, hold, hold_unresolved, release_schema_held
from service.runtime.guarantee import Delivered, Guarantee
from service.runtime.observers import Observers
from service.runtime.partitions import Partitions
from service.runtime.window_engine import Submit, WindowOutcome, Windows

log = structlog.get_logger("rill.worker")
TICK_INTERVAL_S = 1.0


class Worker:
    """One consumer-group member running a plan until `Observers.stop` is set.

    Built whole by `runtime.service.open_worker`: every collaborator is open and given.

    Args:
        plan: the pure processing plan.
        consumer / guarantee / engine: the group member, the delivery mode, the window step.
        submit: runs a window round trip (a thread: overlapped with the next fetch; or
            inline).
        overlap: the round trip of batch N runs while N+1 is fetched (RILL_STATE_OVERLAP).
        observers: settings, metrics, health, tracer, report and the stop event.
        copartition: checks window input against the partition it came from.
        table: the table records are joined with (`enrichment.NoTable` without a join),
            read to its end already.
    """

    def __init__(
        self,
        plan: Plan,
        consumer: Consumer,
        guarantee: Guarantee,
        engine: Windows,
        submit: Submit,
        overlap: bool,
        observers: Observers,
        copartition: CopartitionCheck,
        table: Table,
    ) -> None:
        self.plan, self.consumer, self.guarantee, self.engine = plan, consumer, guarantee, engine
        self.submit, self.overlap, self.obs = submit, overlap, observers
        self.copartition, self.table = copartition, table
        obs = observers
        self.settings, self.metrics, self.report = obs.settings, obs.metrics, obs.report
        self.partitions = Partitions()
        self.backpressure = BackPressure(
            observers.settings,
            observers.metrics,
            observers.health,
            observers.stop,
            claimed=self.partitions.active,
            on_resume=lambda: engine.restart_idle_clocks(now_ms()),
        )
        self.claims = Claims(
            self.partitions, engine, guarantee, consumer, self.backpressure, observers
        )
        self._replayed = self.metrics.records_replayed.labels(self.settings.topics.input)
        self._pending: Pending | None = None
        # Batches fetched but not delivered yet, for the lag (`on_stats`).
        self._current: Sequence[InRecord] = ()
        self._finishing: Sequence[InRecord] = ()

    # --- group membership (librdkafka's callbacks, on the loop's thread) ------------------

    def on_assign(self, tps: list[TP]) -> None:
        """Partitions assigned: claimed (and reconciled) by the loop right after; a
        reconcile commits in a transaction, which must not wait on this very rebalance."""
        self._settle_flight()
        # With group_by the input's partitions only re-key: active at once, no claim.
        claimed = [tp for tp in tps if self.engine.windows(tp)]
        self.partitions.assigned(claimed, claim=True)
        self.partitions.assigned([tp for tp in tps if tp not in claimed], claim=False)
        self.metrics.rebalances.labels("assign").inc()
        self.metrics.assigned_partitions.set(len(self.partitions))
        paused = tps if self.backpressure.paused else claimed
        if paused:
            self.consumer.pause(paused)

    def on_revoke(self, tps: list[TP]) -> None:
        """Partitions taken away: whatever their state, forgotten everywhere."""
        self._settle_flight()
        self.partitions.revoked(tps)
        self.metrics.rebalances.labels("revoke").inc()
        self.metrics.assigned_partitions.set(len(self.partitions))
        self.metrics.state_released(tps)
        self.metrics.drop_partitions(tps)
        self.guarantee.revoked(tps)
        self.report.forget(tps)
        try:
            self.engine.flush_acks(tps)
        except TransientError as exc:
            # Harmless: the next owner re-emits the outbox (duplicates, nothing lost).
            log.warning("outbox not acknowledged on revoke", error=str(exc))
        self.engine.revoke(tps)

    def on_stats(self, _stats: dict[str, Any]) -> None:
        """Export each partition's lag: from the first record held undelivered, else the
        position (the consumer has just taken these statistics in)."""
        progress = self.consumer.progress(self.partitions.all())
        pending = self._pending.records if self._pending is not None else ()
        first = first_offsets([self._current, self._finishing, pending])
        behind = {tp: p.behind(first.get(tp)) for tp, p in progress.items()}
        lags = {tp: lag for tp, lag in behind.items() if lag is not None}
        self.metrics.partition_lag(lags, time.time(), self.report.last_ts)

    def ready(self) -> tuple[bool, str]:
        """/readyz: the table read to its end, every partition claimed and none held or
        fenced, and Redis answers."""
        if not self.table.loaded():
            return False, self.table.status()
        ready, why = self.partitions.ready()
        if ready and not self.engine.ping():
            return False, "Redis does not answer"
        return ready, why

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        """Turn until the stop event is set; then deliver what is in hand."""
        s, obs = self.settings, self.obs
        next_tick = time.monotonic() + TICK_INTERVAL_S
        batch_no = 0
        while not obs.stop.is_set():
            obs.health.beat()
            self.metrics.last_poll.set_to_current_time()
            if self.partitions.to_claim():
                # A claim hands out a new epoch: the round trip under way goes first.
                self._finish()
                self.backpressure.run("redis", self.claims.claim, self.consumer)
            records = self.consumer.consume(s.consumer.batch_size, s.consumer.poll_timeout_s)
            release_schema_held(
                self.plan.resolver, self.partitions, self.consumer, self.backpressure.paused
            )
            if records:
                batch_no += 1
                structlog.contextvars.bind_contextvars(batch=batch_no)
                self._current = records
                try:
                    self._process(records)
                finally:
                    self._current = ()
                structlog.contextvars.unbind_contextvars("batch")
            else:
                self._finish()  # nothing to overlap with: deliver it now
            if time.monotonic() >= next_tick:
                self._tick()
                self.report.dlq_counts()
                next_tick = time.monotonic() + TICK_INTERVAL_S
            self.report.summary(len(self.partitions))
        self._finish()

    def _process(self, records: list[InRecord]) -> None:
        """Steps 2-3 of the record flow for a batch: process it (the previous batch's round
        trip may still be under way), finish and deliver the previous one, then begin this
        one's window round trip (N+1's clocks start where N's replies left them)."""
        records = hold(records, self.partitions.waiting(), self.consumer)
        if self.guarantee.carries_dlq:
            records = drop_replayed(records, self.engine.owned, self._replayed)
        records = hold_unresolved(records, self.plan.resolver, self.consumer, self.partitions)
        if not records:
            self._finish()
            return
        started = time.perf_counter()
        result = process(records, self.plan, now_ms(), self.table, self.backpressure, self.consumer)
        self.copartition.check(result.keyed)
        if self._round_trip_failed():
            # Redis failed the earlier batch's round trip: this batch goes back to Kafka
            # (fetched again once Redis answers, counted as lag meanwhile).
            self.consumer.rewind(records)
            self._finish()
            return
        self._finish(later=records)
        keyed, carry, last = window_input(result, self.engine, self.guarantee.carries_dlq)
        begin = partial(self.engine.begin, keyed, carry, last, self.submit, result.marks)
        # With de-duplication `begin` reads the batch's ids from Redis first.
        flight = self.backpressure.run("redis", begin, self.consumer)
        owners = {tp: self.partitions.generation(tp) for tp in result.partitions()}
        span = self.obs.tracer.start(records)
        self._pending = Pending(records, result, owners, now_ms(), started, flight, span)
        if not self.overlap:
            self._finish()

    def _tick(self) -> None:
        """Close windows of idle partitions by wall clock: a batch without records, on the
        batch's path. First the owned partitions' state is kept alive (and found gone)."""
        self._finish()
        self.table.check()  # a table no longer followed stops the worker
        if self.plan.join is not None:
            lag = self.table.lag()
            if lag is not None:
                self.metrics.table_lag.labels(self.plan.join.topic).set(lag)
        lost, fenced = self.backpressure.run("redis", self.engine.keep_alive, self.consumer)
        self.claims.again(lost, [])
        self.claims.fenced(fenced, [])
        owned = sorted(self.engine.owned)
        at_end = {tp for tp, p in self.consumer.progress(owned).items() if p.at_end}
        flight = self.engine.begin_tick(now_ms(), at_end, self.submit)
        if flight.future is None:
            return
        owners = {tp: self.partitions.generation(tp) for tp in flight.prepared.calls}
        now = now_ms()
        self._pending = Pending([], BatchResult(), owners, now, time.perf_counter(), flight)
        self._finish()

    def _finish(self, later: Sequence[InRecord] = ()) -> None:
        """Take the pending batch's (or tick's) window replies, then deliver it.

        A failed round trip is sent again behind back-pressure (the aggregator did not
        change meanwhile); partitions whose call was replayed, lost, or fenced go back to
        Kafka from their first record here or in `later` (fetched after it) and are
        claimed again.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self._finishing = pending.records  # still counted as lag until delivered
        try:
            redis_started = time.perf_counter()
            applied = self.backpressure.run("redis", partial(self._replies, pending), self.consumer)
            if pending.flight.prepared.calls:
                self.metrics.redis_seconds.observe(time.perf_counter() - redis_started)
            self.claims.again(applied.again, [*pending.records, *later])
            self.claims.fenced(applied.fenced, [*pending.records, *later])
            settle(pending, applied, self.engine, self.plan)
            if self.engine.claims:
                self.metrics.count_windows(self.settings.topics.input, applied)
            result = pending.result
            result.outputs = self.obs.tracer.propagate(result.outputs, pending.span)
            self.backpressure.run("kafka", partial(self._deliver, pending), self.consumer)
            if pending.records:
                seconds = time.perf_counter() - pending.started
                self.report.batch(pending.records, result, seconds)
            elif result.dlq:  # window results of an idle tick the route or serde refused
                self.report.dlq_lines(result)
        finally:
            self._finishing = ()
            self.obs.tracer.end(pending.span)

    def _replies(self, pending: Pending) -> WindowOutcome:
        """The replies of the round trip; a failed one is sent again first."""
        if pending.failed:
            pending.flight = self.engine.redo(pending.flight)
        try:
            return self.engine.finish(pending.flight, pending.now)
        except TransientError:
            pending.failed = True
            raise

    def _deliver(self, pending: Pending) -> Delivered:
        """Deliver, without what this worker no longer owns as it did when it polled.

        A partition revoked (or revoked and assigned again) while the batch waited belongs
        to its new owner, who redoes it from the committed offset and the outbox.
        """
        result, parts = pending.result, self.partitions
        gone = {
            tp
            for tp in result.partitions()
            if tp not in parts or parts.generation(tp) != pending.owners.get(tp)
        }
        if gone:
            result.trim(gone)
            log.info("revoked partitions trimmed from the batch", partitions=sorted(gone))
        return self.guarantee.deliver(result)

    def _round_trip_failed(self) -> bool:
        """Wait for the round trip under way; whether it failed."""
        pending = self._pending
        future = pending.flight.future if pending is not None else None
        return future is not None and future.exception() is not None

    def _settle_flight(self) -> None:
        """Wait for a round trip under way (a rebalance changes what is owned)."""
        if self._pending is not None and self._pending.flight.future is not None:
            self._pending.flight.future.exception()
