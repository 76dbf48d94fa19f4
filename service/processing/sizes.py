"""Record sizes against the producer's `message.max.bytes`, as pure functions.

Kafka refuses a record larger than the producer's `message.max.bytes`
(`RILL_PRODUCER_MESSAGE_MAX_BYTES`); librdkafka raises it from `produce()`, and inside
a transaction it aborts the whole batch. So nothing is handed to the producer that is
known not to fit:

- an output over the limit is a DLQ entry (stage `encode`), like one over
  `max_record_bytes`;
- a DLQ entry whose record (key, value, original headers and the `rill.*` reason headers)
  would not fit keeps a *reference* instead of the bytes: its value is dropped and the
  `rill.value.truncated` header holds the original value's size; the `rill.source.*`
  headers say where the original record is (topic, partition, offset) for as long as
  the input topic retains it. If it still does not fit, the original headers go too,
  then the key. A truncated copy of a binary value could neither be decoded nor
  replayed, so it is never kept.
"""

from __future__ import annotations

from dataclasses import replace

from service.processing.dlq import render
from service.records import DlqEntry, OutRecord

TRUNCATED = "rill.value.truncated"
# librdkafka counts a record as key + value + headers + at most this much framing
# (RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD); a header adds two varints of at most 5 bytes.
RECORD_OVERHEAD = 64
HEADER_OVERHEAD = 10


def record_size(record: OutRecord) -> int:
    """An upper bound of the bytes librdkafka counts against `message.max.bytes`."""
    size = RECORD_OVERHEAD + len(record.key or b"") + len(record.value or b"")
    for name, value in record.headers or []:
        size += HEADER_OVERHEAD + len(name.encode()) + len(value or b"")
    return size


def fit_dlq(entry: DlqEntry, version: str, limit: int) -> DlqEntry:
    """`entry`, or a reference to its source record when its DLQ record exceeds `limit`.

    Args:
        entry: the DLQ entry as built.
        version: rill's version (its reason headers count too).
        limit: the producer's `message.max.bytes`.

    Returns:
        The entry unchanged when it fits; else the same entry without its value (and,
        while still too large, without its original headers, then its key), with a
        `rill.value.truncated` header holding the original value's size.
    """
    if record_size(render(entry, version)) <= limit:
        return entry
    mark = (TRUNCATED, str(len(entry.value or b"")).encode())
    kept = [h for h in entry.headers or [] if h[0] != TRUNCATED]
    for fitted in (
        replace(entry, value=None, headers=[*kept, mark]),
        replace(entry, value=None, headers=[mark]),
        replace(entry, key=None, value=None, headers=[mark]),
    ):
        if record_size(render(fitted, version)) <= limit:
            return fitted
    return fitted


def too_large(record: OutRecord, limit: int) -> str | None:
    """Why an output does not fit the producer's limit, or None when it does."""
    size = record_size(record)
    if size <= limit:
        return None
    return (
        f"output of {size} bytes (key, value and headers) exceeds the producer's "
        f"message.max.bytes={limit} (RILL_PRODUCER_MESSAGE_MAX_BYTES)"
    )
