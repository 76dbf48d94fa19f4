"""The batch producer: idempotent, waits for every delivery of a batch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import structlog
from confluent_kafka import KafkaError, Producer

from service.errors import DeliveryError
from service.records import OutRecord

log = structlog.get_logger("rill.producer")


class BatchProducer:
    """Produce records asynchronously, then `flush()` and learn which failed.

    Args:
        conf: librdkafka producer configuration.
    """

    def __init__(self, conf: dict[str, Any]) -> None:
        self._conf = conf
        self._producer: Producer | None = None
        self._failed: list[tuple[OutRecord, KafkaError]] = []

    def start(self) -> BatchProducer:
        """Create the client."""
        self._producer = Producer({**self._conf, "on_delivery": self._delivered})
        return self

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            record = OutRecord(msg.topic(), msg.key(), msg.value(), msg.headers())
            self._failed.append((record, err))

    @property
    def client(self) -> Producer:
        """The underlying client."""
        if self._producer is None:
            raise DeliveryError("producer used before start()")
        return self._producer

    def send(self, records: Iterable[OutRecord]) -> None:
        """Queue records; waits for room when the local queue is full."""
        produce, poll = self.client.produce, self.client.poll
        for r in records:
            while True:
                try:
                    produce(r.topic, r.value, r.key, headers=cast("Any", r.headers))
                    break
                except BufferError:
                    poll(0.05)

    def flush(self, timeout_s: float) -> list[tuple[OutRecord, KafkaError]]:
        """Wait for every queued delivery; returns the records Kafka refused.

        Raises:
            DeliveryError: deliveries still outstanding after `timeout_s`.
        """
        remaining = self.client.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} records not delivered within {timeout_s}s")
        failed, self._failed = self._failed, []
        return failed

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued, then drop the client."""
        if self._producer is not None:
            left = self._producer.flush(timeout_s)
            if left:
                log.error("records left undelivered at close", count=left)
            self._producer = None
