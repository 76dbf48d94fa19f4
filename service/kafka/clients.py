"""librdkafka configuration built from settings, for every client rill makes."""

from __future__ import annotations

import uuid
from typing import Any

from service.config import Settings


def new_transactional_id(group_id: str) -> str:
    """A transactional id no other process has: `rill-<group>-<12 hex>`."""
    return f"rill-{group_id}-{uuid.uuid4().hex[:12]}"


def consumer_config(settings: Settings) -> dict[str, Any]:
    """Group consumer: cooperative-sticky, offsets stored only by rill after delivery."""
    kafka, consumer = settings.kafka, settings.consumer
    conf = kafka.librdkafka_common()
    conf.update(
        {
            "group.id": kafka.group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.offset.store": False,
            # Offsets are committed only inside the output transactions with exactly-once.
            "enable.auto.commit": not kafka.exactly_once,
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            "max.poll.interval.ms": consumer.max_poll_interval_ms,
            "statistics.interval.ms": consumer.stats_interval_ms,
            # Bounds the records fetched ahead of processing, whatever the input rate.
            "queued.max.messages.kbytes": consumer.queue_kbytes,
        }
    )
    conf.update(kafka.extra_for("consumer"))
    return conf


def producer_config(
    settings: Settings, gapless: bool = False, *, transactional_id: str | None = None
) -> dict[str, Any]:
    """Idempotent batching producer for sink and DLQ (and group_by's repartition topic).

    Args:
        settings: the settings.
        gapless: an error that would leave a gap in a partition's records (a record lost
            while later ones were written) stops the producer instead (librdkafka
            `enable.gapless.guarantee`). group_by at least once needs it: stage two skips
            a record at or below the highest source position applied, which is sound only
            while each input partition's records reach the repartition topic as a prefix.
        transactional_id: exactly-once: this id (a supervisor's child slot keeps one, so a
            restarted child fences its predecessor); None: a new one per process.
    """
    kafka, producer = settings.kafka, settings.producer
    conf = kafka.librdkafka_common()
    conf.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": producer.linger_ms,
            "batch.size": producer.batch_bytes,
            "compression.type": producer.compression,
            "message.timeout.ms": int(producer.delivery_timeout_s * 1000),
            "queue.buffering.max.kbytes": producer.queue_kbytes,
            # The limit process_batch checks outputs and DLQ copies against.
            "message.max.bytes": producer.message_max_bytes,
        }
    )
    if gapless:
        conf["enable.gapless.guarantee"] = True
    if kafka.exactly_once:
        # Unique per process: zombies are fenced by the group generation (KIP-447).
        conf["transactional.id"] = transactional_id or new_transactional_id(kafka.group_id)
        # A crashed worker's open transaction blocks read_committed readers this long.
        conf["transaction.timeout.ms"] = kafka.transaction_timeout_ms
        conf["message.timeout.ms"] = min(conf["message.timeout.ms"], kafka.transaction_timeout_ms)
    conf.update(kafka.extra_for("producer"))
    return conf
