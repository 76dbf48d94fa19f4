"""The commit protocol, in one function with numbered steps.

At-least-once: a batch's offsets are stored only after every output and DLQ record of
the batch is delivered. A crash anywhere before step 5 redoes the batch after restart
(duplicates possible, nothing lost).
"""

from __future__ import annotations

import time

import structlog
from confluent_kafka import KafkaError

from service.errors import DeliveryError
from service.kafka.consumer import GroupConsumer
from service.kafka.producer import BatchProducer
from service.processing.dlq import (
    ERROR_CLASS,
    ERROR_MESSAGE,
    ERROR_STAGE,
    SERVICE_VERSION,
    SOURCE_TOPIC,
)
from service.records import BatchResult, Headers, OutRecord

log = structlog.get_logger("rill.commit")
# (offset, metadata) committed for one input partition.
TopicPartitionOffset = tuple[int, str]
_TRANSIENT = {KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}
TRUNCATED = "rill.value.truncated"


def _refused_to_dlq(
    record: OutRecord, err: KafkaError, dlq_topic: str, source_topic: str, version: str
) -> OutRecord:
    """A refused sink record becomes a DLQ record; a refused DLQ record loses its value."""
    reason: Headers = [
        (ERROR_STAGE, b"produce"),
        (ERROR_CLASS, err.name().encode()),
        (ERROR_MESSAGE, err.str().encode()),
        (SOURCE_TOPIC, source_topic.encode()),
        (SERVICE_VERSION, version.encode()),
    ]
    if record.topic == dlq_topic:
        size = str(len(record.value or b"")).encode()
        return OutRecord(
            dlq_topic, record.key, None, (record.headers or []) + [(TRUNCATED, size)] + reason
        )
    return OutRecord(dlq_topic, record.key, record.value, (record.headers or []) + reason)


def deliver_and_commit(
    result: BatchResult,
    producer: BatchProducer,
    consumer: GroupConsumer | None,
    *,
    dlq_topic: str,
    source_topic: str,
    version: str,
    timeout_s: float,
) -> tuple[int, int, float]:
    """Deliver one batch's outputs, then mark its offsets done.

    Returns:
        (records delivered to the sink, records moved to the DLQ by Kafka refusals,
        seconds spent storing offsets).

    Raises:
        DeliveryError: something could not be delivered even to the DLQ; the batch's
            offsets are not stored, so the batch is processed again after restart.
    """
    # 1. Queue every sink output and DLQ entry once; librdkafka batches them per
    #    partition. A retried call (after a DeliveryError) only waits again.
    if not result.sent:
        producer.send(result.outputs)
        producer.send(result.dlq)
        result.sent = True
    # 2. Wait for every delivery report (DeliveryError while deliveries are outstanding).
    refused = producer.flush(timeout_s)
    # 3. Transient refusals (broker away, timed out) are queued again: retry later.
    transient = [(r, e) for r, e in refused if e.retriable() or e.code() in _TRANSIENT]
    if transient:
        producer.send(r for r, _ in transient)
        raise DeliveryError(f"{len(transient)} deliveries failed for now: {transient[0][1]}")
    # 4. What Kafka refused for good (too large, invalid) goes to the DLQ, never away.
    moved = 0
    if refused:
        if any(err.fatal() for _, err in refused):
            raise DeliveryError(f"fatal producer error: {refused[0][1]}")
        retry = [_refused_to_dlq(r, e, dlq_topic, source_topic, version) for r, e in refused]
        moved = sum(1 for r, _ in refused if r.topic != dlq_topic)
        log.warning(
            "records refused by Kafka moved to the DLQ",
            count=len(retry),
            reason=refused[0][1].str(),
        )
        producer.send(retry)
        again = producer.flush(timeout_s)
        if again:
            # The DLQ itself is unusable: stop here, store nothing.
            raise DeliveryError(f"DLQ refused records too: {again[0][1]}")
    # 5. Everything is delivered: store the offsets; auto-commit, revoke and close commit them.
    started = time.perf_counter()
    if consumer is not None:
        consumer.store_offsets(result.next_offsets)
    return len(result.outputs) - moved, moved, time.perf_counter() - started


def deliver_in_transaction(
    result: BatchResult,
    producer: BatchProducer,
    consumer: GroupConsumer,
    *,
    offsets: dict[tuple[str, int], TopicPartitionOffset],
    timeout_s: float,
) -> tuple[int, int, float]:
    """Exactly-once: the batch's outputs, DLQ records and input offsets in ONE transaction.

    1. begin the transaction;
    2. produce the sink outputs and DLQ records;
    3. add the input offsets (with the window outbox sequence each partition reached, as
       offset metadata) for the consumer group's current generation;
    4. commit. read_committed readers see all of it or none; on any failure the
       transaction is aborted and the caller retries the batch from step 1.

    Returns:
        (records delivered to the sink, 0, seconds of the whole transaction).
    """
    started = time.perf_counter()
    producer.transaction(
        [*result.outputs, *result.dlq], offsets, consumer.group_metadata(), timeout_s
    )
    return len(result.outputs), 0, time.perf_counter() - started


def now_ms() -> int:
    """Wall clock in milliseconds."""
    return time.time_ns() // 1_000_000
