"""Faults injected at the seams (issue 9, part B): nothing lost, nothing twice.

Each test drives a whole Worker in-process (tests/support/inprocess.py) and injects one
fault on cue at a named point: claim, apply after the script ran, inside the transaction,
revoke mid-batch, refusal by the broker.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from service.errors import (
    DeliveryError,
    RefusedError,
    RillError,
    StateError,
    StateLostError,
    TransactionUnknownError,
)
from service.kafka.producer import OffsetMeta
from service.processing import dlq
from service.records import TP, DlqEntry, OutRecord
from service.state.store import WindowStore
from service.window_state import ApplyReply
from tests.support.inprocess import (
    DLQ,
    IN,
    OUT,
    WINDOWED,
    AbortAlways,
    Flaky,
    Run,
    expected,
    feed,
    settings_for,
    windows,
)
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer


def wrapping(
    make: Callable[[WindowStore], Any],
) -> tuple[list[Any], Callable[[WindowStore], WindowStore]]:
    """A store wrapper for `Run(store=...)`, and the list that keeps the one it made."""
    made: list[Any] = []

    def wrap(store: WindowStore) -> WindowStore:
        made.append(make(store))
        return made[0]  # type: ignore[no-any-return]

    return made, wrap


def _stages(broker: MemoryBroker) -> list[str]:
    return sorted(dlq.reason_of(r.headers)[dlq.ERROR_STAGE] for r in broker.records(DLQ))


def test_idle_tick_delivery_is_retried_with_the_same_windows() -> None:
    """B3: a failed idle-tick transaction is retried as is; the closed window is not lost."""
    broker = MemoryBroker()
    feed(broker, [{"k": "a", "ts": t, "amount": 1} for t in (10, 20, 30)], partitions=1)

    class FailWindowDeliveries(MemoryProducer):
        """Aborts the first transactions that carry window results (the idle tick's)."""

        fail_results = 2

        def transaction(self, records: Any, dlq: Any, offsets: Any, *rest: Any) -> None:
            records = list(records)
            if records and self.fail_results:
                self.fail_results -= 1
                raise DeliveryError("transaction aborted: broker away")
            super().transaction(records, dlq, offsets, *rest)

    settings = settings_for("exactly_once", **{**WINDOWED, "window_idle_timeout_ms": 10})
    producer = FailWindowDeliveries(broker)
    Run(
        broker, fakeredis.FakeServer(), settings, producer, done=lambda b: bool(b.records(OUT))
    ).worker.run()
    [window] = [json.loads(r.value or b"") for r in broker.records(OUT)]
    assert (window["key"], window["count"], window["sum_amount"]) == ("a", 3, 3)
    assert producer.fail_results == 0


class RevokeDuringBackoff(MemoryProducer):
    """Aborts the first transaction and revokes a partition before the retry."""

    def __init__(self, broker: MemoryBroker, revoke: TP) -> None:
        super().__init__(broker)
        self.revoke_tp = revoke
        self.run: Run | None = None
        self.offsets_seen: list[dict[TP, OffsetMeta]] = []

    def transaction(
        self, records: Any, dlq: Any, offsets: dict[TP, OffsetMeta], *rest: Any
    ) -> None:
        self.offsets_seen.append(dict(offsets))
        if len(self.offsets_seen) == 1:
            assert self.run is not None
            self.run.consumer.revoke([self.revoke_tp])
            raise DeliveryError("transaction aborted: coordinator moved")
        super().transaction(records, dlq, offsets, *rest)


def test_partition_revoked_during_backoff_is_trimmed_from_the_retry() -> None:
    """B5: the retried transaction carries neither outputs nor offsets of a revoked partition."""
    broker = MemoryBroker()
    feed(broker, [{"k": f"r{i}", "v": i} for i in range(20)], partitions=2)
    producer = RevokeDuringBackoff(broker, (IN, 1))
    run = Run(broker, fakeredis.FakeServer(), settings_for("exactly_once"), producer)
    producer.run = run
    run.worker.run()
    assert (IN, 1) in producer.offsets_seen[0], "the first attempt had both partitions"
    assert (IN, 1) not in broker.committed, "no offset committed for a partition we lost"
    keys = sorted((r.key or b"").decode() for r in broker.records(OUT))
    assert keys == sorted(f"r{i}" for i in range(0, 20, 2)), "only partition 0's outputs"


def test_dlq_records_after_the_last_windowed_record_go_out_once_after_a_crash() -> None:
    """B7: poison records after a batch's last windowed record are not redone by the new owner."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    broker.create(IN, 1)
    for t in range(0, 300, 10):
        broker.append(OutRecord(IN, b"a", json.dumps({"k": "a", "ts": t, "amount": 1}).encode()))
    for _ in range(3):
        broker.append(OutRecord(IN, b"a", b"not json"))
    settings = settings_for("exactly_once", **WINDOWED)
    first = Run(broker, server, settings)
    first.producer = AbortAlways(broker, first.worker.request_stop)
    with contextlib.suppress(RillError):
        first.worker.run()
    assert broker.records(DLQ) == [], "the first owner delivered nothing"
    Run(broker, server, settings).worker.run()
    assert _stages(broker) == ["decode"] * 3


def test_lost_redis_reply_keeps_late_and_carried_dlq_entries_once() -> None:
    """B8: on the stale path (reply lost, script ran) every DLQ entry is delivered once."""
    broker = MemoryBroker()
    broker.create(IN, 1)
    for t in (500, 510, 520, 100):  # 100 is behind the watermark (grace 0): late
        broker.append(OutRecord(IN, b"a", json.dumps({"k": "a", "ts": t, "amount": 1}).encode()))
    broker.append(OutRecord(IN, b"a", b"poison"))
    flaky, wrap = wrapping(lambda store: Flaky(store, after=1))

    settings = settings_for("exactly_once", **WINDOWED)
    Run(broker, fakeredis.FakeServer(), settings, store=wrap).worker.run()
    assert flaky[0].after == 0, "the reply was lost once"
    assert _stages(broker) == ["decode", "late"]


def test_record_refused_inside_a_transaction_goes_to_the_dlq() -> None:
    """B10: exactly-once moves a record the broker refuses for good to the DLQ and goes on."""
    broker = MemoryBroker()
    feed(broker, [{"k": "a", "v": i} for i in range(6)], partitions=1)

    def refuse(record: OutRecord) -> RillError | None:
        if record.topic == OUT and b'"v":4' in (record.value or b""):
            return RefusedError("MSG_SIZE_TOO_LARGE", "larger than the broker accepts")
        return None

    producer = MemoryProducer(broker, refuse=refuse)
    Run(broker, fakeredis.FakeServer(), settings_for("exactly_once"), producer).worker.run()
    assert len(broker.records(OUT)) == 5
    [moved] = broker.records(DLQ)
    reason = dlq.reason_of(moved.headers)
    assert (reason[dlq.ERROR_STAGE], reason[dlq.ERROR_CLASS]) == ("produce", "MSG_SIZE_TOO_LARGE")
    assert broker.committed[(IN, 0)][0] == 6


def test_claim_failing_on_assign_loses_nothing() -> None:
    """B1: Redis loading on assignment: partitions wait, then every window is emitted once."""
    broker = MemoryBroker()
    from tests.support.inprocess import events  # noqa: PLC0415 - the shared workload

    stream = events(200)
    feed(broker, stream)
    flaky, wrap = wrapping(lambda store: Flaky(store, claims=3))

    for guarantee in ("at_least_once", "exactly_once"):
        broker.logs.pop((OUT, 0), None)
        broker.committed.clear()
        flaky.clear()
        settings = settings_for(guarantee, **WINDOWED, redis_prefix=guarantee)
        Run(broker, fakeredis.FakeServer(), settings, store=wrap).worker.run()
        assert windows(broker) == expected(stream), guarantee
        assert flaky[0].claims == 0


def test_failed_reconcile_is_not_ticked_past() -> None:
    """B1 (exactly-once): a reconcile whose transaction fails leaves the partition unclaimed:
    no idle tick commits a newer outbox sequence, and the old windows still go out once."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    from tests.support.inprocess import events  # noqa: PLC0415 - the shared workload

    stream = events(200)
    feed(broker, stream)
    settings = settings_for("exactly_once", **{**WINDOWED, "window_idle_timeout_ms": 1})
    first = Run(broker, server, settings)
    first.producer = AbortAlways(broker, first.worker.request_stop)
    with contextlib.suppress(RillError):
        first.worker.run()
    second = Run(broker, server, settings, MemoryProducer(broker, fail_transactions=2))
    second.worker.run()
    got = windows(broker)
    assert all(n == 1 for n in got.values()), "no window twice"
    assert set(expected(stream)) <= set(got), "every window the records closed is out"


def test_at_least_once_reconcile_moves_refused_outbox_records_to_the_dlq() -> None:
    """B14: a re-emitted window the broker refuses goes to the DLQ; it is not acked away."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    broker.create(IN, 1)
    for t in (10, 20, 150):
        broker.append(OutRecord(IN, b"a", json.dumps({"k": "a", "ts": t, "amount": 1}).encode()))
    settings = settings_for(**WINDOWED)

    class StopOnFlush(MemoryProducer):
        def flush(self, timeout_s: float) -> Any:
            first.worker.request_stop()
            raise DeliveryError("records not delivered within the timeout")

    first = Run(broker, server, settings)
    first.producer = StopOnFlush(broker)
    with contextlib.suppress(RillError):
        first.worker.run()
    assert broker.records(OUT) == []

    def refuse(record: OutRecord) -> RillError | None:
        return RefusedError("INVALID_RECORD", "no") if record.topic == OUT else None

    Run(broker, server, settings, MemoryProducer(broker, refuse=refuse)).worker.run()
    moved = [
        r for r in broker.records(DLQ) if dlq.reason_of(r.headers)[dlq.ERROR_STAGE] == "produce"
    ]
    assert moved, "the refused window result is in the DLQ"
    assert json.loads(moved[0].value or b"")["count"] == 2


def test_dlq_entry_source_survives_the_outbox() -> None:
    """A DLQ entry keeps its source partition and offset (what trimming and dedup key on)."""
    from service.state.codec import decode_dlq_entries, encode_dlq_entries  # noqa: PLC0415

    entry = DlqEntry(DLQ, b"k", b"v", [("h", None)], "decode", "DecodeError", "bad", 1, 0, IN, 1, 7)
    [back] = decode_dlq_entries(encode_dlq_entries([entry]))
    assert back == entry
    assert (back.source, back.reason()["source_offset"]) == ((IN, 1), 7)


def test_refused_output_beside_dlq_entries_in_a_transaction() -> None:
    """A refused record in a transaction that also carries DLQ entries (records with header
    lists) is swapped for its DLQ entry; the worker does not crash on it."""
    broker = MemoryBroker()
    feed(broker, [{"k": "a", "v": i} for i in range(4)], partitions=1)
    broker.append(OutRecord(IN, b"a", b"poison"))

    def refuse(record: OutRecord) -> RillError | None:
        if record.topic == OUT and b'"v":2' in (record.value or b""):
            return RefusedError("MSG_SIZE_TOO_LARGE", "larger than the broker accepts")
        return None

    producer = MemoryProducer(broker, refuse=refuse)
    Run(broker, fakeredis.FakeServer(), settings_for("exactly_once"), producer).worker.run()
    assert len(broker.records(OUT)) == 3
    assert _stages(broker) == ["decode", "produce"]


def test_purged_records_of_an_aborted_transaction_are_transient() -> None:
    """Records purged when a transaction aborts (a rebalance fenced it) are retried, not
    moved to the DLQ as refused."""
    from confluent_kafka import KafkaError  # noqa: PLC0415 - only the mapping test needs it

    from service.kafka.errors import classify  # noqa: PLC0415

    for code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
        assert isinstance(classify(KafkaError(code)), DeliveryError)
    assert isinstance(classify(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)), RefusedError)


def test_offsets_reset_below_the_applied_offset_are_counted_and_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """B16: records skipped as already applied (offsets reset, topic recreated) are counted
    and logged, not skipped silently; no window is emitted twice."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    from tests.support.inprocess import events  # noqa: PLC0415 - the shared workload

    feed(broker, events(100))
    settings = settings_for(**WINDOWED)
    Run(broker, server, settings).worker.run()
    first = windows(broker)
    broker.committed.clear()  # an operator resets the group's offsets to the start
    again = Run(broker, server, settings)
    again.worker.run()
    replayed = again.worker.metrics.records_replayed.labels(IN)._value.get()
    assert replayed == 100
    assert "records at or below the applied offset skipped" in capsys.readouterr().out
    assert windows(broker) == first, "nothing applied twice, nothing emitted twice"


class UnknownOutcome(MemoryProducer):
    """The first transactions raise TransactionUnknownError, having committed or not."""

    def __init__(self, broker: MemoryBroker, outcomes: list[bool]) -> None:
        super().__init__(broker)
        self.outcomes = outcomes

    def transaction(self, *args: Any) -> None:
        if not self.outcomes:
            super().transaction(*args)
            return
        if self.outcomes.pop(0):
            super().transaction(*args)
        raise TransactionUnknownError("transaction outcome unknown: Local: Timed out")


@pytest.mark.parametrize("outcomes", [[True], [False], [False, True]], ids=str)
def test_commit_of_unknown_outcome_is_settled_by_the_committed_offsets(
    outcomes: list[bool],
) -> None:
    """A commit that never answered is neither redone blindly (duplicates when it did
    commit) nor taken as done (loss when it did not): the producer is settled, then the
    group's committed offsets tell."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    from tests.support.inprocess import events  # noqa: PLC0415 - the shared workload

    stream = events(200)
    feed(broker, stream)
    producer = UnknownOutcome(broker, list(outcomes))
    run = Run(broker, server, settings_for("exactly_once", **WINDOWED), producer)
    run.worker.run()
    got = windows(broker)
    assert all(n == 1 for n in got.values()), "no window twice"
    assert set(expected(stream)) <= set(got), "every window the records closed is out"
    assert producer.settled >= len(outcomes)


class LoseOne:
    """Apply number `at` runs the other partitions' scripts and answers `lost` for `lost`;
    from then on a claim of `lost` finds it gone too (RILL_STATE_LOSS=fail holds it)."""

    def __init__(self, inner: WindowStore, lost: TP, at: int = 1) -> None:
        self.inner, self.lost, self.at = inner, lost, at
        self.applies, self.gone = 0, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply(self, calls: dict[TP, Any]) -> Any:
        self.applies += 1
        if self.applies == self.at and self.lost in calls:
            replies = self.inner.apply({tp: c for tp, c in calls.items() if tp != self.lost})
            self.gone = True
            return {**replies, self.lost: ApplyReply("lost")}
        return self.inner.apply(calls)

    def claim(self, tp: TP, expect: int = 0) -> Any:
        if self.gone and tp == self.lost:
            raise StateLostError([tp], found=0, expected=1)
        return self.inner.claim(tp, expect)


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "in-turn"])
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_state_lost_for_one_partition_keeps_the_others_exact(
    guarantee: str, overlap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis loses one partition's state in a batch whose other partitions' scripts ran.
    Those are claimed again too: fetched again (with the records after the batch in the
    same call) they would be found applied, `stale`, and the later records skipped."""
    from tests.support.inprocess import events  # noqa: PLC0415 - the shared workload

    broker, stream = MemoryBroker(), events(400)
    feed(broker, stream)
    stores, wrap = wrapping(lambda store: LoseOne(store, (IN, 0)))

    # Batch 1: partition 0 whole and the start of 1; batch 2: the rest of partition 1.
    settings = settings_for(guarantee, **WINDOWED, batch_size=250, state_overlap=overlap)
    run = Run(broker, fakeredis.FakeServer(), settings, store=wrap)
    consume = MemoryConsumer.consume

    def until_partition_1_is_done(self: MemoryConsumer, most: int, wait_s: float) -> Any:
        # Partition 0 stays held, so the input never drains: stop when 1 is read and
        # nothing is on its way any more.
        got = consume(self, most, wait_s)
        if not got and self.positions.get((IN, 1)) == 200 and not run.busy:
            run.worker.request_stop()
        return got

    monkeypatch.setattr(MemoryConsumer, "consume", until_partition_1_is_done)
    run.worker.run()
    assert stores[0].gone
    kept = [e for i, e in enumerate(stream) if i % 2 == 1]  # partition 1's
    got = windows(broker)
    assert set(got) == set(expected(kept, partitions=1)), "partition 1's windows, all of them"
    if guarantee == "exactly_once":
        assert all(n == 1 for n in got.values())


class StaleThenClaimFails:
    """The first apply runs every script, but one partition's reply comes back `stale` (as
    after a lost reply), and the claim that follows fails once (Redis away)."""

    def __init__(self, inner: WindowStore, stale: TP) -> None:
        self.inner, self.stale = inner, stale
        self.applies, self.claim_fails, self.injected = 0, 0, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply(self, calls: dict[TP, Any]) -> Any:
        self.applies += 1
        replies = self.inner.apply(calls)
        if self.applies == 1 and self.stale in replies and len(replies) > 1:
            replies[self.stale] = ApplyReply("stale", applied=replies[self.stale].applied)
            self.claim_fails, self.injected = 1, True
        return replies

    def claim(self, tp: TP, expect: int = 0) -> Any:
        if self.claim_fails:
            self.claim_fails = 0
            raise StateError("Redis does not answer")
        return self.inner.claim(tp, expect)


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "in-turn"])
def test_failed_claim_after_a_lost_reply_loses_no_partition(overlap: bool) -> None:
    """A lost reply's claim fails after the batch's other replies were taken: retrying the
    round trip would skip those partitions' records (already applied) and drop their
    results. Every partition of the batch is claimed again instead: each window once."""
    from tests.support.inprocess import events  # noqa: PLC0415 - the shared workload

    broker, stream = MemoryBroker(), events(400)
    feed(broker, stream)
    stores, wrap = wrapping(lambda store: StaleThenClaimFails(store, (IN, 1)))

    settings = settings_for("exactly_once", **WINDOWED, batch_size=250, state_overlap=overlap)
    Run(broker, fakeredis.FakeServer(), settings, store=wrap).worker.run()
    assert stores[0].injected, "a reply came back stale"
    assert stores[0].claim_fails == 0, "and the claim after it failed once"
    got = windows(broker)
    assert all(n == 1 for n in got.values()), "no window twice"
    assert set(expected(stream)) <= set(got), "every window the records closed is out"
