"""DLQ entries: the original key, value and headers, plus reason headers."""

from __future__ import annotations

from collections.abc import Iterable

from service.records import BatchResult, Headers, InRecord, OutRecord

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
MAX_MESSAGE_CHARS = 1000


def dlq_record(
    record: InRecord,
    dlq_topic: str,
    stage: str,
    error_class: str,
    message: str,
    attempts: int,
    now_ms: int,
    version: str,
) -> OutRecord:
    """A DLQ record for `record`: its bytes untouched, the reason in `rill.*` headers.

    Reason headers a replayed record already carries are replaced, so a record that
    fails twice shows its latest reason.
    """
    reason: Headers = [
        (ERROR_CLASS, error_class.encode()),
        (ERROR_MESSAGE, message[:MAX_MESSAGE_CHARS].encode("utf-8", "replace")),
        (ERROR_STAGE, stage.encode()),
        (ERROR_ATTEMPTS, str(attempts).encode()),
        (ERROR_TIMESTAMP, str(now_ms).encode()),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
        (SERVICE_VERSION, version.encode()),
    ]
    names = {name for name, _ in reason}
    kept = [(k, v) for k, v in (record.headers or []) if k not in names]
    return OutRecord(dlq_topic, record.key, record.value, kept + reason)


def reason_of(headers: Headers | None) -> dict[str, str]:
    """The `rill.*` headers of a DLQ record as text (for the CLI and the tests)."""
    return {
        k: v.decode("utf-8", "replace")
        for k, v in (headers or [])
        if k.startswith(HEADER_PREFIX) and v is not None
    }


def add_to_dlq(result: BatchResult, entries: Iterable[OutRecord]) -> None:
    """Add DLQ records to a batch and count them by (stage, error class)."""
    for entry in entries:
        result.dlq.append(entry)
        reason = reason_of(entry.headers)
        key = (reason.get(ERROR_STAGE, "unknown"), reason.get(ERROR_CLASS, "unknown"))
        result.dlq_reasons[key] = result.dlq_reasons.get(key, 0) + 1
