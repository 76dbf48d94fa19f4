"""librdkafka configuration built from settings, for every client rill makes."""

from __future__ import annotations

import uuid
from typing import Any

from service.config import Settings


def consumer_config(settings: Settings) -> dict[str, Any]:
    """Group consumer: cooperative-sticky, offsets stored only by rill after delivery."""
    conf = settings.librdkafka_common()
    conf.update(
        {
            "group.id": settings.group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            "statistics.interval.ms": settings.stats_interval_ms,
            # Bounds the records fetched ahead of processing, whatever the input rate.
            "queued.max.messages.kbytes": settings.consumer_queue_kbytes,
        }
    )
    if settings.processing_guarantee == "exactly_once":
        # Offsets are committed only inside the output transactions.
        conf["enable.auto.commit"] = False
    conf.update(_prefixed(settings.kafka_extra, "consumer."))
    return conf


def producer_config(settings: Settings) -> dict[str, Any]:
    """Idempotent batching producer for sink and DLQ."""
    conf = settings.librdkafka_common()
    conf.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": settings.producer_linger_ms,
            "batch.size": settings.producer_batch_bytes,
            "compression.type": settings.producer_compression,
            "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
            "queue.buffering.max.kbytes": settings.producer_queue_kbytes,
        }
    )
    if settings.processing_guarantee == "exactly_once":
        # Unique per process: zombies are fenced by the group generation (KIP-447).
        conf["transactional.id"] = f"rill-{settings.group_id}-{uuid.uuid4().hex[:12]}"
        # A crashed worker's open transaction blocks read_committed readers this long.
        conf["transaction.timeout.ms"] = settings.transaction_timeout_ms
        conf["message.timeout.ms"] = min(
            conf["message.timeout.ms"], settings.transaction_timeout_ms
        )
    conf.update(_prefixed(settings.kafka_extra, "producer."))
    return conf


def _prefixed(extra: dict[str, str], prefix: str) -> dict[str, str]:
    """`kafka_extra` keys like `consumer.fetch.max.bytes` go only to that client."""
    return {k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix)}
