"""The contract of the Kafka seams (`runtime.ports.Consumer` / `Producer`), once.

`KafkaContract` holds the tests; a tier subclasses it and gives the `kafka` fixture:
the unit tier the in-memory twin (tests/support/memory_kafka.py), the integration tier
`GroupConsumer` / `BatchProducer` on the real broker. So the twin the runtime's unit
tests run on cannot drift from what the worker gets in production (as arroyo's
`tests/backends/mixins.py` is run by its local and its Kafka backend).

Each test is what the worker relies on: records as written, in offset order per
partition; a batch bound; offsets stored, committed with their metadata, and where a new
member starts; pause, resume and rewind; progress; flushed records and DLQ entries as a
reader sees them; a transaction's records, DLQ entries and offsets together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import pytest

from service.kafka.progress import Progress
from service.processing.dlq import ERROR_STAGE, SOURCE_OFFSET
from service.records import TP, DlqEntry, InRecord, OutRecord
from service.runtime.edges import Consumer, Producer

PartitionsCallback = Callable[[list[TP]], None]


class KafkaBackend(Protocol):
    """What the contract needs of a tier: topics, a way to write input, the two clients."""

    def topic(self, partitions: int) -> str:
        """A new topic with this many partitions."""
        ...

    def append(self, topic: str, partition: int, records: list[OutRecord]) -> None:
        """Write records to one partition (as another application would)."""
        ...

    def consumer(
        self, topic: str, group: str, on_assign: PartitionsCallback, on_revoke: PartitionsCallback
    ) -> Consumer:
        """An unstarted group consumer of `topic`."""
        ...

    def producer(self, group: str, exactly_once: bool) -> Producer:
        """A started producer (transactional with `exactly_once`)."""
        ...

    def read(self, topic: str, expected: int) -> list[OutRecord]:
        """What a read_committed reader finds in `topic` (waiting for `expected` records)."""
        ...

    def group(self) -> str:
        """A new consumer group id."""
        ...


def records(topic: str, n: int, tag: str = "v") -> list[OutRecord]:
    """`n` records with keys, values and headers (the first with a null value and a null
    header, the second with no headers)."""
    out = [
        OutRecord(topic, f"k{i}".encode(), f"{tag}{i}".encode(), [("h", f"{i}".encode())])
        for i in range(n)
    ]
    if n > 0:
        out[0] = OutRecord(topic, b"k0", None, [("h", None)])
    if n > 1:
        out[1] = OutRecord(topic, b"k1", f"{tag}1".encode(), None)
    return out


def poll(
    consumer: Consumer, want: int, timeout_s: float = 30.0, batch: int = 100
) -> list[InRecord]:
    """Consume until `want` records came (a real group needs a moment to join)."""
    got: list[InRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        batch_got = consumer.consume(min(batch, want - len(got)), 0.2)
        got.extend(batch_got)
        if not batch_got:
            time.sleep(0.01)  # the twin answers at once: do not spin
    return got


def quiet(consumer: Consumer, for_s: float) -> list[InRecord]:
    """Everything a consumer hands out within `for_s` (expected: nothing)."""
    got: list[InRecord] = []
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        got.extend(consumer.consume(100, 0.1))
        time.sleep(0.01)
    return got


def _as_written(record: InRecord) -> OutRecord:
    return OutRecord(record.topic, record.key, record.value, record.headers)


class Member:
    """A consumer of a test with the partitions its callbacks were told about."""

    def __init__(self, kafka: KafkaBackend, topic: str, group: str) -> None:
        self.assigned: list[TP] = []
        self.revoked: list[TP] = []
        self.consumer = kafka.consumer(topic, group, self.assigned.extend, self.revoked.extend)

    def __enter__(self) -> Consumer:
        self.consumer.start()
        return self.consumer

    def __exit__(self, *_exc: object) -> None:
        self.consumer.close()


ENTRY = DlqEntry(
    topic="",
    key=b"bad",
    value=b"\xff not json",
    headers=[("trace", b"t1")],
    stage="decode",
    error_class="DecodeError",
    message="not JSON",
    source_topic="in",
    source_partition=0,
    source_offset=7,
)


class KafkaContract:
    """The Consumer / Producer contract; a tier's subclass provides the `kafka` fixture."""

    @pytest.fixture
    def kafka(self) -> KafkaBackend:
        raise NotImplementedError

    def test_records_come_back_as_written_in_offset_order(self, kafka: KafkaBackend) -> None:
        """Key, value and headers as written (no headers: None, as Kafka has no empty list);
        offsets 0.. per partition; both partitions assigned."""
        topic = kafka.topic(2)
        written = {0: records(topic, 3, "a"), 1: records(topic, 2, "b")}
        for partition, batch in written.items():
            kafka.append(topic, partition, batch)
        kafka.append(topic, 0, [OutRecord(topic, b"e", b"empty", [])])
        written[0].append(OutRecord(topic, b"e", b"empty", None))
        member = Member(kafka, topic, kafka.group())
        with member as consumer:
            got = poll(consumer, 6)
        assert sorted(member.assigned) == [(topic, 0), (topic, 1)]
        for partition, batch in written.items():
            mine = [r for r in got if r.partition == partition]
            assert [r.offset for r in mine] == list(range(len(batch)))
            assert [_as_written(r) for r in mine] == batch

    def test_a_batch_holds_at_most_max_records(self, kafka: KafkaBackend) -> None:
        """consume(n) never hands out more than n records."""
        topic = kafka.topic(1)
        kafka.append(topic, 0, records(topic, 10))
        with Member(kafka, topic, kafka.group()) as consumer:
            first = poll(consumer, 1, batch=3)
            assert first
            rest = poll(consumer, 10 - len(first), batch=3)
        assert len(first) <= 3
        assert [r.offset for r in first + rest] == list(range(10))

    def test_stored_offsets_are_committed_with_their_metadata(self, kafka: KafkaBackend) -> None:
        """Offsets stored then committed on close read back with their metadata; -1 where none."""
        topic, group = kafka.topic(2), kafka.group()
        kafka.append(topic, 0, records(topic, 4))
        with Member(kafka, topic, group) as consumer:
            assert len(poll(consumer, 4)) == 4
            consumer.store_offsets({(topic, 0): 4}, {(topic, 0): "rill-outbox-seq=3"})
        with Member(kafka, topic, group) as consumer:
            committed = consumer.committed([(topic, 0), (topic, 1)])
        assert committed == {(topic, 0): (4, "rill-outbox-seq=3"), (topic, 1): (-1, "")}

    def test_a_new_member_starts_at_the_committed_offset(self, kafka: KafkaBackend) -> None:
        """After a close, the group's next member fetches from the committed offset on."""
        topic, group = kafka.topic(1), kafka.group()
        kafka.append(topic, 0, records(topic, 5))
        with Member(kafka, topic, group) as consumer:
            assert len(poll(consumer, 5)) == 5
            consumer.store_offsets({(topic, 0): 3})
        with Member(kafka, topic, group) as consumer:
            again = poll(consumer, 2)
        assert [r.offset for r in again] == [3, 4]

    def test_close_revokes_every_partition(self, kafka: KafkaBackend) -> None:
        """Leaving the group tells the revoke callback, so the worker can flush and commit."""
        topic = kafka.topic(2)
        kafka.append(topic, 0, records(topic, 1))
        member = Member(kafka, topic, kafka.group())
        with member as consumer:
            poll(consumer, 1)
        assert sorted(member.revoked) == [(topic, 0), (topic, 1)]

    def test_paused_partitions_hand_out_nothing_until_resumed(self, kafka: KafkaBackend) -> None:
        """A paused partition stays assigned but fetches nothing; resumed, it goes on."""
        topic = kafka.topic(2)
        kafka.append(topic, 0, records(topic, 1))
        kafka.append(topic, 1, records(topic, 1))
        with Member(kafka, topic, kafka.group()) as consumer:
            assert len(poll(consumer, 2)) == 2
            consumer.pause([(topic, 1)])
            kafka.append(topic, 0, records(topic, 1, "later"))
            kafka.append(topic, 1, records(topic, 1, "later"))
            while_paused = poll(consumer, 1) + quiet(consumer, 1.0)
            consumer.resume([(topic, 1)])
            resumed = poll(consumer, 1)
        assert [(r.partition, r.offset) for r in while_paused] == [(0, 1)]
        assert [(r.partition, r.offset) for r in resumed] == [(1, 1)]

    def test_rewind_hands_out_the_records_again(self, kafka: KafkaBackend) -> None:
        """rewind(records) seeks each partition back to the first of them."""
        topic = kafka.topic(1)
        kafka.append(topic, 0, records(topic, 4))
        with Member(kafka, topic, kafka.group()) as consumer:
            got = poll(consumer, 4)
            consumer.rewind(got[1:])
            again = poll(consumer, 3)
        assert [r.offset for r in again] == [1, 2, 3]
        assert [_as_written(r) for r in again] == [_as_written(r) for r in got[1:]]

    def test_progress_tells_position_and_end(self, kafka: KafkaBackend) -> None:
        """An assigned partition read to its end has position = end and no lag; one not
        assigned is there, unknown."""
        topic = kafka.topic(1)
        kafka.append(topic, 0, records(topic, 4))
        with Member(kafka, topic, kafka.group()) as consumer:
            poll(consumer, 4)
            progress = consumer.progress([(topic, 0)])[(topic, 0)]
            elsewhere = consumer.progress([(topic, 1), ("not-assigned", 0)])
        assert (progress.position, progress.end, progress.lag) == (4, 4, 0)
        unknown = Progress(None, None)
        assert elsewhere == {(topic, 1): unknown, ("not-assigned", 0): unknown}

    def test_flushed_records_reach_the_topic(self, kafka: KafkaBackend) -> None:
        """send + flush: every record is in the topic as sent, and flush reports no failure."""
        topic = kafka.topic(1)
        sent = records(topic, 3)
        producer = kafka.producer(kafka.group(), exactly_once=False)
        try:
            producer.send(sent)
            assert producer.flush(30) == []
        finally:
            producer.close()
        assert kafka.read(topic, 3) == sent

    def test_a_record_naming_its_partition_lands_there(self, kafka: KafkaBackend) -> None:
        """send + flush: a record that names its partition (group_by's repartition records)
        is in that partition, whatever its key, in the order sent."""
        topic, group = kafka.topic(3), kafka.group()
        producer = kafka.producer(group, exactly_once=False)
        try:
            producer.send([replace(r, partition=2) for r in records(topic, 3)])
            assert producer.flush(30) == []
        finally:
            producer.close()
        with Member(kafka, topic, group) as consumer:
            got = poll(consumer, 3)
        assert [(r.partition, r.key) for r in got] == [(2, b"k0"), (2, b"k1"), (2, b"k2")]

    def test_dlq_entries_keep_their_bytes_and_carry_their_reason(self, kafka: KafkaBackend) -> None:
        """send_dlq: the original key, value and headers, plus the rill.* reason headers."""
        topic = kafka.topic(1)
        producer = kafka.producer(kafka.group(), exactly_once=False)
        try:
            producer.send_dlq([_to(ENTRY, topic)])
            assert producer.flush(30) == []
        finally:
            producer.close()
        (found,) = kafka.read(topic, 1)
        headers = dict(found.headers or [])
        assert (found.key, found.value) == (ENTRY.key, ENTRY.value)
        assert headers["trace"] == b"t1"
        assert (headers[ERROR_STAGE], headers[SOURCE_OFFSET]) == (b"decode", b"7")

    def test_a_transaction_commits_records_dlq_and_offsets_together(
        self, kafka: KafkaBackend
    ) -> None:
        """One transaction: outputs, DLQ entries and the input offsets with their metadata."""
        source, out, group = kafka.topic(1), kafka.topic(1), kafka.group()
        kafka.append(source, 0, records(source, 3))
        producer = kafka.producer(group, exactly_once=True)
        try:
            producer.init_transactions(30)
            with Member(kafka, source, group) as consumer:
                assert len(poll(consumer, 3)) == 3
                outputs = records(out, 2, "out")
                offsets = {(source, 0): (3, "rill-outbox-seq=1")}
                producer.transaction(
                    outputs, [_to(ENTRY, out)], offsets, consumer.group_metadata(), 30
                )
                committed = consumer.committed([(source, 0)])
        finally:
            producer.close()
        assert committed == {(source, 0): (3, "rill-outbox-seq=1")}
        found = kafka.read(out, 3)
        assert found[:2] == outputs
        assert dict(found[2].headers or [])[ERROR_STAGE] == b"decode"


def _to(entry: DlqEntry, topic: str) -> DlqEntry:
    """The entry, bound for `topic`."""
    return replace(entry, topic=topic)
