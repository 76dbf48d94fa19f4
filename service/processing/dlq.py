"""DLQ entries: a record that could not be processed, and why, as a plain value.

The entry travels through the batch (and the window outbox) as it is; its reason is
rendered to `rill.*` Kafka headers once, at the producer edge (`render`), and nothing
in the runtime parses headers back. The original key, value and headers are kept
byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.errors import RecordError
from service.records import TP, BatchResult, Headers, InRecord, OutRecord

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


@dataclass(frozen=True, slots=True)
class DlqEntry:
    """One record for the DLQ (or the late topic), with its reason.

    Attributes:
        topic: where it goes: the DLQ topic, or the late topic for late records.
        key / value / headers: the original record's, untouched.
        stage: where it failed (decode, transform, encode, late, produce).
        error_class: the class of the error (of its cause, where there is one).
        message: the reason.
        attempts: how many times the step ran.
        timestamp_ms: when it failed (wall clock).
        source_topic / source_partition / source_offset: the input record; partition
            and offset are -1 for a window result that could not be encoded.
        origin: the input partition whose batch or window state made the entry, where
            the source does not name it (a window result, a record Kafka refused): a
            revoke trims every entry of the partition, whatever stage made it.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    stage: str
    error_class: str
    message: str
    attempts: int = 1
    timestamp_ms: int = 0
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    origin: TP | None = None

    @classmethod
    def of(
        cls, record: InRecord, topic: str, error: RecordError, now_ms: int, attempts: int = 1
    ) -> DlqEntry:
        """The entry of an input record that failed with `error`.

        The error class named is that of the cause (e.g. the KeyError a step raised).
        """
        cause = error.__cause__ if error.__cause__ is not None else error
        return cls(
            topic,
            record.key,
            record.value,
            record.headers,
            error.stage,
            type(cause).__name__,
            str(error),
            attempts,
            now_ms,
            record.topic,
            record.partition,
            record.offset,
        )

    @property
    def source(self) -> TP:
        """The input partition it came from."""
        if self.origin is not None:
            return self.origin
        return self.source_topic, self.source_partition

    def reason(self) -> dict[str, str | int]:
        """The reason as log fields."""
        return {
            "stage": self.stage,
            "error_class": self.error_class,
            "error": self.message[:MAX_MESSAGE_CHARS],
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "attempts": self.attempts,
        }


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
