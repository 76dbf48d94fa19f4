"""An in-memory twin of the Kafka edge, for unit tests of the runtime's pure logic.

It implements `service.runtime.edges.Consumer` and `Producer` over plain lists: one group,
every partition of its topics (the input, and group_by's repartition topic) assigned to
the one consumer; a record that names its partition lands there (else in partition 0);
transactions all-or-nothing. Faults are injected on cue (`refuse`, `fail_flushes`,
`fail_transactions`). Integration tests use the real broker; this twin only lets the
commit order and the worker loop be tested without one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from service.errors import DeliveryError, RillError, TransactionRefusedError
from service.kafka.producer import Failure, OffsetMeta
from service.kafka.progress import Progress
from service.processing.dlq import render
from service.records import TP, DlqEntry, InRecord, OutRecord


@dataclass
class MemoryBroker:
    """Topics as lists of records per partition, and the group's committed offsets."""

    logs: dict[TP, list[OutRecord]] = field(default_factory=dict)
    # True while a rebalance callback runs: a transaction then would wait on the very
    # rebalance it is part of (the real group coordinator stalls it), so the twin refuses.
    in_rebalance: bool = False
    committed: dict[TP, tuple[int, str]] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)

    def create(self, topic: str, partitions: int) -> None:
        """A topic with this many partitions."""
        self.partitions[topic] = partitions
        for p in range(partitions):
            self.logs.setdefault((topic, p), [])

    def append(self, record: OutRecord, partition: int = 0) -> int:
        """Append one record; returns its offset."""
        log = self.logs.setdefault((record.topic, partition), [])
        log.append(record)
        return len(log) - 1

    def records(self, topic: str) -> list[OutRecord]:
        """Every record of a topic, partition by partition."""
        return [r for (t, _), log in sorted(self.logs.items()) if t == topic for r in log]


class MemoryConsumer:
    """One group member that owns every partition of its topics.

    Args:
        broker: where the records are.
        topic: the input topic, or every topic it subscribes to.
        on_assign / on_revoke: the worker's callbacks.
        on_idle: called when a poll finds every partition read to its end and none
            paused (e.g. to stop the worker).
        on_close: called when close() begins, before the partitions are revoked.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        topic: str | list[str],
        on_assign: Callable[[list[TP]], None],
        on_revoke: Callable[[list[TP]], None],
        on_idle: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.broker = broker
        self.topics = [topic] if isinstance(topic, str) else list(topic)
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.on_idle = on_idle
        self.on_close = on_close
        self.positions: dict[TP, int] = {}
        self.stored: dict[TP, int] = {}
        self.stored_meta: dict[TP, str] = {}
        self.paused: set[TP] = set()
        self.closed = False

    def start(self) -> MemoryConsumer:
        """Assign every partition; as in Kafka, fetching starts from the offset committed
        when the assign callback has returned (a reconcile may commit in it)."""
        pairs = [
            (topic, p) for topic in self.topics for p in range(self.broker.partitions.get(topic, 1))
        ]
        self.broker.in_rebalance = True
        try:
            self.on_assign(pairs)
        finally:
            self.broker.in_rebalance = False
        for tp in pairs:
            self.positions[tp] = max(self.broker.committed.get(tp, (0, ""))[0], 0)
        return self

    def revoke(self, pairs: list[TP]) -> None:
        """Take partitions away, as a rebalance would."""
        self.commit()
        self.broker.in_rebalance = True
        try:
            self.on_revoke(pairs)
        finally:
            self.broker.in_rebalance = False
        for tp in pairs:
            self.positions.pop(tp, None)

    def consume(self, max_records: int, timeout_s: float) -> list[InRecord]:
        """Up to `max_records` records of the unpaused partitions."""
        out: list[InRecord] = []
        for tp, pos in sorted(self.positions.items()):
            if tp in self.paused:
                continue
            log = self.broker.logs.get(tp, [])
            for offset in range(pos, min(len(log), pos + max_records - len(out))):
                r = log[offset]
                # Kafka has no empty header list: a record without headers has None.
                headers = r.headers or None
                out.append(InRecord(tp[0], tp[1], offset, r.key, r.value, headers, 1_000))
            self.positions[tp] = pos + sum(1 for r in out if r.topic_partition() == tp)
        drained = not self.paused and all(
            pos >= len(self.broker.logs.get(tp, [])) for tp, pos in self.positions.items()
        )
        if not out and drained and self.on_idle is not None:
            self.on_idle()
        return out

    def store_offsets(
        self, next_offsets: dict[TP, int], metadata: dict[TP, str] | None = None
    ) -> None:
        """Mark offsets as done, each with its metadata."""
        self.stored.update(next_offsets)
        self.stored_meta.update({tp: (metadata or {}).get(tp, "") for tp in next_offsets})

    def commit(self) -> None:
        """Commit the stored offsets."""
        for tp, offset in self.stored.items():
            self.broker.committed[tp] = (offset, self.stored_meta.get(tp, ""))

    def committed(self, pairs: list[TP], timeout_s: float = 10.0) -> dict[TP, tuple[int, str]]:
        """The committed offsets (-1 where none) and their metadata."""
        return {tp: self.broker.committed.get(tp, (-1, "")) for tp in pairs}

    def group_metadata(self) -> Any:
        """The group generation (one generation here)."""
        return "generation-1"

    def rewind(self, records: list[InRecord]) -> None:
        """Seek back to the first of `records` per partition."""
        for r in reversed(records):
            self.positions[r.topic_partition()] = r.offset

    def pause(self, pairs: list[TP]) -> None:
        """Stop handing out these partitions."""
        self.paused.update(pairs)

    def resume(self, pairs: list[TP]) -> None:
        """Hand them out again."""
        self.paused.difference_update(pairs)

    def progress(self, pairs: list[TP]) -> dict[TP, Progress]:
        """Position and end of the assigned ones (every record handed out is applied);
        unknown for the others, as librdkafka answers for a partition not assigned."""
        return {
            tp: Progress(self.positions[tp], len(self.broker.logs.get(tp, [])))
            if tp in self.positions
            else Progress(None, None)
            for tp in pairs
        }

    def close(self) -> None:
        """Leave the group as Kafka's close does: revoke every partition (which commits)."""
        if self.on_close is not None:
            self.on_close()
        if self.positions:
            self.revoke(sorted(self.positions))
        self.commit()
        self.closed = True


class MemoryProducer:
    """Records queued by `send`, appended to the broker by `flush` or a transaction.

    Args:
        broker: where records go.
        refuse: the error for a record Kafka would not take (None: taken).
        fail_flushes: how many flushes raise DeliveryError (deliveries outstanding).
        fail_transactions: how many transactions abort.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        refuse: Callable[[OutRecord], RillError | None] | None = None,
        fail_flushes: int = 0,
        fail_transactions: int = 0,
    ) -> None:
        self.broker = broker
        self.refuse = refuse or (lambda _r: None)
        self.fail_flushes = fail_flushes
        self.fail_transactions = fail_transactions
        self.queued: list[OutRecord] = []
        self.transactions = 0
        self.initialized = False
        self.settled = 0

    def send(self, records: Iterable[OutRecord]) -> None:
        """Queue records."""
        self.queued.extend(records)

    def send_dlq(self, entries: Iterable[DlqEntry]) -> None:
        """Queue DLQ entries, rendered."""
        self.send(render(e, "test") for e in entries)

    def flush(self, timeout_s: float) -> list[Failure]:
        """Deliver what is queued; returns what was refused."""
        if self.fail_flushes:
            self.fail_flushes -= 1
            raise DeliveryError("records not delivered within the timeout")
        failed = []
        for record in self.queued:
            error = self.refuse(record)
            if error is None:
                self.broker.append(record, max(record.partition, 0))
            else:
                failed.append(Failure(record, error))
        self.queued = []
        return failed

    def transaction(
        self,
        records: Iterable[OutRecord],
        dlq: Iterable[DlqEntry],
        offsets: dict[TP, OffsetMeta],
        group_metadata: Any,
        timeout_s: float,
    ) -> None:
        """All or nothing: records, DLQ entries and offsets."""
        if self.broker.in_rebalance:
            raise AssertionError("a transaction inside a rebalance callback deadlocks")
        batch = [*records, *(render(e, "test") for e in dlq)]
        if self.fail_transactions:
            self.fail_transactions -= 1
            raise DeliveryError("transaction aborted: broker away")
        refused = [Failure(r, e) for r in batch if (e := self.refuse(r)) is not None]
        if refused:
            raise TransactionRefusedError(refused)
        for record in batch:
            self.broker.append(record, max(record.partition, 0))
        self.broker.committed.update(offsets)
        self.transactions += 1

    def init_transactions(self, timeout_s: float) -> None:
        """Ready for transactions."""
        self.initialized = True

    def settle(self, timeout_s: float) -> None:
        """Nothing open here: every transaction ended when it returned."""
        self.settled += 1

    def close(self) -> None:
        """Nothing queued is lost here: flush it."""
        self.flush(0)
