"""Plain values that flow between the edges and the pure middle.

Below every layer: this module imports nothing of rill but `errors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from service.errors import RecordError

Headers: TypeAlias = list[tuple[str, bytes | None]]
# (topic, partition) of an input partition.
TP: TypeAlias = tuple[str, int]
# A DLQ reason is cut to this many characters (headers and log lines).
MAX_MESSAGE_CHARS = 1000


@dataclass(slots=True)
class InRecord:
    """One consumed Kafka record, copied out of the client's message object.

    Not frozen: a frozen dataclass costs half a microsecond more per record to build.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    timestamp_ms: int

    def topic_partition(self) -> tuple[str, int]:
        """(topic, partition)."""
        return self.topic, self.partition


@dataclass(slots=True, frozen=True)
class OutRecord:
    """One record to produce: to the sink, the DLQ, a late topic or the repartition topic.

    `partition` is -1 where the producer's partitioner picks it; the repartition topic's
    records name theirs (`processing.partitioning`).
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    partition: int = -1


@dataclass(frozen=True, slots=True)
class DlqEntry:
    """One record for the DLQ (or the late topic), with its reason.

    Attributes:
        topic: where it goes: the DLQ topic, or the late topic for late records.
        key / value / headers: the original record's, untouched.
        stage: where it failed (decode, transform, encode, late, route, produce).
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


@dataclass(frozen=True, slots=True)
class Keyed:
    """A transformed record on its way into a window.

    `ts` is its event time where the batch already read and checked it (the aggregator
    reads it from the value otherwise). `source` is, for a record group_by re-keyed, the
    input partition and the position there it came from (`regroup.source_position`): a
    record re-keyed twice (a batch redone after a crash) is applied once.
    """

    record: InRecord
    key: str
    value: Any
    ts: int | None = None
    source: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    """An input record that went through the steps (kept, keyed or filtered), with its id.

    `outputs` are its encoded outputs in a stateless pipeline (they are delivered only
    when the record is not a duplicate; a windowed pipeline's go on as `Keyed` items).
    """

    record: InRecord
    id: str
    outputs: tuple[OutRecord, ...] = ()

    @property
    def tp(self) -> TP:
        """Its input partition."""
        return self.record.topic, self.record.partition


@dataclass(slots=True)
class BatchResult:
    """What one micro-batch produced, before anything touched Kafka.

    Attributes:
        outputs: records for the sink.
        sources: `sources[i]` is the input partition `outputs[i]` came from (its record, or
            its window state), so a partition revoked mid-delivery can be trimmed away.
        dlq: entries for the DLQ (or late) topic, each with its reason.
        filtered: how many input records a filter step dropped.
        next_offsets: per (topic, partition), the offset to commit (last + 1).
        dlq_reasons: per (stage, error class), how many DLQ entries.
        keyed: the records that go on to the window step.
        seqs: per input partition, the window outbox sequence this batch's delivery
            completes (acknowledged once delivered).
        sent: the outputs were queued to the producer already (a retried delivery only
            waits again).
        join_misses: records without a table row, by what became of them (`null`: a
            left join went on, `drop`, `dlq`).
        marks: a de-duplicating pipeline's records that went through the steps, with
            their ids (the window step drops the duplicates among them).
    """

    outputs: list[OutRecord] = field(default_factory=list)
    sources: list[TP] = field(default_factory=list)
    dlq: list[DlqEntry] = field(default_factory=list)
    filtered: int = 0
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    dlq_reasons: dict[tuple[str, str], int] = field(default_factory=dict)
    consumed: int = 0
    keyed: list[Keyed] = field(default_factory=list)
    seqs: dict[tuple[str, int], int] = field(default_factory=dict)
    sent: bool = False
    join_misses: dict[str, int] = field(default_factory=dict)
    marks: list[Mark] = field(default_factory=list)

    def rekeyed(self) -> int:
        """How many outputs go to group_by's repartition topic (stage one), not the sink:
        those that name their partition."""
        return sum(1 for o in self.outputs if o.partition >= 0)

    def partitions(self) -> set[TP]:
        """The input partitions this batch delivers for."""
        return self.next_offsets.keys() | self.seqs.keys()

    def trim(self, gone: set[TP]) -> None:
        """Drop everything of partitions this worker no longer owns as it did at batch start.

        Their new owner redoes them: the records from the committed offset, the window
        results from the outbox.
        """
        kept = [(o, s) for o, s in zip(self.outputs, self.sources, strict=True) if s not in gone]
        self.outputs = [o for o, _ in kept]
        self.sources = [s for _, s in kept]
        self.dlq = [e for e in self.dlq if e.source not in gone]
        self.dlq_reasons = {}
        for e in self.dlq:
            key = (e.stage, e.error_class)
            self.dlq_reasons[key] = self.dlq_reasons.get(key, 0) + 1
        for tp in gone:
            self.next_offsets.pop(tp, None)
            self.seqs.pop(tp, None)

    def extra(self) -> dict[str, Any]:
        """Summary fields for a log line."""
        return {
            "consumed": self.consumed,
            "outputs": len(self.outputs),
            "dlq": len(self.dlq),
            "filtered": self.filtered,
        }


def first_offsets(batches: Iterable[Sequence[InRecord] | None]) -> dict[TP, int]:
    """The lowest offset of each partition over some batches of records."""
    first: dict[TP, int] = {}
    for records in batches:
        for r in records or ():
            tp = (r.topic, r.partition)
            if tp not in first or r.offset < first[tp]:
                first[tp] = r.offset
    return first
