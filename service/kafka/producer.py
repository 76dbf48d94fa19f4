"""The batch producer: idempotent or transactional; DLQ entries rendered to headers here."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from service.errors import (
    ConfigError,
    DeliveryError,
    FatalError,
    RefusedError,
    RillError,
    TransactionRefusedError,
)
from service.kafka.errors import classify, from_exception
from service.processing.dlq import DlqEntry, render
from service.records import OutRecord
from service.retry import Backoff

log = structlog.get_logger("rill.producer")

# (offset, metadata) committed for one input partition inside a transaction.
OffsetMeta = tuple[int, str]


@dataclass(frozen=True, slots=True)
class Failure:
    """A record Kafka did not take, and why (transient, refused or fatal)."""

    record: OutRecord
    error: RillError

    @property
    def refused(self) -> bool:
        """Kafka will never take this record."""
        return isinstance(self.error, RefusedError)


class BatchProducer:
    """Produce records asynchronously, then `flush()` and learn which failed.

    Args:
        conf: librdkafka producer configuration.
        version: rill's version, for the DLQ headers.
    """

    def __init__(self, conf: dict[str, Any], version: str) -> None:
        self._conf = conf
        self._version = version
        self._producer: Producer | None = None
        self._failed: list[Failure] = []

    def start(self) -> BatchProducer:
        """Create the client."""
        try:
            # Only failures call back into Python: a callback per delivered record
            # cost a few percent of a stateless worker's time.
            self._producer = Producer(
                {**self._conf, "on_delivery": self._delivered, "delivery.report.only.error": True}
            )
        except KafkaException as exc:
            raise ConfigError(
                f"Kafka producer settings refused: {exc.args[0].str()} "
                "(check RILL_KAFKA_EXTRA and the security settings)"
            ) from exc
        return self

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            record = OutRecord(msg.topic(), msg.key(), msg.value(), msg.headers())
            self._failed.append(Failure(record, classify(err)))

    @property
    def client(self) -> Producer:
        """The underlying client."""
        if self._producer is None:
            raise RillError("producer used before start()")
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
                except KafkaException as exc:
                    # Refused before queueing (e.g. larger than message.max.bytes).
                    self._failed.append(Failure(r, from_exception(exc)))
                    break

    def send_dlq(self, entries: Iterable[DlqEntry]) -> None:
        """Queue DLQ entries, each rendered to a record with its reason headers."""
        self.send(render(e, self._version) for e in entries)

    def flush(self, timeout_s: float) -> list[Failure]:
        """Wait for every queued delivery; returns the records Kafka did not take.

        Raises:
            DeliveryError: deliveries still outstanding after `timeout_s`.
        """
        remaining = self.client.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} records not delivered within {timeout_s}s")
        failed, self._failed = self._failed, []
        fatal = next((f for f in failed if isinstance(f.error, FatalError)), None)
        if fatal is not None:
            raise fatal.error
        return failed

    def transaction(
        self,
        records: Iterable[OutRecord],
        dlq: Iterable[DlqEntry],
        offsets: dict[tuple[str, int], OffsetMeta],
        group_metadata: Any,
        timeout_s: float,
    ) -> None:
        """Produce records and DLQ entries and commit `offsets` in ONE Kafka transaction.

        Raises:
            DeliveryError: the transaction was aborted (or its outcome is unknown after
                retries); nothing of it is visible to read_committed readers.
            FatalError: the producer is fenced or unusable.
        """
        client = self.client
        try:
            client.begin_transaction()
            self.send(records)
            self.send_dlq(dlq)
            if self._failed:
                # Refused before queueing: committing would drop it silently.
                failed, self._failed = self._failed, []
                client.abort_transaction(timeout_s)
                raise TransactionRefusedError(failed)
            if offsets:
                client.send_offsets_to_transaction(
                    [TopicPartition(t, p, o, meta) for (t, p), (o, meta) in offsets.items()],
                    group_metadata,
                    timeout_s,
                )
            self._commit(timeout_s)
        except KafkaException as exc:
            error = from_exception(exc)
            if isinstance(error, FatalError):
                raise error from exc
            with contextlib.suppress(KafkaException):
                client.abort_transaction(timeout_s)
            failed, self._failed = self._failed, []
            if any(f.refused for f in failed):
                raise TransactionRefusedError(failed) from exc
            raise DeliveryError(f"transaction aborted: {error}") from exc

    def _commit(self, timeout_s: float) -> None:
        """Commit; a retriable failure leaves the outcome unknown, so commit again.

        Aborting then would redo a transaction that may have committed (duplicates):
        retry the commit itself until it answers, and if it never does within
        `timeout_s`, stop the process: the recovery protocol reads the truth from the
        committed offsets.
        """
        deadline = time.monotonic() + timeout_s
        backoff = Backoff(0.1, 2.0)
        while True:
            try:
                self.client.commit_transaction(max(deadline - time.monotonic(), 1.0))
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable():
                    raise
                if time.monotonic() >= deadline:
                    raise FatalError(
                        f"transaction outcome unknown after {timeout_s}s: {err.str()}"
                    ) from exc
                time.sleep(backoff.next_delay())

    def init_transactions(self, timeout_s: float) -> None:
        """Fence older producers of this transactional id and get ready.

        A coordinator still loading (a broker just restarted) answers with retriable
        errors: asked again with backoff for up to `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                self.client.init_transactions(max(deadline - time.monotonic(), 1.0))
                return
            except KafkaException as exc:
                error = from_exception(exc)
                if not isinstance(error, DeliveryError) or time.monotonic() >= deadline:
                    raise DeliveryError(f"cannot start transactions: {exc}") from exc
                log.warning("transactions not ready yet, retrying", error=str(exc))
                time.sleep(backoff.next_delay())

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued, then drop the client."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                left = producer.flush(timeout_s)
            except KafkaException as exc:
                # A producer already failed fatally (the error that stops the worker is
                # raised elsewhere): closing must not hide it behind a second one.
                log.error("producer unusable at close", error=str(exc))
                return
            if left:
                log.error("records left undelivered at close", count=left)
