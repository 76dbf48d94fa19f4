"""The worker loop over in-memory twins: the real scripts on fakeredis, Kafka as lists.

These pin the orchestration (claim, window step, deliver, acknowledge, back-pressure) and
both guarantees without a broker; tests/integration runs the same flows on the real ones.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from service.errors import RefusedError, RillError
from service.processing import dlq
from service.records import OutRecord
from service.state.store import WindowStore
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
from tests.support.inprocess import (
    events as make_events,
)
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer


def test_stateless_batch_goes_to_sink_and_dlq_and_commits() -> None:
    """Good records reach the sink, bad ones the DLQ with a reason; every offset is committed."""
    broker = MemoryBroker()
    events: list[Any] = [{"k": "a", "v": i} for i in range(10)]
    feed(broker, events, partitions=1)
    broker.append(OutRecord(IN, b"x", b"not json"))
    run = Run(broker, fakeredis.FakeServer(), settings_for())
    run.worker.run()
    assert len(broker.records(OUT)) == 10
    [bad] = broker.records(DLQ)
    assert dlq.reason_of(bad.headers)[dlq.ERROR_STAGE] == "decode"
    assert bad.value == b"not json", "original bytes kept"
    assert broker.committed[(IN, 0)] == (11, "")
    assert run.consumer.closed


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "in-turn"])
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_windowed_results_equal_the_model(guarantee: str, overlap: bool) -> None:
    """Tumbling windows closed by the watermark are emitted once each, in both modes, with
    the Redis round trip overlapped with the next batch (RILL_STATE_OVERLAP) or not."""
    broker, events = MemoryBroker(), make_events(300)
    feed(broker, events)
    settings = settings_for(guarantee, **WINDOWED, state_overlap=overlap, batch_size=40)
    Run(broker, fakeredis.FakeServer(), settings).worker.run()
    assert windows(broker) == expected(events)
    if guarantee == "exactly_once":
        offset, meta = broker.committed[(IN, 0)]
        assert offset == 150
        assert meta.startswith("rill-outbox-seq=")


def test_failed_transactions_are_retried_without_duplicates() -> None:
    """Aborted transactions are retried by back-pressure; each window is still emitted once."""
    broker, events = MemoryBroker(), make_events(200)
    feed(broker, events)
    producer = MemoryProducer(broker, fail_transactions=3)
    Run(
        broker, fakeredis.FakeServer(), settings_for("exactly_once", **WINDOWED), producer
    ).worker.run()
    assert windows(broker) == expected(events)
    assert producer.fail_transactions == 0


def test_exactly_once_new_owner_reemits_the_outbox_once() -> None:
    """State applied but never delivered is re-emitted by the next owner, exactly once."""
    broker, server, events = MemoryBroker(), fakeredis.FakeServer(), make_events(200)
    feed(broker, events)
    settings = settings_for("exactly_once", **WINDOWED)
    first = Run(broker, server, settings)
    first.producer = AbortAlways(broker, first.worker.request_stop)
    with pytest.raises(RillError, match="stopped while kafka was unavailable"):
        first.worker.run()
    assert broker.records(OUT) == [], "nothing delivered by the first owner"
    Run(broker, server, settings).worker.run()
    assert windows(broker) == expected(events)


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "in-turn"])
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize(("before", "after"), [(3, 0), (0, 2)])
def test_store_failures_are_retried_and_change_nothing(
    guarantee: str, before: int, after: int, overlap: bool
) -> None:
    """Redis failing before or after the script ran: windows still emitted exactly once."""
    broker, events = MemoryBroker(), make_events(240)
    feed(broker, events)
    flaky: list[Flaky] = []

    def wrap(store: WindowStore) -> WindowStore:
        flaky.append(Flaky(store, before, after))
        return flaky[0]  # type: ignore[return-value]

    settings = settings_for(guarantee, **WINDOWED, state_overlap=overlap, batch_size=40)
    run = Run(broker, fakeredis.FakeServer(), settings, store=wrap)
    run.worker.run()
    assert windows(broker) == expected(events)
    assert flaky[0].before == flaky[0].after == 0
    retries = run.worker.metrics.retries.labels("redis")._value.get()
    assert retries >= before + after


def test_refused_records_go_to_the_dlq_and_retry_never_drops() -> None:
    """A sink record Kafka refuses lands in the DLQ; a DLQ refusing too is retried, not skipped."""
    broker = MemoryBroker()
    feed(broker, [{"k": "a", "v": i} for i in range(5)], partitions=1)
    refusals = {"dlq": 2}

    def refuse(record: OutRecord) -> RillError | None:
        if record.topic == OUT and b'"v":3' in (record.value or b""):
            return RefusedError("MSG_SIZE_TOO_LARGE", "too large")
        if record.topic == DLQ and refusals["dlq"]:
            refusals["dlq"] -= 1
            return RefusedError("TOPIC_AUTHORIZATION_FAILED", "not now")
        return None

    run = Run(broker, fakeredis.FakeServer(), settings_for(), MemoryProducer(broker, refuse=refuse))
    run.worker.run()
    assert len(broker.records(OUT)) == 4
    dlq_records = broker.records(DLQ)
    assert dlq_records, "the refused record is in the DLQ"
    assert any(dlq.reason_of(r.headers)[dlq.ERROR_STAGE] == "produce" for r in dlq_records)
    assert broker.committed[(IN, 0)] == (5, "")


def test_partition_revoked_while_its_round_trip_is_under_way_goes_out_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RILL_STATE_OVERLAP: a rebalance takes a partition while its batch's Redis apply is
    in flight. The old owner delivers nothing of it; the new owner re-emits the outbox:
    every window once (exactly-once)."""
    broker, server, events = MemoryBroker(), fakeredis.FakeServer(), make_events(400)
    feed(broker, events)
    for _ in range(3):  # DLQ entries of the partition in flight
        broker.append(OutRecord(IN, b"a", b"poison"), partition=1)
    # Batch 1: partition 0 whole and the start of 1; batch 2: the rest of partition 1.
    settings = settings_for("exactly_once", **WINDOWED, batch_size=250)
    calls = {"n": 0}
    consume = MemoryConsumer.consume

    def revoking(self: MemoryConsumer, max_records: int, timeout_s: float) -> list[Any]:
        calls["n"] += 1
        if calls["n"] == 3 and (IN, 1) in self.positions:
            assert first.busy, "a round trip is under way"
            self.revoke([(IN, 1)])
        return consume(self, max_records, timeout_s)

    monkeypatch.setattr(MemoryConsumer, "consume", revoking)
    first = Run(broker, server, settings)
    first.worker.run()
    monkeypatch.setattr(MemoryConsumer, "consume", consume)
    Run(broker, server, settings).worker.run()
    assert windows(broker) == expected(events)
    reasons = [dlq.reason_of(r.headers) for r in broker.records(DLQ)]
    offsets = sorted(int(r[dlq.SOURCE_OFFSET]) for r in reasons)
    assert offsets == [200, 201, 202], "each DLQ entry once"
