"""A batch (or idle tick) between its window round trip and its delivery, as plain steps.

`window_input` is what of a processed batch goes to the window step; `settle` puts what
the window step did into the batch: results emitted, DLQ entries added, and partitions
this worker no longer owns as it did (fenced, claimed again, revoked) trimmed away.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

from service.processing.batch import Plan, emit
from service.processing.dlq import add_to_dlq
from service.records import TP, BatchResult, DlqEntry, InRecord, Keyed
from service.runtime.window_engine import InFlight, WindowOutcome, Windows

log = structlog.get_logger("rill.batches")


def now_ms() -> int:
    """Wall clock in milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Pending:
    """A batch (no records: an idle tick) whose window round trip is under way.

    Attributes:
        records: the batch's records.
        result: what processing made of them; the window step's results join it.
        owners: the assignment generation of each partition it delivers for.
        now: wall clock when it was processed.
        started: when it was polled (perf counter).
        flight: its round trip.
        span: its trace span, when tracing.
        failed: the round trip failed once: the next attempt sends it again.
    """

    records: list[InRecord]
    result: BatchResult
    owners: dict[TP, int]
    now: int
    started: float
    flight: InFlight
    span: Any = None
    failed: bool = False


def window_input(
    result: BatchResult, engine: Windows, carries_dlq: bool
) -> tuple[list[Keyed], dict[TP, list[DlqEntry]], dict[TP, int]]:
    """What of a batch goes to the window: keyed records of owned partitions, the DLQ
    entries the outbox carries (exactly-once), and the last offset per partition."""
    owned = engine.owned
    # Partitions revoked while the batch waited are its new owner's to redo: none of
    # their records is applied here, and their offsets are not committed.
    keyed = [k for k in result.keyed if k.record.topic_partition() in owned]
    carry: dict[TP, list[DlqEntry]] = {}
    if carries_dlq:
        for entry in result.dlq:
            carry.setdefault(entry.source, []).append(entry)
    last = {tp: offset - 1 for tp, offset in result.next_offsets.items()}
    return keyed, carry, last


def drop_duplicates(result: BatchResult, dropped: set[tuple[TP, int]]) -> None:
    """Drop the DLQ entries the batch made of records found duplicates (some of a record's
    items failed, the others went on): a duplicate is dropped whole."""
    kept = [
        e
        for e in result.dlq
        if ((e.source_topic, e.source_partition), e.source_offset) not in dropped
    ]
    if len(kept) == len(result.dlq):
        return
    result.dlq, result.dlq_reasons = [], {}
    add_to_dlq(result, kept)


def settle(pending: Pending, applied: WindowOutcome, engine: Windows, plan: Plan) -> None:
    """The window step's outcome into the batch: results, DLQ entries, sequences.

    Partitions fenced, replayed (`stale`), lost, or revoked while the batch waited are
    trimmed: their records went back to Kafka, or belong to a new owner who redoes them
    from the committed offset and the outbox.
    """
    result = pending.result
    if applied.dropped:
        drop_duplicates(result, applied.dropped)
    emit(result, applied.results, applied.tps, plan, pending.now)
    result.outputs.extend(applied.outputs)
    result.sources.extend(applied.output_tps)
    add_to_dlq(result, applied.dlq)
    gone = applied.fenced | set(applied.again) | engine.not_owned(result.next_offsets)
    if gone:
        result.trim(gone)
    result.seqs = applied.seqs
    if applied.skipped:
        log.warning(
            "records at or below the applied offset skipped: a replay after a restart, "
            "a record group_by re-keyed twice (at least once), or offsets reset / the "
            "topic recreated (window state already has them)",
            skipped=applied.skipped,
        )
