"""De-duplication by an id within a time window, as pure functions.

A record's id is read from its decoded value (before the pipeline's steps, so a duplicate
of the input event is one whatever the steps make of it). Whether an id was seen is
decided against the ids the partition's state remembers (read from Redis by the runtime,
one pipelined read per batch) and the earlier records of the same batch. The ids kept
go back to Redis with the batch's apply call (`DedupeMarks`), atomically with the rest of
the partition's state and outbox; nothing here does I/O.

The window is measured on the records' Kafka timestamps: a record at `ts` is a duplicate
when a record with its id was kept at `t0` with `t0 + within_ms > ts`. A duplicate does
not extend the window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from service.errors import ConfigError, RecordError
from service.processing.aggregator import Owned, Prepared
from service.processing.windows import PartitionClock
from service.records import TP, DlqEntry, Keyed, Mark, OutRecord
from service.window_state import ApplyCall

IdOf = Callable[[Any], Any]
DUPLICATE_STAGE = "duplicate"
ID_STAGE = "dedupe"


@dataclass(frozen=True, slots=True)
class DedupePlan:
    """How a pipeline de-duplicates its input.

    Attributes:
        id_of: the id of a decoded record (a field's value, or a user function).
        within_ms: how long an id is remembered after the record that carried it.
        to_dlq: a duplicate also becomes a DLQ entry with stage `duplicate`.
        name: the field (or the function's name), for messages.

    Raises:
        ConfigError: a window that is not positive.
    """

    id_of: IdOf
    within_ms: int
    to_dlq: bool = False
    name: str = "id"

    def __post_init__(self) -> None:
        if self.within_ms <= 0:
            raise ConfigError(
                f"dedupe within_ms must be > 0 (got {self.within_ms}): set how long an id "
                "is remembered, e.g. 3600000 for an hour"
            )


def field_id(name: str) -> IdOf:
    """The id of a record as the value of its field `name` (dots reach nested fields)."""
    path = name.split(".")

    def id_of(value: Any) -> Any:
        for part in path:
            if not isinstance(value, Mapping) or part not in value:
                return None
            value = value[part]
        return value

    id_of.__name__ = name
    return id_of


def record_id(plan: DedupePlan, value: Any) -> str:
    """The dedupe id of a decoded record, as text.

    Raises:
        RecordError: stage `dedupe`: the record has no id (missing or null), or the
            user function raised.
    """
    try:
        found = plan.id_of(value)
    except Exception as exc:  # user code may raise anything; the record goes to the DLQ
        error = RecordError(ID_STAGE, f"dedupe id {plan.name}: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        raise error from exc
    if found is None:
        raise RecordError(ID_STAGE, f"record has no dedupe id {plan.name!r}")
    if isinstance(found, bytes):
        return found.decode("utf-8", "replace")
    return found if isinstance(found, str) else str(found)


@dataclass(slots=True)
class DedupeMarks:
    """What one partition's apply call records: the ids kept, with their expiry time.

    Attributes:
        ids: id -> expiry (the kept record's timestamp + the window), in batch order.
        trim_ms: ids whose expiry is at or below this (the batch's newest timestamp)
            are forgotten.
        first_offset / last_offset: the first and last kept record's offsets.
    """

    ids: dict[str, int] = field(default_factory=dict)
    trim_ms: int = 0
    first_offset: int = -1
    last_offset: int = -1


@dataclass(slots=True)
class Verdict:
    """The batch judged: the duplicates, the kept records, and per partition the ids to record."""

    duplicates: list[Mark] = field(default_factory=list)
    kept: list[Mark] = field(default_factory=list)
    marks: dict[TP, DedupeMarks] = field(default_factory=dict)

    def dropped(self) -> set[tuple[TP, int]]:
        """(partition, offset) of every duplicate."""
        return {(m.tp, m.record.offset) for m in self.duplicates}


def ids_to_read(marks: Iterable[Mark]) -> dict[TP, list[str]]:
    """The distinct ids of each partition (what the runtime asks Redis about)."""
    out: dict[TP, dict[str, None]] = {}
    for mark in marks:
        out.setdefault(mark.tp, {})[mark.id] = None
    return {tp: list(ids) for tp, ids in out.items()}


def judge(marks: Sequence[Mark], seen: Mapping[TP, Mapping[str, int]], within_ms: int) -> Verdict:
    """Split a batch's records into duplicates and kept ones, in offset order.

    Args:
        marks: the batch's records past the replay check (above the applied offset).
        seen: per partition, the expiry time of each id the state remembers.
        within_ms: the window.

    Returns:
        The verdict: a record whose id expires after its timestamp (remembered, or kept
        earlier in the batch) is a duplicate; every other one is kept and its id recorded.
    """
    out = Verdict()
    known: dict[TP, dict[str, int]] = {}
    for mark in sorted(marks, key=lambda m: (m.tp, m.record.offset)):
        tp, ts = mark.tp, mark.record.timestamp_ms
        mine = known.get(tp)
        if mine is None:
            mine = known[tp] = dict(seen.get(tp, {}))
        expiry = mine.get(mark.id)
        if expiry is not None and expiry > ts:
            out.duplicates.append(mark)
            continue
        out.kept.append(mark)
        rec = out.marks.get(tp)
        if rec is None:
            rec = out.marks[tp] = DedupeMarks(trim_ms=ts, first_offset=mark.record.offset)
        mine[mark.id] = rec.ids[mark.id] = ts + within_ms
        rec.trim_ms = max(rec.trim_ms, ts)
        rec.last_offset = mark.record.offset
    return out


@dataclass(slots=True)
class Judged:
    """A batch after the dedupe step, ready for the window step.

    Attributes:
        keyed: the window's records without the duplicates' (windowed pipelines).
        carry: the DLQ entries each partition's outbox keeps, without the duplicates'.
        verdict: the duplicates and the ids to record.
        dlq: a DLQ entry (stage `duplicate`) per duplicate, when configured.
        skipped: records at or below their partition's applied offset (replays): neither
            judged nor delivered again (the outbox has what they made).
    """

    keyed: list[Keyed]
    carry: dict[TP, list[DlqEntry]]
    verdict: Verdict
    dlq: list[DlqEntry] = field(default_factory=list)
    skipped: int = 0


def replays(marks: Sequence[Mark], owned: Mapping[TP, Owned]) -> tuple[list[Mark], int]:
    """The marks of owned partitions above their applied offset, and how many were not."""
    fresh = [m for m in marks if m.tp in owned and m.record.offset > owned[m.tp].applied]
    skipped = sum(1 for m in marks if m.tp in owned) - len(fresh)
    return fresh, skipped


def apart(
    keyed: Sequence[Keyed],
    carry: Mapping[TP, Sequence[DlqEntry]],
    verdict: Verdict,
    dlq: Sequence[DlqEntry],
) -> tuple[list[Keyed], dict[TP, list[DlqEntry]]]:
    """The keyed records and carried DLQ entries of a batch without its duplicates', the
    duplicates' own DLQ entries (`dlq`) added to the carry of their partition."""
    dropped = verdict.dropped()
    kept = [k for k in keyed if (k.record.topic_partition(), k.record.offset) not in dropped]
    out: dict[TP, list[DlqEntry]] = {}
    for tp, entries in carry.items():
        out[tp] = [
            e
            for e in entries
            if ((e.source_topic, e.source_partition), e.source_offset) not in dropped
        ]
    for entry in dlq:
        out.setdefault(entry.source, []).append(entry)
    return kept, out


def with_marks(
    prepared: Prepared,
    judged: Judged,
    owned: Mapping[TP, Owned],
    last_offsets: Mapping[TP, int],
) -> dict[TP, list[OutRecord]]:
    """Add the ids to record (and a stateless batch's outputs) to the apply calls.

    A partition whose kept records made no apply call (all filtered, or a stateless
    pipeline) gets one without deltas: its ids, outputs and offsets are recorded all
    the same, atomically. Returns each partition's outputs (kept records, in order).
    """
    outputs: dict[TP, list[OutRecord]] = {}
    for mark in judged.verdict.kept:
        if mark.outputs:
            outputs.setdefault(mark.tp, []).extend(mark.outputs)
    prepared.dlq.extend(judged.dlq)
    for tp, marks in judged.verdict.marks.items():
        call = prepared.calls.get(tp)
        if call is None:
            mine = owned[tp]
            clock = prepared.clocks[tp] = PartitionClock(mine.clock.max_ts, mine.clock.watermark)
            call = ApplyCall(
                epoch=mine.epoch,
                first_offset=marks.first_offset,
                last_offset=max(marks.last_offset, last_offsets.get(tp, -1)),
                max_ts=clock.max_ts,
                watermark=clock.watermark,
                ack_seq=mine.acked or -1,
                deltas=(),
                dlq=judged.carry.get(tp, ()),
                seq=mine.seq,
            )
        prepared.calls[tp] = replace(
            call, seen=marks.ids, trim_ms=marks.trim_ms, outputs=outputs.get(tp, ())
        )
    return outputs
