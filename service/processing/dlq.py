"""DLQ entries at the edge: their `rill.*` headers, and counting them into a batch.

The entry (`records.DlqEntry`, a plain value) travels through the batch (and the window
outbox) as it is; its reason is rendered to `rill.*` Kafka headers once, at the producer
edge (`render`), and nothing in the runtime parses headers back. The original key, value
and headers are kept byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable

from service.records import MAX_MESSAGE_CHARS, BatchResult, DlqEntry, Headers, OutRecord

HEADER_PREFIX = "rill."
ERROR_CLASS = "rill.error.class"
ERROR_MESSAGE = "rill.error.message"
ERROR_STAGE = "rill.error.stage"
ERROR_ATTEMPTS = "rill.error.attempts"
ERROR_TIMESTAMP = "rill.error.timestamp"
SOURCE_TOPIC = "rill.source.topic"
SOURCE_PARTITION = "rill.source.partition"
SOURCE_OFFSET = "rill.source.offset"
SERVICE_VERSION = "rill.version"


def render(entry: DlqEntry, version: str) -> OutRecord:
    """The Kafka record of a DLQ entry: its bytes untouched, the reason in `rill.*` headers.

    Called once, at the producer edge. Reason headers a replayed record already carries
    are replaced, so a record that fails twice shows its latest reason.
    """
    reason: Headers = [
        (ERROR_CLASS, entry.error_class.encode()),
        (ERROR_MESSAGE, entry.message[:MAX_MESSAGE_CHARS].encode("utf-8", "replace")),
        (ERROR_STAGE, entry.stage.encode()),
        (ERROR_ATTEMPTS, str(entry.attempts).encode()),
        (ERROR_TIMESTAMP, str(entry.timestamp_ms).encode()),
        (SOURCE_TOPIC, entry.source_topic.encode()),
        (SOURCE_PARTITION, str(entry.source_partition).encode()),
        (SOURCE_OFFSET, str(entry.source_offset).encode()),
        (SERVICE_VERSION, version.encode()),
    ]
    names = {name for name, _ in reason}
    kept = [(k, v) for k, v in (entry.headers or []) if k not in names]
    return OutRecord(entry.topic, entry.key, entry.value, kept + reason)


def reason_of(headers: Headers | None) -> dict[str, str]:
    """The `rill.*` headers of a DLQ record read from Kafka, as text (CLI and tests)."""
    return {
        k: v.decode("utf-8", "replace")
        for k, v in (headers or [])
        if k.startswith(HEADER_PREFIX) and v is not None
    }


def add_to_dlq(result: BatchResult, entries: Iterable[DlqEntry]) -> None:
    """Add DLQ entries to a batch and count them by (stage, error class)."""
    reasons = result.dlq_reasons
    for entry in entries:
        result.dlq.append(entry)
        key = (entry.stage, entry.error_class)
        reasons[key] = reasons.get(key, 0) + 1
