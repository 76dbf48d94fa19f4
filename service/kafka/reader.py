"""Read a topic outside any group (for `rill tail`, the demo and the tests)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from service.errors import DeliveryError, RillError
from service.kafka.errors import from_exception
from service.kafka.messages import to_in_record
from service.records import InRecord
from service.retry import Backoff


def read_topic(
    conf: dict[str, Any],
    topic: str,
    *,
    from_beginning: bool = True,
    idle_timeout_s: float = 5.0,
    max_records: int | None = None,
    follow: bool = False,
    since_ms: int | None = None,
) -> Iterator[InRecord]:
    """Yield records of every partition of `topic`, committing nothing.

    Args:
        conf: librdkafka connection settings.
        topic: the topic.
        from_beginning: start at the earliest offsets, else at the end.
        idle_timeout_s: stop after this long without a record (unless `follow`).
        max_records: stop after this many.
        follow: keep waiting for new records until interrupted.
        since_ms: start at the first record with a Kafka timestamp at or after this
            (epoch ms); overrides `from_beginning`.
    """
    consumer = Consumer(
        {
            **conf,
            "group.id": f"rill-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        found = meta.topics.get(topic)
        if found is None or found.error is not None:
            raise RillError(f"topic {topic!r} does not exist")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        tps = [TopicPartition(topic, p, start) for p in found.partitions]
        if since_ms is not None:
            tps = _offsets_since(consumer, topic, list(found.partitions), since_ms)
        consumer.assign(tps)
        # Without `follow`, stop at the end the topic had when reading began.
        ends = {} if follow else _high_watermarks(consumer, tps)
        seen = 0
        last = time.monotonic()
        while max_records is None or seen < max_records:
            if ends and _reached(consumer, ends):
                return
            msgs = consumer.consume(num_messages=500, timeout=0.2)
            if not msgs:
                if not follow and time.monotonic() - last > idle_timeout_s:
                    return
                continue
            last = time.monotonic()
            for msg in msgs:
                if msg.error() is not None:
                    continue
                yield to_in_record(msg)
                seen += 1
                if max_records is not None and seen >= max_records:
                    return
    finally:
        consumer.close()


def _offsets_since(
    consumer: Consumer, topic: str, partitions: list[int], since_ms: int
) -> list[TopicPartition]:
    """Per partition, the first offset at or after a timestamp (the end when none)."""
    wanted = [TopicPartition(topic, p, since_ms) for p in partitions]
    found = consumer.offsets_for_times(wanted, timeout=10)
    return [
        TopicPartition(topic, t.partition, t.offset if t.offset >= 0 else OFFSET_END) for t in found
    ]


def _high_watermarks(consumer: Consumer, tps: list[TopicPartition]) -> dict[int, int]:
    ends = {}
    for tp in tps:
        low, high = watermarks(consumer, tp)
        if high > max(low, tp.offset):
            ends[tp.partition] = high
    return ends


def watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float = 30.0) -> tuple[int, int]:
    """A partition's (low, high) offsets; a topic just created may have no leader yet
    (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE): asked again with backoff."""
    deadline = time.monotonic() + timeout_s
    backoff = Backoff(0.1, 2.0)
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            if not isinstance(from_exception(exc), DeliveryError) and not _no_leader(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(backoff.next_delay())


def _no_leader(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and err.code() in (
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    )


def _reached(consumer: Consumer, ends: dict[int, int]) -> bool:
    topic_tps = consumer.assignment()
    positions = {tp.partition: tp.offset for tp in consumer.position(topic_tps)}
    return all(positions.get(p, -1) >= end for p, end in ends.items())
