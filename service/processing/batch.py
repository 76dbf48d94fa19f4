"""One micro-batch through decode -> steps -> encode, as a pure function.

Every input record ends in exactly one place: outputs, the DLQ, or the filtered count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import orjson

from service.errors import RecordError
from service.processing.chain import Chain, ItemError, Items, Step, chain
from service.processing.dedupe import DedupePlan, record_id
from service.processing.dlq import add_to_dlq
from service.processing.join import DROPPED, JoinPlan, Rows, distinct_keys, join_record, table_key
from service.processing.regroup import Regroup, from_repartition, rekey, to_repartition
from service.processing.routing import Router, route_items
from service.processing.sizes import fit_dlq, too_large
from service.processing.windows import WindowPlan, WindowResult, check_future, event_time
from service.records import TP, BatchResult, DlqEntry, InRecord, Keyed, Mark, OutRecord
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
    # Picks each output's topic (RILL_ROUTE_*, `Pipeline.route`); None: the sink topic.
    router: Router | None = None
    # Enrichment from a table: the record is joined first, before the steps.
    join: JoinPlan | None = None
    # De-duplication by an id (None: none); see `processing.dedupe`.
    dedupe: DedupePlan | None = None
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


# A decoded record and its table key (None without a join), or why it cannot be decoded.
Decoded: TypeAlias = tuple[Any, bytes | None] | RecordError
_NO_ROWS: Mapping[bytes, bytes] = {}


def decode_one(plan: Plan, record: InRecord) -> Decoded:
    """One record's size check and decode, and its table key when the plan joins a table."""
    size = len(record.value) if record.value is not None else 0
    if size > plan.max_record_bytes:
        return RecordError(
            "decode", f"record of {size} bytes exceeds max_record_bytes={plan.max_record_bytes}"
        )
    try:
        value = plan.decoder.decode(record.value)
        return value, table_key(plan.join, value) if plan.join is not None else None
    except RecordError as exc:
        return exc


# In `decode_batch`'s list in place of a repartition record (never read for it).
_STAGE_TWO: Decoded = RecordError("decode", "a repartition record is not decoded with the input")


def decode_batch(records: Sequence[InRecord], plan: Plan) -> tuple[list[Decoded], list[bytes]]:
    """Decode a batch ahead of `process_batch`, for its table lookup.

    Records of group_by's repartition topic are not decoded here: they were joined in
    stage one, and `process_batch` takes them into the window before reading this list.

    Returns:
        Each record decoded (as `process_batch` takes it), and the batch's distinct table
        keys: the one lookup the runtime makes for the batch.
    """
    skip = plan.regroup.topic if plan.regroup is not None else None
    decoded = [
        _STAGE_TWO if record.topic == skip else decode_one(plan, record) for record in records
    ]
    keys = distinct_keys(d[1] for d in decoded if not isinstance(d, RecordError))
    return decoded, keys


def process_batch(
    records: Sequence[InRecord],
    plan: Plan,
    now_ms: int,
    decoded: Sequence[Decoded] | None = None,
    rows: Rows = _NO_ROWS,
) -> BatchResult:
    """Decode, join, transform and encode a batch; failures become DLQ records with reasons.

    With `plan.regroup` (group_by) a batch may hold records of both topics: those of the
    input topic go through decode and the steps to the repartition topic (stage one,
    outputs like any other), those of the repartition topic into the window (stage two).

    Args:
        records: the batch, in consume order.
        plan: serdes, steps, topics and limits.
        now_ms: wall clock for the DLQ timestamp header.
        decoded: the records already decoded (`decode_batch`), else decoded here.
        rows: with a join, the table rows of the batch's keys (`decode_batch`'s keys
            looked up at the edge); a key absent has no row.

    Returns:
        Outputs, DLQ records, counts and the offsets to commit.
    """
    result = BatchResult(consumed=len(records))
    next_offsets = result.next_offsets

    def to_dlq(record: InRecord, error: RecordError, attempts: int = 1) -> None:
        _to_dlq(result, plan, record, error, now_ms, attempts)

    regroup, dedupe = plan.regroup, plan.dedupe
    for i, record in enumerate(records):
        next_offsets[(record.topic, record.partition)] = record.offset + 1
        if regroup is not None and _regrouped(result, record, regroup.topic, to_dlq):
            continue
        got = decoded[i] if decoded is not None else decode_one(plan, record)
        value = _joined(result, plan.join, got, rows)
        if isinstance(value, RecordError):
            to_dlq(record, value)
            continue
        if value is DROPPED:
            continue
        dedupe_id = _dedupe_id(plan, value)
        if isinstance(dedupe_id, RecordError):
            to_dlq(record, dedupe_id)
            continue
        items, error, attempts = _transform(plan, record, value)
        if items is None:
            to_dlq(record, error or RecordError("transform", "no result"), attempts)
            continue
        if not items:
            # A filtered record is judged too: its duplicates are duplicates.
            if dedupe is not None:
                result.marks.append(Mark(record, dedupe_id))
            result.filtered += 1
            continue
        _place(result, plan, record, items, attempts, dedupe_id, now_ms)
    return result


def _place(
    result: BatchResult,
    plan: Plan,
    record: InRecord,
    items: Items,
    attempts: int,
    dedupe_id: str,
    now_ms: int,
) -> None:
    """A transformed record's items into the batch: to the window (or, with group_by, the
    repartition topic), to the outputs, or to the DLQ."""
    window, dedupe = plan.window, plan.dedupe
    if window is not None:
        keyed, failed = to_window(window, record, items, now_ms, plan.regroup)
        topics = None
    else:
        keyed, failed, topics = _sort(plan, record, items)
    if failed:
        if len(failed) == len(items):
            _to_dlq(result, plan, record, _whole(failed, len(items)), now_ms, attempts)
            return
        add_to_dlq(result, item_entries(plan, record, failed, len(items), attempts, now_ms))
    if window is not None and plan.regroup is None:
        result.keyed.extend(keyed)
        if dedupe is not None:  # judged by the window step (against Redis)
            result.marks.append(Mark(record, dedupe_id, ()))
        return
    encoded = _encoded(plan, items, topics, keyed)
    if isinstance(encoded, RecordError):
        _to_dlq(result, plan, record, encoded, now_ms, attempts)
        return
    if dedupe is not None:
        # Judged by the window step (against Redis): a duplicate's keyed items and item
        # DLQ entries are dropped there, a stateless record's outputs delivered from there
        # unless it is one (and kept in the outbox).
        result.marks.append(Mark(record, dedupe_id, tuple(encoded)))
        return
    result.outputs.extend(encoded)
    result.sources.extend([(record.topic, record.partition)] * len(encoded))


def _to_dlq(
    result: BatchResult,
    plan: Plan,
    record: InRecord,
    error: RecordError,
    now_ms: int,
    attempts: int = 1,
) -> None:
    """The whole record to the DLQ (or the late topic), with why."""
    add_to_dlq(result, [dlq_entry(plan, record, error, now_ms, attempts)])


def _dedupe_id(plan: Plan, value: Any) -> str | RecordError:
    """A decoded record's dedupe id ('' without de-duplication), or why it has none."""
    if plan.dedupe is None:
        return ""
    try:
        return record_id(plan.dedupe, value)
    except RecordError as exc:
        return exc


def _encoded(
    plan: Plan, items: Items, topics: list[str | None] | None, keyed: Sequence[Keyed]
) -> list[OutRecord] | RecordError:
    """A record's outputs: its items for the sink or their routed topics, or (group_by)
    its keyed items for the repartition topic; or why they cannot be produced."""
    try:
        if plan.regroup is not None:
            encoded = to_repartition(plan.regroup, keyed)
        else:
            encoded = _encode(plan, items, topics)
    except RecordError as exc:
        return exc
    why = _oversize(encoded, plan)
    return RecordError("encode", why) if why is not None else encoded


def _sort(
    plan: Plan, record: InRecord, items: Items
) -> tuple[list[Keyed], list[Failed], list[str | None] | None]:
    """A stateless record's items: those that fail, and each one's topic (None: every
    item goes to the sink topic)."""
    failed = _item_errors(items)
    if plan.router is None:
        return [], failed, None
    topics, unrouted = route_items(plan.router, items, _failed_key)
    if unrouted:
        failed = sorted(failed + unrouted, key=lambda f: f[0])
    return [], failed, topics


def _encode(plan: Plan, items: Items, topics: list[str | None] | None) -> list[OutRecord]:
    """The outputs of a record's items that go on, each to the sink or its routed topic."""
    encode = plan.encoder.encode
    if topics is None:
        topic = plan.output_topic
        return [
            OutRecord(topic, encode_key(k), encode(v), None)
            for k, v in items
            if not isinstance(k, ItemError)
        ]
    return [
        OutRecord(t, encode_key(k), encode(v), None)
        for (k, v), t in zip(items, topics, strict=True)
        if t is not None
    ]


def _joined(result: BatchResult, join: JoinPlan | None, got: Decoded, rows: Rows) -> Any:
    """A decoded record joined with its row (without a join: as it is); the error that
    sends it to the DLQ, or `DROPPED`. A record without a row is counted by what becomes
    of it (`BatchResult.join_misses`)."""
    if isinstance(got, RecordError):
        return got
    value, key = got
    if join is None:
        return value
    if key is None or key not in rows:
        action = "null" if join.kind == "left" else join.missing
        result.join_misses[action] = result.join_misses.get(action, 0) + 1
    try:
        return join_record(join, value, key, rows)
    except RecordError as exc:
        return exc


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


def _failed_key(key: Any) -> bool:
    return isinstance(key, ItemError)


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
    clock) does not reach the window. Count windows read no event time.

    Returns:
        (items for the window, items that fail and why).
    """
    if regroup is not None:
        items = rekey(regroup, list(items))
    keyed: list[Keyed] = []
    failed: list[Failed] = []
    time_field, kafka_ts = window.time_field, record.timestamp_ms
    latest = now_ms + window.max_future_ms if window.max_future_ms > 0 else None
    timed = not window.spec.counted
    for index, (key, value) in enumerate(items):
        error: RecordError | None = None
        ts = 0
        if key is None or isinstance(key, ItemError):
            error = key.error if key is not None else RecordError("transform", NULL_KEY)
        elif timed:
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
    """Window results into a batch: encoded to the sink (or the topic their route names),
    or to the DLQ when the route or the serde refuses.

    The one path for window results, whether a batch, an idle tick or a reconcile made them.
    `tps[i]` is the input partition whose state made `windows[i]`.
    """
    dlq: list[DlqEntry] = []
    router = plan.router
    for res, tp in zip(windows, tps, strict=True):
        value = res.as_record()
        key = res.key.encode()
        try:
            topic = plan.output_topic if router is None else router.topic(value)
            out = OutRecord(topic, key, plan.encoder.encode(value))
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
                type(exc.__cause__ or exc).__name__,
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
