"""One micro-batch through decode -> steps -> encode, as a pure function.

Every input record ends in exactly one place: outputs, the DLQ, or the filtered count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from service.errors import RecordError
from service.processing.chain import Chain, ItemError, Step, chain
from service.processing.dlq import add_to_dlq
from service.processing.regroup import Regroup, from_repartition, rekey, to_repartition
from service.processing.sizes import fit_dlq, too_large
from service.processing.windows import WindowPlan, WindowResult, check_future, event_time
from service.records import TP, BatchResult, DlqEntry, InRecord, Keyed, OutRecord
from service.serde import Serde


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the pure batch function needs, built once at start."""

    decoder: Serde
    encoder: Serde
    steps: Sequence[Step]
    output_topic: str
    dlq_topic: str
    max_record_bytes: int
    transform_retries: int
    version: str
    window: WindowPlan | None = None
    late_topic: str | None = None
    # The producer's message.max.bytes: no output or DLQ record over it is produced.
    max_message_bytes: int = 1_000_000
    # The schema registry edge (fills the decoder's schema cache before each batch);
    # held here so the worker finds it, never called by the pure functions.
    resolver: Any = None
    # Re-keying through the repartition topic (`group_by`; windowed pipelines only).
    regroup: Regroup | None = None
    # The steps as one function, written out once (`processing.chain`).
    chain: Chain = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain", chain(self.steps))


def encode_key(key: Any) -> bytes | None:
    """A key as bytes: bytes as they are, anything else as UTF-8 text."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    return str(key).encode()


def _transform(
    plan: Plan, record: InRecord, value: Any
) -> tuple[list[tuple[Any, Any]] | None, RecordError | None, int]:
    """Run the steps with retries; returns (outputs, error, attempts)."""
    attempts = 0
    while True:
        attempts += 1
        try:
            return plan.chain(record.key, value), None, attempts
        except RecordError as exc:  # about the record itself: retrying cannot help
            return None, exc, attempts
        except Exception as exc:  # noqa: BLE001 - user code may raise anything; it becomes a DLQ entry
            if attempts > plan.transform_retries:
                error = RecordError("transform", f"{type(exc).__name__}: {exc}")
                error.__cause__ = exc
                return None, error, attempts


def process_batch(records: Sequence[InRecord], plan: Plan, now_ms: int) -> BatchResult:
    """Decode, transform and encode a batch; failures become DLQ records with reasons.

    With `plan.regroup` (group_by) a batch may hold records of both topics: those of the
    input topic go through decode and the steps to the repartition topic (stage one,
    outputs like any other), those of the repartition topic into the window (stage two).

    Args:
        records: the batch, in consume order.
        plan: serdes, steps, topics and limits.
        now_ms: wall clock for the DLQ timestamp header.

    Returns:
        Outputs, DLQ records, counts and the offsets to commit.
    """
    result = BatchResult(consumed=len(records))
    outputs, sources, next_offsets = result.outputs, result.sources, result.next_offsets

    def to_dlq(record: InRecord, error: RecordError, attempts: int = 1) -> None:
        add_to_dlq(result, [dlq_entry(plan, record, error, now_ms, attempts)])

    regroup = plan.regroup
    for record in records:
        next_offsets[(record.topic, record.partition)] = record.offset + 1
        if regroup is not None and _regrouped(result, record, regroup.topic, to_dlq):
            continue
        value, failure = _decode(plan, record)
        if failure is not None:
            to_dlq(record, failure)
            continue
        items, error, attempts = _transform(plan, record, value)
        if error is not None or items is None:
            to_dlq(record, error or RecordError("transform", "no result"), attempts)
            continue
        if not items:
            result.filtered += 1
            continue
        if plan.window is not None:
            keyed, failed = to_window(plan.window, record, items, now_ms, regroup)
        else:
            keyed, failed = [], _item_errors(items)
        if failed:
            if len(failed) == len(items):
                to_dlq(record, _whole(failed, len(items)), attempts)
                continue
            add_to_dlq(result, item_entries(plan, record, failed, len(items), attempts, now_ms))
        if plan.window is not None and regroup is None:
            result.keyed.extend(keyed)
            continue
        try:
            encoded = _encoded(plan, items, keyed)
        except RecordError as exc:
            to_dlq(record, exc, attempts)
            continue
        why = _oversize(encoded, plan)
        if why is not None:
            to_dlq(record, RecordError("encode", why), attempts)
            continue
        outputs.extend(encoded)
        sources.extend([(record.topic, record.partition)] * len(encoded))
    return result


def _decode(plan: Plan, record: InRecord) -> tuple[Any, RecordError | None]:
    """A record's value decoded, or why it cannot be (too large, or the serde refuses)."""
    size = len(record.value) if record.value is not None else 0
    if size > plan.max_record_bytes:
        why = f"record of {size} bytes exceeds max_record_bytes={plan.max_record_bytes}"
        return None, RecordError("decode", why)
    try:
        return plan.decoder.decode(record.value), None
    except RecordError as exc:
        return None, exc


def _encoded(
    plan: Plan, items: Sequence[tuple[Any, Any]], keyed: Sequence[Keyed]
) -> list[OutRecord]:
    """A record's outputs: its items for the sink, or (group_by) its keyed items for the
    repartition topic."""
    if plan.regroup is not None:
        return to_repartition(plan.regroup, keyed)
    return [
        OutRecord(plan.output_topic, encode_key(k), plan.encoder.encode(v), None)
        for k, v in items
        if not isinstance(k, ItemError)
    ]


def _regrouped(
    result: BatchResult,
    record: InRecord,
    topic: str,
    to_dlq: Callable[[InRecord, RecordError], None],
) -> bool:
    """Stage two of group_by: a record of the repartition `topic` into the window (or the
    DLQ); False for a record of the input topic (stage one)."""
    if record.topic != topic:
        return False
    try:
        result.keyed.append(from_repartition(record))
    except RecordError as exc:
        to_dlq(record, exc)
    return True


def _oversize(encoded: Sequence[OutRecord], plan: Plan) -> str | None:
    """Why one of a record's outputs cannot be produced, or None."""
    for out in encoded:
        if out.value and len(out.value) > plan.max_record_bytes:
            return (
                f"output of {len(out.value)} bytes exceeds max_record_bytes={plan.max_record_bytes}"
            )
        why = too_large(out, plan.max_message_bytes)
        if why is not None:
            return why
    return None


NULL_KEY = "a windowed aggregation needs a key: set key_by, or produce keyed records"


def window_key(key: Any) -> str | None:
    """The window key of an item's key (None: the item has none)."""
    if key is None:
        return None
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    return str(key)


# (index among the record's items, key, value, why) of an item that goes to the DLQ.
Failed = tuple[int, Any, Any, RecordError]


def _item_errors(items: Sequence[tuple[Any, Any]]) -> list[Failed]:
    return [(i, None, v, k.error) for i, (k, v) in enumerate(items) if isinstance(k, ItemError)]


def to_window(
    window: WindowPlan,
    record: InRecord,
    items: Sequence[tuple[Any, Any]],
    now_ms: int,
    regroup: Regroup | None = None,
) -> tuple[list[Keyed], list[Failed]]:
    """A record's items on their way into the window, each under its own key (with
    `regroup`, group_by's key: the item's own key is replaced).

    An item without a key, or with an event time no window can take (missing, not
    finite, outside the years 1-9999, more than `window.max_future_ms` ahead of the wall
    clock) does not reach the window.

    Returns:
        (items for the window, items that fail and why).
    """
    if regroup is not None:
        items = rekey(regroup, list(items))
    keyed: list[Keyed] = []
    failed: list[Failed] = []
    time_field, kafka_ts = window.time_field, record.timestamp_ms
    latest = now_ms + window.max_future_ms if window.max_future_ms > 0 else None
    for index, (key, value) in enumerate(items):
        error: RecordError | None = None
        ts = 0
        if key is None or isinstance(key, ItemError):
            error = key.error if key is not None else RecordError("transform", NULL_KEY)
        else:
            try:
                ts = event_time(value, time_field, kafka_ts)
            except RecordError as exc:
                error = exc
            else:
                if latest is not None and ts > latest:
                    error = check_future(ts, now_ms, window.max_future_ms)
        if error is None:
            name = key if type(key) is str else str(window_key(key))
            keyed.append(Keyed(record, name, value, ts))
        else:
            failed.append((index, None if isinstance(key, ItemError) else key, value, error))
    return keyed, failed


def _whole(failed: Sequence[Failed], count: int) -> RecordError:
    """The reason of a record none of whose items could go on (the first item's)."""
    error = failed[0][3]
    return _renamed(error, f"{error} (all {count} items)") if count > 1 else error


def item_entries(
    plan: Plan,
    record: InRecord,
    failed: Sequence[Failed],
    count: int,
    attempts: int,
    now_ms: int,
) -> list[DlqEntry]:
    """DLQ entries of some of a record's items (the others went on).

    When every item fails the record itself is the DLQ entry (replayable as it is);
    when only some do, each is one: the item as JSON under its key, with the record's
    reason and source position (`item i of n: ...`).
    """
    entries = []
    for index, key, value, error in failed:
        entry = DlqEntry.of(
            record,
            plan.dlq_topic,
            _renamed(error, f"item {index + 1} of {count}: {error}"),
            now_ms,
            attempts,
        )
        item = replace(entry, key=encode_key(key), value=orjson.dumps(value, default=str))
        entries.append(fit_dlq(item, plan.version, plan.max_message_bytes))
    return entries


def _renamed(error: RecordError, message: str) -> RecordError:
    """`error` with another message (same stage and cause)."""
    out = RecordError(error.stage, message)
    out.__cause__ = error.__cause__
    return out


def emit(
    result: BatchResult,
    windows: Sequence[WindowResult],
    tps: Sequence[TP],
    plan: Plan,
    now_ms: int,
) -> None:
    """Window results into a batch: encoded to the sink, or to the DLQ when the serde refuses.

    The one path for window results, whether a batch, an idle tick or a reconcile made them.
    `tps[i]` is the input partition whose state made `windows[i]`.
    """
    dlq: list[DlqEntry] = []
    for res, tp in zip(windows, tps, strict=True):
        value = res.as_record()
        key = res.key.encode()
        try:
            out = OutRecord(plan.output_topic, key, plan.encoder.encode(value))
            why = too_large(out, plan.max_message_bytes)
            if why is not None:
                raise RecordError("encode", why)
        except RecordError as exc:
            entry = DlqEntry(
                plan.dlq_topic,
                key,
                orjson.dumps(value, default=str),
                None,
                exc.stage,
                type(exc).__name__,
                str(exc),
                timestamp_ms=now_ms,
                source_topic=plan.output_topic,
                origin=tp,
            )
            dlq.append(fit_dlq(entry, plan.version, plan.max_message_bytes))
            continue
        result.outputs.append(out)
        result.sources.append(tp)
    add_to_dlq(result, dlq)


def dlq_entry(
    plan: Plan, record: InRecord, error: RecordError, now_ms: int, attempts: int = 1
) -> DlqEntry:
    """The DLQ entry of one input record (late ones go to the late topic when set).

    A copy that would exceed the producer's limit keeps a reference to the source record
    instead of its value (`sizes.fit_dlq`).
    """
    topic = plan.late_topic if error.stage == "late" and plan.late_topic else plan.dlq_topic
    entry = DlqEntry.of(record, topic, error, now_ms, attempts)
    return fit_dlq(entry, plan.version, plan.max_message_bytes)
