"""Exactly-once edges of issue 9 B16: a commit of unknown outcome, a tick with no position."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from confluent_kafka import KafkaError, KafkaException

from service.errors import DeliveryError, TransactionUnknownError
from service.kafka import producer as producer_module
from service.kafka.producer import BatchProducer
from service.records import BatchResult, InRecord, Keyed, OutRecord
from service.runtime.guarantee import ExactlyOnce
from service.runtime.ledger import outbox_seq
from service.runtime.window_engine import WindowEngine
from tests.support.inprocess import IN, OUT, WINDOWED, settings_for
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer


class _Client:
    """Stands in for librdkafka's producer at the commit call only."""

    def __init__(self, unknown: int) -> None:
        self.unknown = unknown
        self.commits = 0
        self.aborts = 0

    def commit_transaction(self, _timeout: float) -> None:
        self.commits += 1
        if self.unknown:
            self.unknown -= 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))

    def abort_transaction(self, _timeout: float) -> None:
        self.aborts += 1


def _producer(client: _Client) -> BatchProducer:
    producer = BatchProducer({}, "test")
    producer._producer = client  # type: ignore[assignment]
    return producer


def test_commit_of_unknown_outcome_is_retried_not_aborted() -> None:
    """A retriable commit failure leaves the outcome unknown: commit again, never abort."""
    client = _Client(unknown=3)
    _producer(client)._commit(timeout_s=30.0)
    assert (client.commits, client.aborts) == (4, 0)


def test_commit_that_never_answers_is_unknown_and_the_client_is_replaced() -> None:
    """If the outcome stays unknown, it is neither aborted nor redone: the client is marked
    for replacement, and the caller learns the outcome from the committed offsets."""
    client = _Client(unknown=10**6)
    producer = _producer(client)
    with pytest.raises(TransactionUnknownError, match="outcome unknown"):
        producer._commit(timeout_s=0.5)
    assert client.aborts == 0
    assert producer._broken is not None


def test_fatal_commit_is_unknown_and_an_abortable_one_is_aborted() -> None:
    """A fatal commit error may follow a commit that happened: unknown, not redone. One
    librdkafka says to abort did not commit: raised for the abort path."""
    fatal = _Client(unknown=0)
    fatal.commit_transaction = _raises(KafkaError(KafkaError._FENCED, "fenced", fatal=True))  # type: ignore[method-assign]
    with pytest.raises(TransactionUnknownError):
        _producer(fatal)._commit(timeout_s=5.0)
    abortable = _Client(unknown=0)
    error = KafkaError(KafkaError._STATE, "abort", txn_requires_abort=True)
    abortable.commit_transaction = _raises(error)  # type: ignore[method-assign]
    with pytest.raises(KafkaException):
        _producer(abortable)._commit(timeout_s=5.0)


def _raises(error: KafkaError) -> Any:
    def commit(_timeout: float) -> None:
        raise KafkaException(error)

    return commit


def test_tick_on_a_partition_with_no_committed_offset_records_its_sequence() -> None:
    """An idle tick's windows go out with an offset (past the applied records) carrying the
    outbox sequence, even where no offset was committed yet: a new owner must not re-emit
    them."""
    from service.app import build_plan  # noqa: PLC0415 - the plan of the shared settings
    from service.runtime.real_edges import state_layout  # noqa: PLC0415
    from tests.support.memory_store import MemoryWindowStore  # noqa: PLC0415

    broker = MemoryBroker()
    broker.create(IN, 1)
    settings = settings_for("exactly_once", **WINDOWED)
    plan = build_plan(settings)
    assert plan.window is not None
    store = MemoryWindowStore(state_layout(settings, plan.window), fakeredis.FakeServer())
    engine = WindowEngine(plan.window, store, lambda rec, err: None)  # type: ignore[arg-type,return-value]
    consumer = MemoryConsumer(broker, IN, lambda _p: None, lambda _p: None)
    guarantee = ExactlyOnce(
        plan, MemoryProducer(broker), consumer, engine, source_topic=IN, timeout_s=5.0
    )
    guarantee.start()
    tp = (IN, 0)
    guarantee.reconcile(tp)
    record = InRecord(IN, 0, 41, b"a", b"{}", None, 1_000)
    applied = engine.apply([Keyed(record, "a", {"k": "a", "ts": 10, "amount": 1})], 0)
    assert guarantee.ledger.positions.get(tp, -1) < 0, "nothing committed for it yet"
    tick: Any = BatchResult(
        outputs=[OutRecord(OUT, b"a", b"{}")], sources=[tp], seqs=dict(applied.seqs)
    )
    guarantee.deliver(tick)
    offset, meta = broker.committed[tp]
    assert offset == 42
    assert outbox_seq(meta) == applied.seqs[tp]


class _Replacement:
    """Stands in for a replacement client: init_transactions fails while `ready` is False."""

    def __init__(self, ready: bool) -> None:
        self.ready = ready
        self.inits = 0

    def init_transactions(self, _timeout: float) -> None:
        self.inits += 1
        if not self.ready:
            raise KafkaException(
                KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, "not available", retriable=True)
            )

    def purge(self, blocking: bool = True) -> None:
        del blocking


def test_a_replacement_that_does_not_get_ready_is_replaced_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replacement client failing init_transactions is asked again on each attempt, and
    after FRESH_INIT_WAIT_S a new one takes its place (not counted toward MAX_RENEWALS,
    so a long outage is waited out); the first one that gets ready ends the wait. Before,
    the same client was asked forever and the worker delivered nothing."""
    clock = [0.0]
    monkeypatch.setattr(producer_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(producer_module.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    made: list[_Replacement] = []

    def start(self: BatchProducer) -> BatchProducer:
        made.append(_Replacement(ready=len(made) >= 3))  # the fourth client gets ready
        self._producer = made[-1]  # type: ignore[assignment]
        return self

    monkeypatch.setattr(BatchProducer, "start", start)
    producer = BatchProducer({}, "test")
    producer._broken = "send_offsets_to_transaction did not return within 10.0 s"
    failed = 0
    while producer._broken is not None and failed < 100:
        try:
            producer.settle(timeout_s=10.0)
        except DeliveryError:
            failed += 1
            clock[0] += 1.0  # back-pressure's wait before the next attempt
    assert producer._broken is None, f"still not ready after {failed} attempts"
    assert len(made) == 4
    assert all(c.inits >= 2 for c in made[:3]), "each asked again before it was replaced"
    assert producer._renewals == 1
    assert clock[0] >= 3 * producer_module.FRESH_INIT_WAIT_S


class _Txn:
    """Stands in for a transactional client; `stuck`: its coordinator requests are never
    sent (after a broker restart), so every AddOffsetsToTxn times out and aborts succeed."""

    def __init__(self, stuck: bool) -> None:
        self.stuck = stuck
        self.committed = 0

    def init_transactions(self, _timeout: float) -> None:
        return None

    def begin_transaction(self) -> None:
        return None

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def poll(self, _timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(self, *_args: Any) -> None:
        if self.stuck:
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "Failed to add offsets", retriable=True)
            )

    def commit_transaction(self, _timeout: float) -> None:
        self.committed += 1

    def abort_transaction(self, _timeout: float) -> None:
        return None

    def purge(self, blocking: bool = True) -> None:
        del blocking


def test_a_client_whose_transactions_keep_failing_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every transaction of the first client fails (its offsets never reach the
    coordinator) and every abort succeeds: after STALE_CLIENT_S it is replaced (not
    counted) and the new client commits. Before, the same client was retried forever
    (a live chaos row: a worker held its partitions for minutes, delivering nothing)."""
    clock = [0.0]
    monkeypatch.setattr(producer_module.time, "monotonic", lambda: clock[0])
    made: list[_Txn] = []

    def start(self: BatchProducer) -> BatchProducer:
        made.append(_Txn(stuck=not made))
        self._producer = made[-1]  # type: ignore[assignment]
        return self

    monkeypatch.setattr(BatchProducer, "start", start)
    producer = BatchProducer({}, "test").start()
    offsets = {("in", 0): (10, "seq=1")}
    failed = 0
    while not made[-1].committed and failed < 100:
        try:
            producer.transaction([], [], offsets, object(), timeout_s=10.0)
        except DeliveryError:
            failed += 1
            clock[0] += 10.0  # each attempt waits out its timeout
    assert len(made) == 2, f"{failed} attempts failed"
    assert made[-1].committed == 1
    assert failed * 10.0 > producer_module.STALE_CLIENT_S
    assert producer._renewals == 0
    assert producer._failing_since is None
