"""One micro-batch through decode -> steps -> encode, as a pure function.

Every input record ends in exactly one place: outputs, the DLQ, or the filtered count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from service.errors import RecordError
from service.pipeline import Step
from service.processing.dlq import DlqEntry, add_to_dlq
from service.processing.windows import Keyed, WindowPlan, WindowResult
from service.records import BatchResult, InRecord, OutRecord
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
    # The schema registry edge (fills the decoder's schema cache before each batch);
    # held here so the worker finds it, never called by the pure functions.
    resolver: Any = None


def encode_key(key: Any) -> bytes | None:
    """A key as bytes: bytes as they are, anything else as UTF-8 text."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    return str(key).encode()


def run_steps(steps: Sequence[Step], key: Any, value: Any) -> list[tuple[Any, Any]]:
    """Apply the steps to one record; returns its (key, value) outputs, maybe none."""
    # One record stays one record until a flat_map: no lists on the common path.
    for i, step in enumerate(steps):
        kind = step.kind
        if kind == "map":
            value = step.fn(value)
        elif kind == "filter":
            if not step.fn(value):
                return []
        elif kind == "key_by":
            key = _new_key(step, value)
        else:
            return _run_many(steps[i + 1 :], [(key, out) for out in step.fn(value)])
    return [(key, value)]


def _new_key(step: Step, value: Any) -> Any:
    key = step.fn(value)
    if key is None:
        raise RecordError("transform", f"{step.name} gave a null key")
    return key


def _run_many(steps: Sequence[Step], items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """The steps after a flat_map, on each of its outputs."""
    return [out for key, value in items for out in run_steps(steps, key, value)]


def _transform(
    plan: Plan, record: InRecord, value: Any
) -> tuple[list[tuple[Any, Any]] | None, RecordError | None, int]:
    """Run the steps with retries; returns (outputs, error, attempts)."""
    attempts = 0
    while True:
        attempts += 1
        try:
            return run_steps(plan.steps, record.key, value), None, attempts
        except RecordError as exc:  # about the record itself: retrying cannot help
            return None, exc, attempts
        except Exception as exc:  # noqa: BLE001 - user code may raise anything; it becomes a DLQ entry
            if attempts > plan.transform_retries:
                error = RecordError("transform", f"{type(exc).__name__}: {exc}")
                error.__cause__ = exc
                return None, error, attempts


def process_batch(records: Sequence[InRecord], plan: Plan, now_ms: int) -> BatchResult:
    """Decode, transform and encode a batch; failures become DLQ records with reasons.

    Args:
        records: the batch, in consume order.
        plan: serdes, steps, topics and limits.
        now_ms: wall clock for the DLQ timestamp header.

    Returns:
        Outputs, DLQ records, counts and the offsets to commit.
    """
    result = BatchResult(consumed=len(records))
    outputs, next_offsets = result.outputs, result.next_offsets

    def to_dlq(record: InRecord, error: RecordError, attempts: int = 1) -> None:
        add_to_dlq(result, [dlq_entry(plan, record, error, now_ms, attempts)])

    for record in records:
        next_offsets[(record.topic, record.partition)] = record.offset + 1
        size = len(record.value) if record.value is not None else 0
        if size > plan.max_record_bytes:
            to_dlq(
                record,
                RecordError(
                    "decode",
                    f"record of {size} bytes exceeds max_record_bytes={plan.max_record_bytes}",
                ),
            )
            continue
        try:
            value = plan.decoder.decode(record.value)
        except RecordError as exc:
            to_dlq(record, exc)
            continue
        items, error, attempts = _transform(plan, record, value)
        if error is not None or items is None:
            to_dlq(record, error or RecordError("transform", "no result"), attempts)
            continue
        if not items:
            result.filtered += 1
            continue
        if plan.window is not None:
            window_key = _window_key(items)
            if window_key is None:
                to_dlq(
                    record,
                    RecordError(
                        "transform",
                        "a windowed aggregation needs a key: set key_by, or produce keyed records",
                    ),
                    attempts,
                )
                continue
            result.keyed.extend(Keyed(record, window_key, v) for _, v in items)
            continue
        try:
            encoded = [
                OutRecord(plan.output_topic, encode_key(k), plan.encoder.encode(v), None)
                for k, v in items
            ]
        except RecordError as exc:
            to_dlq(record, exc, attempts)
            continue
        too_big = next(
            (o for o in encoded if o.value and len(o.value) > plan.max_record_bytes), None
        )
        if too_big is not None:
            to_dlq(
                record,
                RecordError(
                    "encode",
                    f"output of {len(too_big.value or b'')} bytes "
                    f"exceeds max_record_bytes={plan.max_record_bytes}",
                ),
                attempts,
            )
            continue
        outputs.extend(encoded)
    return result


def _window_key(items: list[tuple[Any, Any]]) -> str | None:
    key = items[0][0]
    if key is None:
        return None
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    return str(key)


def emit(result: BatchResult, windows: Sequence[WindowResult], plan: Plan, now_ms: int) -> None:
    """Window results into a batch: encoded to the sink, or to the DLQ when the serde refuses.

    The one path for window results, whether a batch, an idle tick or a reconcile made them.
    """
    dlq: list[DlqEntry] = []
    for res in windows:
        value = res.as_record()
        key = res.key.encode()
        try:
            result.outputs.append(OutRecord(plan.output_topic, key, plan.encoder.encode(value)))
        except RecordError as exc:
            dlq.append(
                DlqEntry(
                    plan.dlq_topic,
                    key,
                    orjson.dumps(value, default=str),
                    None,
                    exc.stage,
                    type(exc).__name__,
                    str(exc),
                    timestamp_ms=now_ms,
                    source_topic=plan.output_topic,
                )
            )
    add_to_dlq(result, dlq)


def dlq_entry(
    plan: Plan, record: InRecord, error: RecordError, now_ms: int, attempts: int = 1
) -> DlqEntry:
    """The DLQ entry of one input record (late ones go to the late topic when set)."""
    topic = plan.late_topic if error.stage == "late" and plan.late_topic else plan.dlq_topic
    return DlqEntry.of(record, topic, error, now_ms, attempts)
