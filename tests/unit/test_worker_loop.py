"""The worker loop over in-memory twins: the real scripts on fakeredis, Kafka as lists.

These pin the orchestration (claim, window step, deliver, acknowledge, back-pressure) and
both guarantees without a broker; tests/integration runs the same flows on the real ones.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from service.app import build_plan
from service.config import Settings, load_settings
from service.errors import RillError, StateError
from service.processing import dlq
from service.processing.windows import WindowPlan
from service.records import TP, OutRecord
from service.runtime.edges import state_layout
from service.runtime.ports import Edges
from service.runtime.worker import Worker
from service.state.memory import MemoryWindowStore
from service.state.store import Applied, ApplyCall, WindowStore
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer

IN, OUT, DLQ = "in", "out", "dlq"
WINDOWED = {
    "window_type": "tumbling",
    "window_size_ms": 100,
    "window_grace_ms": 0,
    "window_time_field": "ts",
    "window_idle_timeout_ms": 0,
    "aggregates": "count,sum:amount",
}


def _settings(guarantee: str = "at_least_once", **extra: Any) -> Settings:
    base: dict[str, Any] = {"window_type": "none", **extra}
    return load_settings(
        input_topic=IN,
        output_topic=OUT,
        dlq_topic=DLQ,
        input_format="json",
        input_wire="plain",
        output_format="json",
        output_wire="plain",
        filter_field="",
        key_by="k",
        metrics_port=0,
        processing_guarantee=guarantee,
        retry_base_s=0.001,
        retry_max_s=0.01,
        breaker_reset_s=0.01,
        **base,
    )


class Run:
    """One worker over shared in-memory Kafka and Redis; stops when its input is drained."""

    def __init__(
        self,
        broker: MemoryBroker,
        server: fakeredis.FakeServer,
        settings: Settings,
        producer: MemoryProducer | None = None,
        store: Callable[[WindowStore], WindowStore] = lambda s: s,
    ) -> None:
        self.producer = producer or MemoryProducer(broker)
        self.worker = Worker(
            settings, build_plan(settings), edges=self._edges(broker, server, store)
        )

    def _edges(
        self,
        broker: MemoryBroker,
        server: fakeredis.FakeServer,
        wrap: Callable[[WindowStore], WindowStore],
    ) -> Edges:
        def consumer(s: Settings, on_assign: Any, on_revoke: Any, _stats: Any) -> MemoryConsumer:
            self.consumer = MemoryConsumer(
                broker, s.input_topic, on_assign, on_revoke, self.worker.request_stop
            )
            return self.consumer

        def store(s: Settings, window: WindowPlan) -> WindowStore:
            return wrap(MemoryWindowStore(state_layout(s, window), server))

        return Edges(consumer, lambda _s: self.producer, store, lambda _s: None)


def _feed(broker: MemoryBroker, events: list[dict[str, Any]], partitions: int = 2) -> None:
    broker.create(IN, partitions)
    for i, event in enumerate(events):
        record = OutRecord(IN, str(event.get("k", "")).encode(), json.dumps(event).encode())
        broker.append(record, partition=i % partitions)


def _events(n: int) -> list[dict[str, Any]]:
    return [{"k": f"c{i % 3}", "ts": 10 * i, "amount": i} for i in range(n)]


def _windows(broker: MemoryBroker) -> Counter[tuple[str, int, int, int]]:
    out: Counter[tuple[str, int, int, int]] = Counter()
    for r in broker.records(OUT):
        v = json.loads(r.value or b"")
        out[(v["key"], v["window_start"], v["count"], v["sum_amount"])] += 1
    return out


def _expected(
    events: list[dict[str, Any]], partitions: int = 2
) -> Counter[tuple[str, int, int, int]]:
    """Windows the watermark closed: per partition, windows ending at or before its max ts."""
    per: dict[tuple[int, str, int], list[int]] = {}
    top: dict[int, int] = {}
    for i, e in enumerate(events):
        p = i % partitions
        per.setdefault((p, e["k"], e["ts"] - e["ts"] % 100), []).append(e["amount"])
        top[p] = max(top.get(p, 0), e["ts"])
    return Counter(
        (k, start, len(a), sum(a)) for (p, k, start), a in per.items() if start + 100 <= top[p]
    )


def test_stateless_batch_goes_to_sink_and_dlq_and_commits() -> None:
    """Good records reach the sink, bad ones the DLQ with a reason; every offset is committed."""
    broker = MemoryBroker()
    events: list[Any] = [{"k": "a", "v": i} for i in range(10)]
    _feed(broker, events, partitions=1)
    broker.append(OutRecord(IN, b"x", b"not json"))
    run = Run(broker, fakeredis.FakeServer(), _settings())
    run.worker.run()
    assert len(broker.records(OUT)) == 10
    [bad] = broker.records(DLQ)
    assert dlq.reason_of(bad.headers)[dlq.ERROR_STAGE] == "decode"
    assert bad.value == b"not json", "original bytes kept"
    assert broker.committed[(IN, 0)] == (11, "")
    assert run.consumer.closed


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_windowed_results_equal_the_model(guarantee: str) -> None:
    """Tumbling windows closed by the watermark are emitted once each, in both modes."""
    broker, events = MemoryBroker(), _events(300)
    _feed(broker, events)
    Run(broker, fakeredis.FakeServer(), _settings(guarantee, **WINDOWED)).worker.run()
    assert _windows(broker) == _expected(events)
    if guarantee == "exactly_once":
        offset, meta = broker.committed[(IN, 0)]
        assert offset == 150
        assert meta.startswith("rill-outbox-seq=")


def test_failed_transactions_are_retried_without_duplicates() -> None:
    """Aborted transactions are retried by back-pressure; each window is still emitted once."""
    broker, events = MemoryBroker(), _events(200)
    _feed(broker, events)
    producer = MemoryProducer(broker, fail_transactions=3)
    Run(
        broker, fakeredis.FakeServer(), _settings("exactly_once", **WINDOWED), producer
    ).worker.run()
    assert _windows(broker) == _expected(events)
    assert producer.fail_transactions == 0


class _AbortAlways(MemoryProducer):
    """A producer whose transactions all abort, which stops the worker after the first."""

    def __init__(self, broker: MemoryBroker, stop: Callable[[], None]) -> None:
        super().__init__(broker, fail_transactions=10**9)
        self.stop = stop

    def transaction(self, *args: Any, **kwargs: Any) -> None:
        self.stop()
        super().transaction(*args, **kwargs)


def test_exactly_once_new_owner_reemits_the_outbox_once() -> None:
    """State applied but never delivered is re-emitted by the next owner, exactly once."""
    broker, server, events = MemoryBroker(), fakeredis.FakeServer(), _events(200)
    _feed(broker, events)
    settings = _settings("exactly_once", **WINDOWED)
    first = Run(broker, server, settings)
    first.producer = _AbortAlways(broker, first.worker.request_stop)
    with pytest.raises(RillError, match="stopped while kafka was unavailable"):
        first.worker.run()
    assert broker.records(OUT) == [], "nothing delivered by the first owner"
    Run(broker, server, settings).worker.run()
    assert _windows(broker) == _expected(events)


class _Flaky:
    """A store whose apply fails on cue: before the script ran, or after (reply lost)."""

    def __init__(self, inner: WindowStore, before: int = 0, after: int = 0) -> None:
        self.inner, self.before, self.after = inner, before, after

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply(self, calls: dict[TP, ApplyCall]) -> dict[TP, Applied]:
        if self.before:
            self.before -= 1
            raise StateError("Redis does not answer")
        replies = self.inner.apply(calls)
        if self.after and calls:
            self.after -= 1
            raise StateError("reply lost")
        return replies


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize(("before", "after"), [(3, 0), (0, 2)])
def test_store_failures_are_retried_and_change_nothing(
    guarantee: str, before: int, after: int
) -> None:
    """Redis failing before or after the script ran: windows still emitted exactly once."""
    broker, events = MemoryBroker(), _events(240)
    _feed(broker, events)
    flaky: list[_Flaky] = []

    def wrap(store: WindowStore) -> WindowStore:
        flaky.append(_Flaky(store, before, after))
        return flaky[0]  # type: ignore[return-value]

    run = Run(broker, fakeredis.FakeServer(), _settings(guarantee, **WINDOWED), store=wrap)
    run.worker.run()
    assert _windows(broker) == _expected(events)
    assert flaky[0].before == flaky[0].after == 0
    retries = run.worker.metrics.retries.labels("redis")._value.get()
    assert retries >= before + after


def test_refused_records_go_to_the_dlq_and_retry_never_drops() -> None:
    """A sink record Kafka refuses lands in the DLQ; a DLQ refusing too is retried, not skipped."""
    broker = MemoryBroker()
    _feed(broker, [{"k": "a", "v": i} for i in range(5)], partitions=1)
    refusals = {"dlq": 2}

    def refuse(record: OutRecord) -> RillError | None:
        from service.errors import RefusedError  # noqa: PLC0415 - local to the fault

        if record.topic == OUT and b'"v":3' in (record.value or b""):
            return RefusedError("MSG_SIZE_TOO_LARGE", "too large")
        if record.topic == DLQ and refusals["dlq"]:
            refusals["dlq"] -= 1
            return RefusedError("TOPIC_AUTHORIZATION_FAILED", "not now")
        return None

    run = Run(broker, fakeredis.FakeServer(), _settings(), MemoryProducer(broker, refuse=refuse))
    run.worker.run()
    assert len(broker.records(OUT)) == 4
    dlq_records = broker.records(DLQ)
    assert dlq_records, "the refused record is in the DLQ"
    assert any(dlq.reason_of(r.headers)[dlq.ERROR_STAGE] == "produce" for r in dlq_records)
    assert broker.committed[(IN, 0)] == (5, "")
