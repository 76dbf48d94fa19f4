"""Pure window aggregation: keyed records and per-partition clocks in, apply requests out;
store replies in, window results and DLQ entries out.

No Redis, no Kafka: the store is asked through `WindowStore` by `runtime.window_engine`, which
hands this module the replies. Clocks, ownership (epoch, applied offset, acknowledged
outbox sequence) and the accumulators of user reducers live here. Records at or below a
partition's applied offset were already applied (a replay after a crash): they never touch
state again, which makes state exactly-once in both guarantee modes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.errors import FatalError, RecordError, RillError
from service.processing import count_windows
from service.processing.aggregates import kernel
from service.processing.count_windows import KeyWindows, Pending
from service.processing.reducers import Reducers, Slot
from service.processing.windows import (
    PartitionBatch,
    PartitionClock,
    WindowPlan,
    WindowResult,
    event_time,
)
from service.records import TP, DlqEntry, InRecord, Keyed, OutRecord
from service.window_state import NO_TIME, ApplyCall, ApplyReply, Claim, Component, WindowRow

DlqOf = Callable[[InRecord, RecordError], DlqEntry]


@dataclass(slots=True)
class Owned:
    """What this worker knows about a partition it owns."""

    epoch: int
    applied: int
    clock: PartitionClock
    acked: int = 0
    # The outbox sequence Redis answered last (the claim's, then each apply's): the next
    # call names it, so the store tells a replay whose reply was lost (`stale`).
    seq: int = 0
    last_record_wall_ms: int = 0
    watermark_at_last_record: int = NO_TIME
    # group_by: per input partition, the highest source position applied (`Keyed.source`).
    marks: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class Prepared:
    """One batch (or idle tick) as apply calls, before the store has seen it.

    Nothing of the aggregator changes until `Aggregator.take` gets the replies, so a
    failed round trip is retried with the very same calls.
    """

    calls: dict[TP, ApplyCall] = field(default_factory=dict)
    clocks: dict[TP, PartitionClock] = field(default_factory=dict)
    pending: dict[TP, dict[Slot, Any]] = field(default_factory=dict)
    counts: dict[TP, Pending] = field(default_factory=dict)
    dlq: list[DlqEntry] = field(default_factory=list)
    late: int = 0
    skipped: int = 0
    records: bool = True
    # group_by: per partition, the source marks its call moves forward.
    marks: dict[TP, dict[int, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Part:
    """One partition's part of `Aggregator.prepare`, looked up at its first record."""

    owned: Owned
    clock: PartitionClock
    pending: dict[Slot, Any]
    counts: Pending | None


@dataclass(slots=True)
class WindowOutcome:
    """What one batch did to window state."""

    results: list[WindowResult] = field(default_factory=list)
    tps: list[TP] = field(default_factory=list)
    dlq: list[DlqEntry] = field(default_factory=list)
    late: int = 0
    fenced: set[TP] = field(default_factory=set)
    seqs: dict[TP, int] = field(default_factory=dict)
    skipped: int = 0
    open_windows: dict[TP, int] = field(default_factory=dict)
    # The call ran but its reply was lost (a retried round trip): claim again, take the outbox.
    stale: list[TP] = field(default_factory=list)
    # The partition's state, or this worker's claim of it, is gone from Redis; with the
    # outbox sequence this worker saw it reach (the next claim must find at least that).
    lost: list[TP] = field(default_factory=list)
    reached: dict[TP, int] = field(default_factory=dict)
    # De-duplication: a stateless batch's outputs (with their partitions), the
    # (partition, offset) of each duplicate dropped, and how many.
    outputs: list[OutRecord] = field(default_factory=list)
    output_tps: list[TP] = field(default_factory=list)
    dropped: set[tuple[TP, int]] = field(default_factory=set)
    duplicates: int = 0

    @property
    def again(self) -> list[TP]:
        """Partitions to claim again: stale (the outbox has what the call did) or lost."""
        return [*self.stale, *self.lost]


@dataclass(frozen=True, slots=True)
class Outbox:
    """What a partition's last owner left undelivered."""

    results: list[WindowResult]
    dlq: list[DlqEntry]
    seq: int
    # A de-duplicating stateless pipeline's outputs (its outbox keeps them).
    outputs: list[OutRecord] = field(default_factory=list)


def is_idle(owned: Owned, at_end: bool, now_wall_ms: int, timeout_ms: int) -> bool:
    """The idle rule: read to the end, and no record of it for the idle timeout.

    Args:
        owned: the partition.
        at_end: the consumer's position is at the partition's end (the last stable
            offset), so nothing of it is buffered or waiting in a batch.
        now_wall_ms: the wall clock.
        timeout_ms: the idle timeout (> 0).
    """
    if not at_end or owned.watermark_at_last_record <= NO_TIME:
        return False
    return now_wall_ms - owned.last_record_wall_ms >= timeout_ms


class Aggregator:
    """Window aggregation for the partitions this worker owns.

    Args:
        plan: the window definition.
        dlq_of: builds the DLQ (or late topic) entry of a late or unusable record; these
            travel in the outbox with the state change that dropped them.
    """

    def __init__(self, plan: WindowPlan, dlq_of: DlqOf) -> None:
        self.plan = plan
        self.dlq_of = dlq_of
        self.kernel = kernel(plan.stored)
        self.owned: dict[TP, Owned] = {}
        # Count windows: each owned partition's open windows per key (count_windows.py).
        self._counts: dict[TP, dict[str, KeyWindows]] | None = {} if plan.spec.counted else None
        # User reducers fold in Python, from accumulators cached by the owner.
        self._reducers = Reducers(plan.aggregations)

    @property
    def needs_state(self) -> bool:
        """A claim must load the open windows (user reducers fold from them; count
        windows follow each key's)."""
        return bool(self._reducers) or self._counts is not None

    def claimed(
        self,
        tp: TP,
        claim: Claim,
        now_wall_ms: int,
        state: Mapping[tuple[str, int, int], list[Component]] | None = None,
    ) -> None:
        """Take ownership of `tp` as the store handed it over."""
        self.owned[tp] = Owned(
            claim.epoch,
            claim.applied,
            PartitionClock(claim.max_ts, claim.watermark),
            seq=claim.seq,
            last_record_wall_ms=now_wall_ms,
            watermark_at_last_record=claim.watermark,
            marks=dict(claim.marks),
        )
        if self._reducers:
            self._reducers.claimed(tp, state or {})
        if self._counts is not None:
            self._counts[tp] = count_windows.from_state(state or {}, self.plan.spec.count)

    def outbox(self, claim: Claim, after_seq: int = 0) -> Outbox:
        """The results and DLQ entries of a claim's outbox after `after_seq` (delivered).

        Its sequence is the one Redis reached (the claim's), not the highest entry left:
        an outbox whose entries were all acknowledged is empty, and a delivery of it must
        still name the sequence reached, never a lower one.
        """
        found: list[WindowResult] = []
        dlq: list[DlqEntry] = []
        outputs: list[OutRecord] = []
        for entry in claim.outbox:
            if entry.seq > after_seq:
                found.extend(self.results_of(entry.rows))
                dlq.extend(entry.dlq)
                outputs.extend(entry.outputs)
        return Outbox(found, dlq, claim.seq, outputs)

    def acknowledge(self, tp: TP, seq: int) -> None:
        """Outputs up to `seq` of `tp` are delivered."""
        owned = self.owned.get(tp)
        if owned is not None and seq > owned.acked:
            owned.acked = seq

    def revoke(self, tps: Iterable[TP]) -> None:
        """Forget partitions this worker no longer owns."""
        for tp in tps:
            self.owned.pop(tp, None)
            self._reducers.revoke(tp)
            if self._counts is not None:
                self._counts.pop(tp, None)

    def restart_idle_clocks(self, now_wall_ms: int) -> None:
        """Time spent paused by back-pressure is not idleness: count idle time from now."""
        for owned in self.owned.values():
            owned.last_record_wall_ms = now_wall_ms

    def prepare(
        self,
        keyed: Sequence[Keyed],
        carry: Mapping[TP, Sequence[DlqEntry]] | None = None,
        last_offsets: Mapping[TP, int] | None = None,
    ) -> Prepared:
        """Pre-aggregate a batch per partition into one apply call each.

        Args:
            keyed: the batch's records that reach the window.
            carry: more of the batch's DLQ entries per partition to keep in the outbox
                (a new owner re-emits them with the window results).
            last_offsets: the last offset of each partition in the batch: the applied
                offset covers the batch's records after its last keyed one too (DLQ'd or
                filtered), so a new owner that re-emits the outbox does not redo them.
        """
        out = Prepared()
        batches: dict[TP, PartitionBatch] = {}
        dropped: dict[TP, list[DlqEntry]] = {}
        # Per partition of the batch: what each of its records needs, looked up once.
        parts: dict[TP, _Part] = {}
        for item in keyed:
            rec = item.record
            tp = (rec.topic, rec.partition)
            part = parts.get(tp)
            if part is None:
                part = parts[tp] = self._part(tp)
            if rec.offset <= part.owned.applied or (
                item.source is not None and self._again(item, tp, part.owned, out.marks)
            ):
                out.skipped += 1
                continue
            batch = batches.get(tp)
            if batch is None:
                batch = batches[tp] = PartitionBatch(first_offset=rec.offset)
                out.clocks[tp] = part.clock
                out.pending[tp] = part.pending
                if part.counts is not None:
                    out.counts[tp] = part.counts
            batch.last_offset = rec.offset
            error = self._window_one(item, batch, part.clock, part.pending, part.counts)
            if error is not None:
                dropped.setdefault(tp, []).append(self.dlq_of(rec, error))
                out.late += error.stage == "late"
        for entries in dropped.values():
            out.dlq.extend(entries)
        for tp, batch in batches.items():
            batch.last_offset = max(batch.last_offset, (last_offsets or {}).get(tp, -1))
            kept = [*dropped.get(tp, []), *(carry or {}).get(tp, [])]
            out.calls[tp] = self._call(tp, batch, out.clocks[tp], kept, out.marks.get(tp))
        return out

    def prepare_tick(self, now_wall_ms: int, at_end: Collection[TP]) -> Prepared:
        """Advance the watermark of idle partitions by wall clock.

        A partition is idle when the consumer has read it to its end (nothing of it
        buffered or in a batch) and no record of it came for the idle timeout. One the
        fetcher merely served less for a while is never idle: its position is behind
        its end, whatever the guarantee mode.

        Args:
            now_wall_ms: the wall clock.
            at_end: the partitions the consumer has read to their end now.
        """
        out = Prepared(records=False)
        timeout = self.plan.idle_timeout_ms
        if timeout <= 0 or self._counts is not None:  # count windows never close by time
            return out
        for tp, owned in self.owned.items():
            if not is_idle(owned, tp in at_end, now_wall_ms, timeout):
                continue
            idle_for = now_wall_ms - owned.last_record_wall_ms
            wm = max(owned.clock.watermark, owned.watermark_at_last_record + idle_for)
            out.clocks[tp] = PartitionClock(owned.clock.max_ts, wm)
            out.calls[tp] = self._call(tp, PartitionBatch(), out.clocks[tp], [])
        return out

    def take(
        self, prepared: Prepared, replies: Mapping[TP, ApplyReply], now_wall_ms: int
    ) -> WindowOutcome:
        """The store's replies to `prepared`: results, fenced and stale partitions.

        A stale reply means the script ran but its reply was lost (a retried round trip);
        a lost one that Redis no longer has the partition's state or this worker's claim.
        Either way the partition is forgotten here (its records and results of this call
        are dropped, `out.dlq` keeps none of it): the caller claims it again, which takes
        the outbox. A fenced partition is forgotten the same way.
        """
        out = WindowOutcome(late=prepared.late, skipped=prepared.skipped)
        for tp, applied in replies.items():
            if applied.status == "fenced":
                out.fenced.add(tp)
            elif applied.status == "stale":
                out.stale.append(tp)
            elif applied.status == "lost":
                out.lost.append(tp)
                owned = self.owned[tp]
                out.reached[tp] = max(owned.seq, owned.acked)
        gone = out.fenced | set(out.again)
        out.dlq = [e for e in prepared.dlq if e.source not in gone]
        self.revoke(gone)
        for tp, applied in replies.items():
            if tp in gone:
                continue
            if applied.status != "ok":
                raise FatalError(f"apply of {tp} answered {applied.status}")
            owned = self.owned[tp]
            owned.clock = prepared.clocks[tp]
            if prepared.records:
                owned.last_record_wall_ms = now_wall_ms
                owned.watermark_at_last_record = owned.clock.watermark
            owned.applied = max(owned.applied, applied.applied)
            owned.marks.update(prepared.marks.get(tp, {}))
            owned.seq = applied.seq
            owned.clock.watermark = max(owned.clock.watermark, applied.watermark)
            out.seqs[tp] = applied.seq
            out.open_windows[tp] = applied.open_windows
            found = self.results_of(applied.rows)
            out.results.extend(found)
            out.tps.extend([tp] * len(found))
            counts = prepared.counts.get(tp)
            if counts is not None and self._counts is not None:
                count_windows.settled(self._counts[tp], counts.changed)
            accs = prepared.pending.get(tp)
            if accs:
                self._keep_accs(tp, accs)
        return out

    def _keep_accs(self, tp: TP, accs: Mapping[Slot, Any]) -> None:
        """Cache a batch's reducer accumulators; forget those of closed windows."""
        if self._counts is not None:
            still = set(count_windows.open_slots(self._counts[tp]))
            self._reducers.keep(tp, accs, lambda slot: slot[:3] not in still)
        else:
            watermark = self.owned[tp].clock.watermark
            self._reducers.keep(tp, accs, lambda slot: slot[2] <= watermark)

    def results_of(self, rows: Iterable[WindowRow]) -> list[WindowResult]:
        """Window results of the store's rows.

        A count window's row ends one past its last record's offset, and its hidden
        components are not results.
        """
        results = self.kernel.results
        if self._counts is None:
            return [WindowResult(r.key, r.start, r.end, results(r.comps), r.final) for r in rows]
        found = []
        for r in rows:
            values = results(r.comps)
            del values[count_windows.RECORDS]
            end = int(values.pop(count_windows.LAST_OFFSET)) + 1
            found.append(WindowResult(r.key, r.start, end, values, r.final))
        return found

    def _call(
        self,
        tp: TP,
        batch: PartitionBatch,
        clock: PartitionClock,
        dlq: list[DlqEntry],
        marks: dict[int, int] | None = None,
    ) -> ApplyCall:
        owned = self.owned[tp]
        return ApplyCall(
            epoch=owned.epoch,
            first_offset=batch.first_offset,
            last_offset=batch.last_offset,
            max_ts=clock.max_ts,
            watermark=clock.watermark,
            ack_seq=owned.acked or -1,
            deltas=batch.as_deltas(self.plan.spec, self.kernel.fold),
            dlq=dlq,
            seq=owned.seq,
            marks=marks or {},
        )

    def _part(self, tp: TP) -> _Part:
        """A partition's part of a batch: its clock and caches start where it stands."""
        owned = self.owned.get(tp)
        if owned is None:
            raise RillError(f"record of {tp}, which this worker does not own")
        return _Part(
            owned,
            PartitionClock(owned.clock.max_ts, owned.clock.watermark),
            {},
            Pending(self._counts[tp]) if self._counts is not None else None,
        )

    @staticmethod
    def _again(item: Keyed, tp: TP, owned: Owned, marks: dict[TP, dict[int, int]]) -> bool:
        """A record group_by re-keyed twice (a batch redone after a crash, at least once):
        its source position is at or below the highest one applied from that input
        partition. Each input partition's records reach a repartition partition in order,
        so that is the test; the marks move forward in the batch and, applied, in Redis."""
        if item.source is None:
            return False
        src, pos = item.source
        seen = marks.get(tp)
        if seen is None:
            seen = marks[tp] = {}
        if pos <= seen.get(src, owned.marks.get(src, -1)):
            return True
        seen[src] = pos
        return False

    def _window_one(
        self,
        item: Keyed,
        batch: PartitionBatch,
        clock: PartitionClock,
        pending: dict[Slot, Any],
        counts: Pending | None,
    ) -> RecordError | None:
        """Window one record into the batch; returns why it cannot be, if so.

        A count window takes records in offset order, without an event time: first/last
        order by offset, nothing is late.
        """
        plan, spec, rec = self.plan, self.plan.spec, item.record
        after: KeyWindows = ()
        try:
            if counts is not None:
                spans, after = counts.assign(item.key, rec.offset, spec.count, spec.step)
                comps = self.kernel.components(item.value, 0, rec.offset)
            else:
                ts = item.ts
                if ts is None:
                    ts = event_time(item.value, plan.time_field, rec.timestamp_ms)
                comps = self.kernel.components(item.value, ts, rec.offset)
                if not clock.observe(ts, spec.grace_ms):
                    return RecordError(
                        "late",
                        f"event time {ts} is behind the watermark {clock.watermark} "
                        f"(grace {spec.grace_ms} ms)",
                    )
                spans = spec.assign(ts)
            folded = (
                self._reducers.fold(
                    rec.topic_partition(), item.key, spans, item.value, comps, pending
                )
                if self._reducers
                else None
            )
        except RecordError as exc:
            return exc
        if counts is not None:
            counts.keep(item.key, after)
        fold, add = self.kernel.fold, batch.add
        if folded is None:  # built-in aggregates only: one record's components per span
            for span in spans:
                add(fold, item.key, span, comps)
        else:
            for span, span_comps in folded:
                add(fold, item.key, span, span_comps)
        return None
