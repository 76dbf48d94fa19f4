"""Delivery guarantees: one object per mode, so the worker never branches on the mode.

A `Guarantee` does two things for the worker:

- `reconcile(tp)`: on assignment, claim the partition's window state and re-emit what
  its last owner left undelivered in the outbox;
- `deliver(batch)`: put a batch's outputs and DLQ entries into Kafka, then mark its
  input offsets done, in the order written in each `deliver` (the commit protocol).

Both then acknowledge the window outbox sequences the delivery completed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from service.errors import (
    DeliveryError,
    FatalError,
    TransactionRefusedError,
    TransactionUnknownError,
)
from service.kafka.producer import Failure, OffsetMeta
from service.processing.batch import Plan, emit
from service.processing.dlq import add_to_dlq, render
from service.processing.regroup import resent
from service.records import TP, BatchResult
from service.runtime.batches import now_ms
from service.runtime.edges import Consumer, Producer
from service.runtime.ledger import Ledger, outbox_seq, seq_meta
from service.runtime.refusals import identity, swap_refused
from service.runtime.window_engine import Outbox, WindowEngine

log = structlog.get_logger("rill.guarantee")
# A transaction is redone after moving refused records to the DLQ at most this often.
MAX_REFUSED_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class Delivered:
    """What a delivery did: sink records delivered, records Kafka refused moved to the DLQ."""

    outputs: int
    moved: int
    commit_s: float


OnDelivered = Callable[[BatchResult, Delivered], None]


class Guarantee(Protocol):
    """What the worker asks of a delivery mode."""

    # The batch's DLQ entries travel in the window outbox too (a new owner that skips
    # the applied records re-emits them).
    carries_dlq: bool

    def reconcile(self, tp: TP) -> None:
        """Claim `tp` and re-emit what its last owner left undelivered."""
        ...

    def deliver(self, batch: BatchResult) -> Delivered:
        """Deliver one batch and mark its offsets done."""
        ...

    def revoked(self, tps: Sequence[TP]) -> None:
        """Partitions went away."""
        ...

    def start(self) -> None:
        """Get the producer ready (before the consumer joins the group)."""
        ...


class _Base:
    def __init__(
        self,
        plan: Plan,
        producer: Producer,
        consumer: Consumer,
        engine: WindowEngine | None,
        *,
        source_topic: str,
        timeout_s: float,
        on_delivered: OnDelivered | None = None,
    ) -> None:
        self.plan = plan
        self.producer = producer
        self.consumer = consumer
        self.engine = engine
        self.source_topic = source_topic
        self.timeout_s = timeout_s
        self.on_delivered = on_delivered
        # At least once: per partition, the window outbox sequence Redis has reached; every
        # stored offset carries it as metadata (as exactly-once commits do), so a new owner
        # tells a Redis that lost the state from a partition that never had any.
        self._reached: dict[TP, int] = {}

    def _acknowledge(self, seqs: dict[TP, int]) -> None:
        if self.engine is not None:
            for tp, seq in seqs.items():
                self.engine.acknowledge(tp, seq)

    def _done(self, batch: BatchResult, delivered: Delivered) -> Delivered:
        self._acknowledge(batch.seqs)
        if self.on_delivered is not None:
            self.on_delivered(batch, delivered)
        return delivered

    def _reemit(self, tp: TP, left: Outbox, next_offsets: dict[TP, int]) -> BatchResult:
        batch = BatchResult(next_offsets=next_offsets, seqs={tp: left.seq})
        emit(batch, left.results, [tp] * len(left.results), self.plan, now_ms())
        batch.outputs.extend(left.outputs)
        batch.sources.extend([tp] * len(left.outputs))
        add_to_dlq(batch, left.dlq)
        return batch

    def _deliver_claimed(self, tp: TP, batch: BatchResult) -> None:
        """Deliver a reconcile; if that fails the partition is not claimed at all.

        Until it is reconciled nothing of it may be applied, ticked, delivered or committed
        (a tick would commit a newer outbox sequence and the undelivered entries would
        never go out): forget the claim, so the retry claims again.
        """
        assert self.engine is not None
        try:
            self.deliver(batch)
        except Exception:
            self.engine.revoke([tp])
            raise

    def deliver(self, batch: BatchResult) -> Delivered:
        """Each mode delivers in its own order."""
        raise NotImplementedError

    def revoked(self, tps: Sequence[TP]) -> None:
        """Nothing to forget by default."""

    def start(self) -> None:
        """Nothing to prepare by default."""

    @staticmethod
    def _nothing(batch: BatchResult) -> bool:
        # An idle tick that closed nothing: only its outbox sequence to acknowledge.
        return not (batch.outputs or batch.dlq or batch.next_offsets)


class AtLeastOnce(_Base):
    """Offsets are stored only after every output and DLQ entry of a batch is delivered.

    A crash anywhere before step 5 redoes the batch after restart (duplicates possible,
    nothing lost).
    """

    carries_dlq = False

    def deliver(self, batch: BatchResult) -> Delivered:
        """Deliver one batch's outputs, then mark its offsets done.

        Raises:
            DeliveryError: something is not delivered yet (the retry waits for it again);
                the batch's offsets are not stored.
        """
        if self._nothing(batch):
            return self._done(batch, Delivered(0, 0, 0.0))
        producer = self.producer
        # 1. Queue every sink output and DLQ entry once; librdkafka batches them per
        #    partition. A retried call only waits for what is still queued.
        if not batch.sent:
            producer.send(batch.outputs)
            producer.send_dlq(batch.dlq)
            batch.sent = True
        # 2. Wait for every delivery report (DeliveryError while deliveries are outstanding).
        failed = producer.flush(self.timeout_s)
        # 3. Transient refusals (broker away, timed out) are queued again: retry later
        #    (a repartition record marked, as later ones may have landed before it).
        transient = [f for f in failed if not f.refused]
        if transient:
            producer.send(resent(f.record) for f in transient)
            raise DeliveryError(f"{len(transient)} deliveries failed for now: {transient[0].error}")
        # 4. What Kafka refused for good (too large, invalid) goes to the DLQ, never away;
        #    if the DLQ does not take it either, it is queued again and retried.
        moved = self._refused_to_dlq(batch, [f for f in failed if f.refused])
        # 5. Everything is delivered: store the offsets; auto-commit, revoke and close commit them.
        started = time.perf_counter()
        self.consumer.store_offsets(batch.next_offsets, self._state_marks(batch))
        return self._done(
            batch, Delivered(len(batch.outputs) - moved, moved, time.perf_counter() - started)
        )

    def _refused_to_dlq(self, batch: BatchResult, refused: list[Failure]) -> int:
        """Records Kafka refused for good, into the DLQ; a refused DLQ copy is sent smaller
        (`refused_entry`) until it is taken, or `DlqRefusedError` stops the worker."""
        if not refused:
            return 0
        moved = sum(1 for f in refused if f.record.topic != self.plan.dlq_topic)
        entries = swap_refused(batch, refused, self.plan, self.source_topic)
        while entries:
            self.producer.send_dlq(entries)
            again = self.producer.flush(self.timeout_s)
            transient = [f for f in again if not f.refused]
            if transient:
                self.producer.send(f.record for f in transient)
                raise DeliveryError(f"DLQ did not take {len(transient)} records: {again[0].error}")
            entries = swap_refused(batch, again, self.plan, self.source_topic, entries)
        return moved

    def _state_marks(self, batch: BatchResult) -> dict[TP, str] | None:
        """Offset metadata of a batch's partitions: the outbox sequence Redis reached."""
        if self.engine is None:
            return None
        reached = self._reached
        for tp, seq in batch.seqs.items():
            reached[tp] = max(reached.get(tp, 0), seq)
        return {tp: seq_meta(reached.get(tp, 0)) for tp in batch.next_offsets}

    def reconcile(self, tp: TP) -> None:
        """Claim `tp`; deliver its outbox (at least once) and drop it.

        Raises:
            StateLostError: Redis has less of `tp`'s state than the committed offset's
                metadata says it reached (the worker acts per RILL_STATE_LOSS).
        """
        if self.engine is None:
            return
        _committed, meta = self.consumer.committed([tp])[tp]
        reached = outbox_seq(meta)
        left = self.engine.assign(tp, now_ms(), expect=reached)
        if left.results or left.dlq or left.outputs:
            self._deliver_claimed(tp, self._reemit(tp, left, {}))
            log.info(
                "outbox re-emitted",
                topic=tp[0],
                partition=tp[1],
                results=len(left.results),
                dlq=len(left.dlq),
            )
        else:
            self._acknowledge({tp: left.seq})
        # Everything up to the claim's sequence is delivered now: the next stored offset
        # names it (never less than what Kafka's committed offset named).
        self._reached[tp] = max(reached, left.seq)
        self.engine.flush_acks([tp])


class ExactlyOnce(_Base):
    """Outputs, DLQ entries and input offsets in ONE Kafka transaction per delivery.

    The offsets carry the window outbox sequence delivered (offset metadata), so a new
    owner re-emits exactly the outbox entries no committed transaction delivered.
    """

    carries_dlq = True

    # Born at `start()`, before the consumer joins: what this process knows is committed.
    ledger: Ledger

    def deliver(self, batch: BatchResult) -> Delivered:
        """1. the offsets to commit, each with its outbox sequence; 2. one transaction of
        outputs, DLQ entries and offsets for the group's current generation (aborted on
        any failure: the caller retries from 1); 3. the ledger learns what is committed.
        """
        if self._nothing(batch):
            return self._done(batch, Delivered(0, 0, 0.0))
        moved = 0
        # 1. Offsets of the batch's partitions, and of tick-only partitions at their position
        #    (past the applied records where no offset was committed yet), so every
        #    delivered outbox sequence is recorded in Kafka.
        self._know_positions(batch)
        offsets = self.ledger.offsets(batch.next_offsets, batch.seqs)
        # 2. The transaction: read_committed readers see all of it or none. A record the
        #    broker refuses for good goes to the DLQ instead, and the transaction is redone.
        started = time.perf_counter()
        for _ in range(MAX_REFUSED_ROUNDS):
            try:
                self.producer.transaction(
                    batch.outputs,
                    batch.dlq,
                    offsets,
                    self.consumer.group_metadata(),
                    self.timeout_s,
                )
                break
            except TransactionRefusedError as exc:
                moved += self._refused_to_dlq(batch, exc.failures)
            except TransactionUnknownError:
                if not self._landed(offsets):
                    raise  # it did not commit: redone by the caller's retry
                log.warning("a commit without an answer did commit (the group's offsets say so)")
                break
        else:
            raise DeliveryError("records refused in every transaction attempt")
        # 3. Kafka has it.
        self.ledger.committed(offsets, batch.seqs)
        return self._done(
            batch, Delivered(len(batch.outputs), moved, time.perf_counter() - started)
        )

    def _landed(self, offsets: dict[TP, OffsetMeta]) -> bool:
        """Did the transaction that committed `offsets`, with no answer, commit?

        Once the producer is replaced, no transaction of its id is open any more: the
        group's committed offsets are the truth. When they cannot be read (or there are
        none to tell by) the worker stops; the recovery protocol reads them at restart.
        """
        try:
            self.producer.settle(self.timeout_s)
            committed = self.consumer.committed(list(offsets), self.timeout_s)
        except DeliveryError as exc:
            raise FatalError(f"a transaction's outcome cannot be learned now: {exc}") from exc
        if not offsets:
            raise FatalError("a transaction without offsets has an unknown outcome")
        return all(_reached(committed.get(tp, (-1, "")), want) for tp, want in offsets.items())

    def _know_positions(self, batch: BatchResult) -> None:
        if self.engine is None:
            return
        for tp in batch.seqs:
            owned = self.engine.owned.get(tp)
            if self.ledger.positions.get(tp, -1) < 0 and owned is not None and owned.applied >= 0:
                self.ledger.positions[tp] = owned.applied + 1

    def _refused_to_dlq(self, batch: BatchResult, failures: list[Failure]) -> int:
        """Swap the records the broker refused for good for DLQ entries, in the batch (a
        refused DLQ copy for a smaller one, `refused_entry`)."""
        refused = [f for f in failures if f.refused]
        if not refused:
            raise DeliveryError(f"transaction aborted: {failures[0].error}")
        gone = {identity(f.record) for f in refused}
        entries = swap_refused(batch, refused, self.plan, self.source_topic)
        kept = [
            (o, s)
            for o, s in zip(batch.outputs, batch.sources, strict=True)
            if identity(o) not in gone
        ]
        moved = len(batch.outputs) - len(kept)
        batch.outputs = [o for o, _ in kept]
        batch.sources = [s for _, s in kept]
        version = self.plan.version
        batch.dlq = [e for e in batch.dlq if identity(render(e, version)) not in gone]
        add_to_dlq(batch, entries)
        return moved

    def reconcile(self, tp: TP) -> None:
        """Claim `tp` and re-emit exactly the outbox entries no committed transaction delivered.

        They go out with the partition's offset (past the applied records) in one transaction.
        """
        if self.engine is None:
            return
        committed, meta = self.consumer.committed([tp])[tp]
        delivered = self.ledger.claimed(tp, committed, meta)
        # Redis must have reached what Kafka says was delivered (else StateLostError).
        left = self.engine.assign(tp, now_ms(), after_seq=delivered, expect=delivered)
        applied = self.engine.owned[tp].applied
        behind = applied >= 0 and applied + 1 > committed
        offset = max(committed, applied + 1)
        if left.results or left.dlq or left.outputs or behind or left.seq > delivered:
            # One transaction: what no committed one delivered, and the offset past the
            # applied records with the sequence Redis reached. Also when there is nothing
            # to re-emit: records applied but not committed (a lost reply, a crash) are
            # skipped when fetched again, so their offsets are committed here, and the
            # sequence committed never stays behind (a later loss would go unseen).
            offsets = {tp: offset} if offset >= 0 else {}
            self._deliver_claimed(tp, self._reemit(tp, left, offsets))
            log.info(
                "outbox re-emitted in a transaction",
                topic=tp[0],
                partition=tp[1],
                results=len(left.results),
                dlq=len(left.dlq),
                offset=offset,
                seq=left.seq,
            )
        elif left.seq:
            self._acknowledge({tp: left.seq})
        self.engine.flush_acks([tp])

    def revoked(self, tps: Sequence[TP]) -> None:
        """Forget the ledger of revoked partitions."""
        self.ledger.forget(tps)

    def start(self) -> None:
        """Fence older producers of this transactional id; an empty ledger."""
        self.ledger = Ledger()
        self.producer.init_transactions(self.timeout_s)


def _reached(committed: OffsetMeta, want: OffsetMeta) -> bool:
    """The committed offset is the one wanted (with its outbox sequence) or past it."""
    return committed[0] > want[0] or committed == want


GUARANTEES: dict[str, type[AtLeastOnce] | type[ExactlyOnce]] = {
    "at_least_once": AtLeastOnce,
    "exactly_once": ExactlyOnce,
}
