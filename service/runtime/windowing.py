"""The window engine: per-partition clocks and ownership around the Redis store.

It turns a batch of keyed records into one apply call per partition (pre-aggregated in
memory), and the script's replies into window results. Records at or below a
partition's applied offset were already applied (a replay after a crash): they never
touch state again, which makes state exactly-once in both guarantee modes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from service.errors import RecordError, RillError
from service.processing.windows import (
    Aggregation,
    Component,
    Keyed,
    PartitionBatch,
    PartitionClock,
    WindowPlan,
    WindowResult,
    decode_components,
    event_time,
    ops_of,
    record_components,
    results,
)
from service.records import InRecord, OutRecord
from service.state.redis_store import NO_TIME, TP, ApplyCall, RedisWindowStore

log = structlog.get_logger("rill.windows")


@dataclass(slots=True)
class Owned:
    """What this worker knows about a partition it owns."""

    epoch: int
    applied: int
    clock: PartitionClock
    acked: int = 0
    last_record_wall_ms: int = 0
    watermark_at_last_record: int = NO_TIME


@dataclass(slots=True)
class EngineResult:
    """What one batch did to window state."""

    results: list[WindowResult] = field(default_factory=list)
    dlq: list[OutRecord] = field(default_factory=list)
    late: int = 0
    fenced: set[TP] = field(default_factory=set)
    seqs: dict[TP, int] = field(default_factory=dict)
    skipped: int = 0
    open_windows: dict[TP, int] = field(default_factory=dict)


def encode_late(records: Sequence[OutRecord]) -> bytes:
    """Late DLQ entries as one outbox blob."""

    def b64(b: bytes | None) -> str | None:
        return None if b is None else base64.b64encode(b).decode()

    return orjson.dumps(
        [
            [r.topic, b64(r.key), b64(r.value), [[k, b64(v)] for k, v in r.headers or []]]
            for r in records
        ]
    )


def decode_late(blob: bytes) -> list[OutRecord]:
    """The inverse of `encode_late`."""

    def unb64(s: str | None) -> bytes | None:
        return None if s is None else base64.b64decode(s)

    return (
        [
            OutRecord(t, unb64(k), unb64(v), [(hk, unb64(hv)) for hk, hv in h])
            for t, k, v, h in orjson.loads(blob)
        ]
        if blob
        else []
    )


class WindowEngine:
    """Window state for the partitions this worker owns.

    Args:
        plan: the window definition.
        store: the Redis store.
        dlq_entry: builds the DLQ (or late topic) record of a late or unusable record;
            these travel in the outbox with the state change that dropped them.
    """

    def __init__(
        self,
        plan: WindowPlan,
        store: RedisWindowStore,
        dlq_entry: Callable[[InRecord, RecordError], OutRecord],
    ) -> None:
        self.plan = plan
        self.store = store
        self.dlq_entry = dlq_entry
        self.ops = ops_of(plan.aggregations)
        self.owned: dict[TP, Owned] = {}
        # User reducers fold in Python: their accumulators of open windows are cached
        # here (this worker is the fenced owner) and written to Redis with each batch.
        self._custom: list[tuple[Aggregation, int]] = []
        index = 0
        for agg in plan.aggregations:
            if agg.custom is not None:
                self._custom.append((agg, index))
            index += len(agg.ops)
        self._accs: dict[TP, dict[tuple[str, int, int, int], Any]] = {}

    def assign(
        self, tp: TP, now_wall_ms: int, after_seq: int = 0
    ) -> tuple[list[WindowResult], list[OutRecord], int]:
        """Claim `tp`; returns the outbox it left behind (results, DLQ entries, last seq).

        Entries up to `after_seq` are known to be delivered and are left out.
        """
        claim = self.store.claim(tp)
        if self._custom:
            self._load_accumulators(tp)
        clock = PartitionClock(claim.max_ts, claim.watermark)
        self.owned[tp] = Owned(
            claim.epoch,
            claim.applied,
            clock,
            last_record_wall_ms=now_wall_ms,
            watermark_at_last_record=claim.watermark,
        )
        found: list[WindowResult] = []
        late: list[OutRecord] = []
        last = 0
        for seq, outputs, blob in claim.outbox:
            last = seq
            if seq > after_seq:
                found.extend(self._results(outputs))
                late.extend(decode_late(blob))
        log.info(
            "partition claimed",
            topic=tp[0],
            partition=tp[1],
            epoch=claim.epoch,
            applied=claim.applied,
            outbox=len(claim.outbox),
        )
        return found, late, last

    def acknowledge(self, tp: TP, seq: int) -> None:
        """Outputs up to `seq` of `tp` are delivered."""
        owned = self.owned.get(tp)
        if owned is not None and seq > owned.acked:
            owned.acked = seq

    def flush_acks(self, tps: Iterable[TP]) -> None:
        """Drop delivered outbox entries now (on revoke), rather than with the next batch."""
        for tp in tps:
            owned = self.owned.get(tp)
            if owned is not None and owned.acked:
                self.store.ack(tp, owned.epoch, owned.acked)

    def revoke(self, tps: Iterable[TP]) -> None:
        """Forget partitions this worker no longer owns."""
        for tp in tps:
            self.owned.pop(tp, None)
            self._accs.pop(tp, None)

    def _load_accumulators(self, tp: TP) -> None:
        accs: dict[tuple[str, int, int, int], Any] = {}
        for wid, text in self.store.load_state(tp).items():
            start, end, key = wid.split("|", 2)
            comps = decode_components(self.ops, text)
            for _, index in self._custom:
                accs[(key, int(start), int(end), index)] = orjson.loads(str(comps[index]))
        self._accs[tp] = accs

    def _fold(
        self,
        tp: TP,
        key: str,
        spans: Sequence[tuple[int, int]],
        value: Any,
        comps: list[Component],
        pending: dict[tuple[str, int, int, int], Any],
    ) -> list[tuple[tuple[int, int], list[Component]]]:
        """Fold one record into the user accumulators of its windows (into `pending`)."""
        cache = self._accs.get(tp, {})
        new: dict[tuple[str, int, int, int], Any] = {}
        out = []
        for span in spans:
            span_comps = list(comps)
            for agg, index in self._custom:
                assert agg.custom is not None
                slot = (key, span[0], span[1], index)
                if slot in pending:
                    acc = pending[slot]
                elif slot in cache:
                    acc = cache[slot]
                else:
                    acc = agg.custom.initializer()
                try:
                    acc = agg.custom.reducer(acc, value)
                    span_comps[index] = orjson.dumps(acc).decode()
                except Exception as exc:
                    raise RecordError("transform", f"reducer {agg.name}: {exc}") from exc
                new[slot] = acc
            out.append((span, span_comps))
        pending.update(new)
        return out

    def _forget_closed(self, tp: TP, watermark: int) -> None:
        cache = self._accs.get(tp)
        if cache:
            for slot in [s for s in cache if s[2] <= watermark]:
                del cache[slot]

    def apply(
        self,
        keyed: Sequence[Keyed],
        now_wall_ms: int,
        carry: dict[TP, list[OutRecord]] | None = None,
    ) -> EngineResult:
        """Pre-aggregate the batch per partition and apply it in one round trip.

        Args:
            keyed: the batch's records that reach the window.
            now_wall_ms: wall clock.
            carry: more of the batch's DLQ records per partition to keep in the outbox
                (exactly-once: a new owner re-emits them with the window results).
        """
        out = EngineResult()
        batches: dict[TP, PartitionBatch] = {}
        dropped: dict[TP, list[OutRecord]] = {}
        # Clocks and accumulators change only once Redis took the batch, so a failed
        # round trip can be retried with the very same inputs.
        clocks: dict[TP, PartitionClock] = {}
        pending: dict[TP, dict[tuple[str, int, int, int], Any]] = {}
        for item in keyed:
            rec = item.record
            tp = (rec.topic, rec.partition)
            owned = self.owned.get(tp)
            if owned is None:
                raise RillError(f"record of {tp}, which this worker does not own")
            if rec.offset <= owned.applied:
                out.skipped += 1
                continue
            batch = batches.get(tp)
            if batch is None:
                batch = batches[tp] = PartitionBatch(first_offset=rec.offset)
            batch.last_offset = rec.offset
            clock = clocks.get(tp)
            if clock is None:
                clock = clocks[tp] = PartitionClock(owned.clock.max_ts, owned.clock.watermark)
            error = self._take(item, batch, clock, pending.setdefault(tp, {}))
            if error is not None:
                dropped.setdefault(tp, []).append(self.dlq_entry(rec, error))
                out.late += error.stage == "late"
        for entries in dropped.values():
            out.dlq.extend(entries)
        kept = {tp: [*dropped.get(tp, []), *(carry or {}).get(tp, [])] for tp in batches}
        late_blobs = {tp: encode_late(e) for tp, e in kept.items() if e}
        self._send(batches, out, late_blobs, clocks, now_wall_ms)
        for tp, accs in pending.items():
            if tp in out.seqs:
                self._accs.setdefault(tp, {}).update(accs)
                self._forget_closed(tp, self.owned[tp].clock.watermark)
        return out

    def tick(self, now_wall_ms: int, busy: Iterable[TP] = ()) -> EngineResult:
        """Advance the watermark of idle partitions by wall clock.

        A partition is idle when no record of it arrived for the idle timeout and none
        is waiting for it (`busy`: partitions with consumer lag).
        """
        out = EngineResult()
        timeout = self.plan.idle_timeout_ms
        if timeout <= 0:
            return out
        waiting = set(busy)
        idle: dict[TP, PartitionBatch] = {}
        clocks: dict[TP, PartitionClock] = {}
        for tp, owned in self.owned.items():
            idle_for = now_wall_ms - owned.last_record_wall_ms
            if tp in waiting or idle_for < timeout or owned.watermark_at_last_record <= NO_TIME:
                continue
            wm = max(owned.clock.watermark, owned.watermark_at_last_record + idle_for)
            clocks[tp] = PartitionClock(owned.clock.max_ts, wm)
            idle[tp] = PartitionBatch()
        self._send(idle, out, {}, clocks, now_wall_ms, records=False)
        return out

    def restart_idle_clocks(self, now_wall_ms: int) -> None:
        """Time spent paused by back-pressure is not idleness: count idle time from now."""
        for owned in self.owned.values():
            owned.last_record_wall_ms = now_wall_ms

    def _take(
        self,
        item: Keyed,
        batch: PartitionBatch,
        clock: PartitionClock,
        pending: dict[tuple[str, int, int, int], Any],
    ) -> RecordError | None:
        """Window one record into the batch; returns why it cannot be, if so."""
        plan, rec = self.plan, item.record
        try:
            ts = event_time(item.value, plan.time_field, rec.timestamp_ms)
            comps = record_components(plan.aggregations, item.value, ts, rec.offset)
            if not clock.observe(ts, plan.spec.grace_ms):
                return RecordError(
                    "late",
                    f"event time {ts} is behind the watermark {clock.watermark} "
                    f"(grace {plan.spec.grace_ms} ms)",
                )
            spans = plan.spec.assign(ts)
            if self._custom:
                folded = self._fold(
                    item.record.topic_partition(), item.key, spans, item.value, comps, pending
                )
            else:
                folded = [(span, comps) for span in spans]
        except RecordError as exc:
            return exc
        for span, span_comps in folded:
            batch.add(self.ops, item.key, span, span_comps)
        return None

    def _send(
        self,
        batches: dict[TP, PartitionBatch],
        out: EngineResult,
        late_blobs: dict[TP, bytes],
        clocks: dict[TP, PartitionClock],
        now_wall_ms: int,
        records: bool = True,
    ) -> None:
        calls = {}
        for tp, batch in batches.items():
            owned = self.owned[tp]
            clock = clocks.get(tp, owned.clock)
            calls[tp] = ApplyCall(
                epoch=owned.epoch,
                first_offset=batch.first_offset,
                last_offset=batch.last_offset,
                max_ts=clock.max_ts,
                watermark=clock.watermark,
                ack_seq=owned.acked or -1,
                deltas=batch.as_deltas(self.plan.spec, self.ops),
                late_blob=late_blobs.get(tp, b""),
            )
        for tp, applied in self.store.apply(calls).items():
            if applied.status == "fenced":
                log.warning(
                    "partition fenced: another worker owns it now", topic=tp[0], partition=tp[1]
                )
                out.fenced.add(tp)
                self.owned.pop(tp, None)
                continue
            if applied.status == "stale":
                # The script ran but its reply was lost (a retried round trip): the state
                # has the batch, and the outbox its outputs. Claim again and take them.
                delivered = self.owned[tp].acked if tp in self.owned else 0
                results, late, seq = self.assign(tp, now_wall_ms, after_seq=delivered)
                out.results.extend(results)
                out.dlq.extend(late)
                out.seqs[tp] = seq
                continue
            if applied.status != "ok":
                raise RillError(f"apply of {tp} answered {applied.status}")
            owned = self.owned[tp]
            if tp in clocks:
                owned.clock = clocks[tp]
                if records:
                    owned.last_record_wall_ms = now_wall_ms
                    owned.watermark_at_last_record = owned.clock.watermark
            owned.applied = max(owned.applied, applied.applied)
            owned.clock.watermark = max(owned.clock.watermark, applied.watermark)
            out.seqs[tp] = applied.seq
            out.open_windows[tp] = applied.open_windows
            out.results.extend(self._results(applied.outputs))

    def _results(self, flat: Sequence[Any]) -> list[WindowResult]:
        found = []
        for i in range(0, len(flat), 5):
            tag, key, start, end, comps = flat[i : i + 5]
            values = results(self.plan.aggregations, decode_components(self.ops, comps))
            found.append(WindowResult(key, int(float(start)), int(float(end)), values, tag == "c"))
        return found
