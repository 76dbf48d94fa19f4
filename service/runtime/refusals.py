"""Records Kafka refused for good, turned into DLQ entries: nothing dropped, nothing stuck.

A refused sink output becomes a `produce`-stage DLQ entry of the input partition it came
from. A refused DLQ copy is sent smaller, keeping its reason: without its value, then
without its key and original headers (a reference: `rill.source.*` and the reason). When
the DLQ topic refuses even that, the worker stops (`DlqRefusedError`) naming the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import structlog

from service.errors import DlqRefusedError
from service.kafka.producer import Failure
from service.processing.batch import Plan
from service.processing.dlq import render
from service.processing.sizes import TRUNCATED
from service.records import TP, BatchResult, DlqEntry, OutRecord
from service.runtime.batches import now_ms

log = structlog.get_logger("rill.refusals")


def identity(record: OutRecord) -> tuple[str, bytes | None, bytes | None]:
    """What tells a refused record in a batch (records hold header lists: not hashable)."""
    return record.topic, record.key, record.value


def swap_refused(
    batch: BatchResult,
    refused: list[Failure],
    plan: Plan,
    source_topic: str,
    sent: Sequence[DlqEntry] = (),
) -> list[DlqEntry]:
    """The DLQ entries that stand for records Kafka refused for good, logged.

    A refused sink output becomes a `produce`-stage entry of the input partition it came
    from; a refused DLQ copy (one of the batch's entries, or of `sent`) a smaller copy.
    """
    if not refused:
        return []
    version, now = plan.version, now_ms()
    origins = {identity(o): s for o, s in zip(batch.outputs, batch.sources, strict=True)}
    originals = {identity(render(e, version)): e for e in [*batch.dlq, *sent]}
    entries = [
        refused_entry(
            f,
            plan.dlq_topic,
            source_topic,
            now,
            origin=origins.get(identity(f.record)),
            original=originals.get(identity(f.record)),
        )
        for f in refused
    ]
    log.warning(
        "records refused by Kafka moved to the DLQ",
        count=len(entries),
        reason=str(refused[0].error),
    )
    return entries


def refused_entry(
    failure: Failure,
    dlq_topic: str,
    source_topic: str,
    now: int,
    origin: TP | None = None,
    original: DlqEntry | None = None,
) -> DlqEntry:
    """A record Kafka refused for good, as a DLQ entry.

    A refused sink output keeps its bytes and names the input partition it came from
    (`origin`). A refused DLQ copy (`original`, the entry it was rendered from) is sent
    smaller, with its own reason kept: first without its value, then without its key and
    original headers too — a reference (`rill.source.*`: topic, partition, offset, and
    the reason). When even the reference was refused, `DlqRefusedError`.
    """
    record, error = failure.record, failure.error
    code = getattr(error, "code", type(error).__name__)
    message = getattr(error, "message", str(error))
    if record.topic != dlq_topic:
        return DlqEntry(
            dlq_topic,
            record.key,
            record.value,
            record.headers,
            "produce",
            code,
            message,
            1,
            now,
            source_topic,
            origin=origin,
        )
    if original is None:
        original = DlqEntry(
            dlq_topic, record.key, record.value, record.headers, "produce", code, message, 1, now
        )
    return smaller_copy(original, f"{code}: {message}")


def smaller_copy(entry: DlqEntry, why: str) -> DlqEntry:
    """The next smaller copy of a DLQ entry the DLQ topic refused (see `refused_entry`)."""
    mark = [h for h in entry.headers or [] if h[0] == TRUNCATED]
    if entry.value is not None:
        kept = [h for h in entry.headers or [] if h[0] != TRUNCATED]
        size = str(len(entry.value)).encode()
        return replace(entry, value=None, headers=[*kept, (TRUNCATED, size)])
    if entry.key is not None or len(entry.headers or []) > len(mark):
        return replace(entry, key=None, headers=mark or [(TRUNCATED, b"0")])
    where = f"{entry.source_topic}[{entry.source_partition}]@{entry.source_offset}"
    log.error(
        "the DLQ topic refused even a reference to a record: stopping",
        dlq_topic=entry.topic,
        source=where,
        refusal=why,
        **entry.reason(),
    )
    raise DlqRefusedError(
        f"the DLQ topic {entry.topic} refused even a reference (no value, key or original "
        f"headers) to the record {where} ({entry.stage}: {entry.message[:200]}): {why}. "
        f"Raise the DLQ topic's max.message.bytes (and the broker's message.max.bytes), "
        "or check the producer's access to the topic, then restart: the record is redone"
    )
