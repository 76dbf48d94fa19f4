"""The batch producer: idempotent or transactional; DLQ entries rendered to headers here."""

from __future__ import annotations

import contextlib
import threading
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
    TransactionUnknownError,
)
from service.kafka.errors import classify, from_exception
from service.kafka.logs import logged
from service.processing.dlq import render
from service.records import DlqEntry, OutRecord
from service.retry import Backoff

log = structlog.get_logger("rill.producer")

# (offset, metadata) committed for one input partition inside a transaction.
OffsetMeta = tuple[int, str]
# How long an abort may take before the transactional client is replaced instead.
ABORT_WAIT_S = 10.0
# How much longer than its own timeout send_offsets_to_transaction may take before its
# client is given up.
SEND_OFFSETS_GRACE_S = 5.0
# Replacements in a row (no transaction committed in between) before the worker stops.
MAX_RENEWALS = 5
# How long a replacement client may keep failing init_transactions (asked again on every
# attempt) before it is replaced in turn.
FRESH_INIT_WAIT_S = 60.0
# How long a client's transactions may keep failing, none committed, before it is
# replaced (not counted toward MAX_RENEWALS: a broker away for long is waited out).
STALE_CLIENT_S = 30.0


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
        # Why the transactional client must be replaced before its next transaction.
        self._broken: str | None = None
        self._fresh = False  # a replacement client not through init_transactions yet
        self._fresh_since = 0.0
        self._renewals = 0
        # Since when every transaction of this client failed (None: the last one committed).
        self._failing_since: float | None = None

    def start(self) -> BatchProducer:
        """Create the client."""
        try:
            # Only failures call back into Python: a callback per delivered record
            # cost a few percent of a stateless worker's time.
            conf = logged(self._conf, "producer")
            self._producer = Producer(
                {**conf, "on_delivery": self._delivered, "delivery.report.only.error": True}
            )
        except KafkaException as exc:
            raise ConfigError(
                f"Kafka producer settings refused: {exc.args[0].str()} "
                "(check RILL_KAFKA_EXTRA and the security settings)"
            ) from exc
        return self

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            # The partition it went to (a repartition record's, named by rill) goes with
            # it, so a retried record lands where it was meant to.
            partition = msg.partition()
            record = OutRecord(
                msg.topic(),
                msg.key(),
                msg.value(),
                msg.headers(),
                partition if partition >= 0 else -1,
            )
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
                    produce(
                        r.topic,
                        r.value,
                        r.key,
                        partition=r.partition,
                        headers=cast("Any", r.headers),
                    )
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

        A client that failed fatally before the commit (its transaction timed out on the
        coordinator and it was fenced, a broker restart left it in an invalid state) or
        whose abort does not finish is replaced by a new one with the same transactional
        id before the next attempt: `init_transactions` fences the old one and aborts its
        transaction, so nothing of the failed attempt is ever committed. So is a client
        whose transactions keep failing for `STALE_CLIENT_S` without one committing.

        Raises:
            DeliveryError: the transaction was aborted; nothing of it is visible to
                read_committed readers. A `TransactionUnknownError` when the commit may or
                may not have happened: `settle()`, then the committed offsets tell.
            FatalError: clients kept failing fatally after `MAX_RENEWALS` replacements in
                a row.
        """
        self.settle(timeout_s)
        try:
            self._attempt(records, dlq, offsets, group_metadata, timeout_s)
        except TransactionRefusedError:
            raise  # records the broker refused for good: nothing wrong with the client
        except DeliveryError:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            raise
        self._failing_since = None

    def _attempt(
        self,
        records: Iterable[OutRecord],
        dlq: Iterable[DlqEntry],
        offsets: dict[tuple[str, int], OffsetMeta],
        group_metadata: Any,
        timeout_s: float,
    ) -> None:
        """One transaction with the current client (see `transaction`)."""
        client = self.client
        try:
            client.begin_transaction()
            self.send(records)
            self.send_dlq(dlq)
            if self._failed:
                # Refused before queueing: committing would drop it silently.
                failed, self._failed = self._failed, []
                self._abort(timeout_s)
                fatal = next((f.error for f in failed if isinstance(f.error, FatalError)), None)
                if fatal is not None:
                    self._broken = str(fatal)
                    raise DeliveryError(f"transaction aborted: {fatal} (a new producer takes over)")
                raise TransactionRefusedError(failed)
            if offsets:
                self._send_offsets(offsets, group_metadata, timeout_s)
            self._commit(timeout_s)
            self._renewals = 0
        except KafkaException as exc:
            # Before the commit, or a commit librdkafka says to abort: nothing committed.
            error = from_exception(exc)
            if isinstance(error, FatalError):
                self._broken = str(error)
                raise DeliveryError(
                    f"transaction aborted: {error} (a new producer takes over)"
                ) from exc
            self._abort(timeout_s)
            failed, self._failed = self._failed, []
            if any(f.refused for f in failed):
                raise TransactionRefusedError(failed) from exc
            raise DeliveryError(f"transaction aborted: {error}") from exc

    def settle(self, timeout_s: float) -> None:
        """Replace a client that failed (see `transaction`), or whose transactions kept
        failing for `STALE_CLIENT_S`; a no-op for a healthy one.

        After it returns, no transaction of this transactional id is open on the broker:
        the one whose commit had an unknown outcome is now committed or aborted.

        Raises:
            DeliveryError: the new client cannot start transactions yet.
            FatalError: clients kept failing (`MAX_RENEWALS`).
        """
        failing = self._failing_since
        if self._broken is None and failing is not None and self._stale(failing):
            # After a broker restart librdkafka can keep a client's coordinator
            # requests queued and never sent ("Timed out 0 in-flight, 0 retry-queued,
            # 1 out-queue"): every AddOffsetsToTxn times out and every abort succeeds,
            # so nothing else replaces it. A new client finds the coordinator again.
            self._broken = f"no transaction committed for {STALE_CLIENT_S:.0f} s"
            log.warning("transactional producer replaced", reason=self._broken)
            self._replace()
            self._failing_since = time.monotonic()
        if self._broken is not None:
            self._renew(timeout_s)

    @staticmethod
    def _stale(failing_since: float) -> bool:
        return time.monotonic() - failing_since > STALE_CLIENT_S

    def _abort(self, timeout_s: float) -> None:
        """Abort the open transaction; a client whose abort fails is replaced later."""
        try:
            self.client.abort_transaction(min(timeout_s, ABORT_WAIT_S))
        except KafkaException as exc:
            self._broken = f"abort did not finish: {exc.args[0] if exc.args else exc}"

    def _renew(self, timeout_s: float) -> None:
        """Replace the transactional client with a new one of the same transactional id.

        A replacement that does not get ready is asked again on the next attempt (a broker
        away for long is waited out), and after `FRESH_INIT_WAIT_S` it is replaced in turn
        without counting: a client can stay unable to start transactions after a broker
        restart while a new one can, and asking the same one forever kept the worker alive
        with its partitions, delivering nothing.

        Raises:
            FatalError: after `MAX_RENEWALS` replacements without a committed transaction.
            DeliveryError: the new client cannot start transactions yet.
        """
        if not self._fresh:
            if self._renewals >= MAX_RENEWALS:
                raise FatalError(
                    f"transactional producer failed {self._renewals} times in a row, "
                    f"last: {self._broken}"
                )
            self._renewals += 1
            log.warning("transactional producer replaced", reason=self._broken)
            self._replace()
        elif time.monotonic() - self._fresh_since > FRESH_INIT_WAIT_S:
            log.warning(
                "transactional producer replaced again: the replacement did not get ready",
                waited_s=round(time.monotonic() - self._fresh_since),
            )
            self._replace()
        self.init_transactions(timeout_s)
        self._broken = None
        self._fresh = False

    def _replace(self) -> None:
        """A new client of the same transactional id (ready after `init_transactions`)."""
        old, self._producer = self._producer, None
        if old is not None:
            with contextlib.suppress(KafkaException):
                old.purge(blocking=False)  # its queue belongs to an aborted transaction
        self._failed = []
        self.start()
        self._fresh, self._fresh_since = True, time.monotonic()

    def _send_offsets(
        self, offsets: dict[tuple[str, int], OffsetMeta], group_metadata: Any, timeout_s: float
    ) -> None:
        """`send_offsets_to_transaction`, given up on after its timeout.

        After a broker restart librdkafka can stay inside this call far past its timeout
        (seen for minutes, deaf to SIGTERM, with a stale group coordinator; librdkafka
        issues 5456, 5511), and the loop stood still until the liveness probe killed the
        worker. The call runs in a thread of its own: when it has not returned in time the
        client is given up (`_broken`: the next attempt makes a new one with the same
        transactional id, whose init_transactions fences this one and aborts its
        transaction) and the attempt fails as transient. The stuck call ends with its client.
        """
        client = self.client
        pairs = [TopicPartition(t, p, o, meta) for (t, p), (o, meta) in offsets.items()]
        done: list[BaseException | None] = []

        def call() -> None:
            try:
                client.send_offsets_to_transaction(pairs, group_metadata, timeout_s)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                done.append(exc)
            else:
                done.append(None)

        thread = threading.Thread(target=call, name="rill-send-offsets", daemon=True)
        thread.start()
        thread.join(timeout_s + SEND_OFFSETS_GRACE_S)
        if not done:
            self._broken = f"send_offsets_to_transaction did not return within {timeout_s} s"
            log.warning("transactional client stuck: replaced", reason=self._broken)
            raise DeliveryError(f"transaction aborted: {self._broken} (a new producer takes over)")
        if done[0] is not None:
            raise done[0]

    def _commit(self, timeout_s: float) -> None:
        """Commit; a retriable failure leaves the outcome unknown, so commit again.

        Aborting then would redo a transaction that may have committed (duplicates):
        retry the commit itself until it answers. A commit librdkafka says to abort did
        not happen (raised to be aborted); any other failure, or no answer within
        `timeout_s`, leaves the outcome open: `TransactionUnknownError`, and the client is
        replaced before anything else is sent.
        """
        deadline = time.monotonic() + timeout_s
        backoff = Backoff(0.1, 2.0)
        while True:
            try:
                self.client.commit_transaction(max(deadline - time.monotonic(), 1.0))
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.txn_requires_abort():
                    raise
                if not err.retriable() or time.monotonic() >= deadline:
                    self._broken = f"commit failed: {err.str()}"
                    raise TransactionUnknownError(
                        f"transaction outcome unknown: {err.str()}"
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
                if isinstance(error, FatalError):
                    raise error from exc
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
