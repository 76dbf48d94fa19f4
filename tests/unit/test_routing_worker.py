"""Routing and the co-partition check through a whole Worker over the in-memory twins."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest

from service.errors import CopartitionError
from service.processing import dlq
from service.processing.partitioning import java_partition, librdkafka_partition
from service.records import OutRecord
from service.runtime import copartition, report
from tests.support.inprocess import DLQ, IN, OUT, WINDOWED, Run, events, feed, settings_for
from tests.support.memory_kafka import MemoryBroker, MemoryProducer

MODES = ["at_least_once", "exactly_once"]


class Lines:
    """Stands in for a module's structlog logger: keeps each line's event and fields
    (structlog's capture_logs misses loggers cached by tests that ran before)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append({"event": event, **fields})

    def of(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["event"] == event]


ROUTED = {"route_field": "region", "route_topics": "eu,us"}


def _feed_regions(broker: MemoryBroker, n: int) -> list[dict[str, Any]]:
    regions = ["eu", "us", "apac"]
    rows = [{"k": f"c{i % 5}", "region": regions[i % 3], "n": i} for i in range(n)]
    feed(broker, rows, partitions=2)
    return rows


def _values(broker: MemoryBroker, topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in broker.records(topic)]


@pytest.mark.parametrize("guarantee", MODES)
def test_records_reach_the_topic_their_field_names(guarantee: str) -> None:
    """Each record reaches its routed topic once; one naming another topic goes to the DLQ
    with stage route; the sink gets nothing; per-topic counts are exported."""
    broker = MemoryBroker()
    rows = _feed_regions(broker, 30)
    run = Run(broker, fakeredis.FakeServer(), settings_for(guarantee, **ROUTED))
    run.worker.run()
    for region in ("eu", "us"):
        got = sorted(v["n"] for v in _values(broker, region))
        assert got == [r["n"] for r in rows if r["region"] == region]
    assert broker.records(OUT) == []
    bad = broker.records(DLQ)
    assert len(bad) == 10
    assert {dlq.reason_of(r.headers)[dlq.ERROR_STAGE] for r in bad} == {"route"}
    registry = run.worker.metrics.registry
    for region in ("eu", "us"):
        assert (
            registry.get_sample_value("rill_records_routed_total", {"topic": IN, "output": region})
            == 10
        )
    assert (
        registry.get_sample_value(
            "rill_records_dlq_total", {"topic": IN, "stage": "route", "reason": "RecordError"}
        )
        == 10
    )
    assert sum(o for (o, _m) in broker.committed.values()) == 30


def test_routed_outputs_of_a_batch_commit_in_its_one_transaction() -> None:
    """Exactly-once: aborted transactions leave no routed output; the retry writes each once."""
    broker = MemoryBroker()
    rows = _feed_regions(broker, 30)
    producer = MemoryProducer(broker, fail_transactions=2)
    run = Run(broker, fakeredis.FakeServer(), settings_for("exactly_once", **ROUTED), producer)
    run.worker.run()
    assert producer.fail_transactions == 0
    assert len(broker.records("eu")) + len(broker.records("us")) == 20
    routed = sorted(v["n"] for t in ("eu", "us") for v in _values(broker, t))
    assert routed == [r["n"] for r in rows if r["region"] != "apac"]


@pytest.mark.parametrize("guarantee", MODES)
def test_window_results_are_routed(guarantee: str) -> None:
    """In a windowed pipeline the route reads the window result: key c0 and c1 have their
    topics, c2's windows go to the DLQ (stage route), the sink gets none."""
    broker = MemoryBroker()
    feed(broker, events(300))
    settings = settings_for(guarantee, **WINDOWED, route_field="key", route_topics="c0,c1")
    Run(broker, fakeredis.FakeServer(), settings).worker.run()
    assert {v["key"] for v in _values(broker, "c0")} == {"c0"}
    assert {v["key"] for v in _values(broker, "c1")} == {"c1"}
    assert broker.records(OUT) == []
    bad = broker.records(DLQ)
    assert bad
    assert {dlq.reason_of(r.headers)[dlq.ERROR_STAGE] for r in bad} == {"route"}
    assert {json.loads(r.value or b"")["key"] for r in bad} == {"c2"}


def _feed_keyed(broker: MemoryBroker, n: int, partitions: int, place: Any) -> None:
    broker.create(IN, partitions)
    for i in range(n):
        key = f"c{i % 7}"
        row = {"k": key, "ts": 10 * i, "amount": i}
        record = OutRecord(IN, key.encode(), json.dumps(row).encode())
        broker.append(record, partition=place(key.encode(), partitions, i))


def _not_copartitioned(registry: Any) -> float | None:
    return registry.get_sample_value("rill_records_not_copartitioned_total", {"topic": IN})


@pytest.mark.parametrize(
    "place",
    [
        lambda key, n, _i: java_partition(key, n),
        lambda key, n, _i: librdkafka_partition(key, n),
    ],
    ids=["murmur2", "crc32"],
)
def test_input_keyed_by_the_window_key_passes_the_check(
    place: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input partitioned by either default partitioner is co-partitioned: nothing counted."""
    logs = Lines()
    monkeypatch.setattr(copartition, "log", logs)
    broker = MemoryBroker()
    _feed_keyed(broker, 200, 4, place)
    run = Run(broker, fakeredis.FakeServer(), settings_for(**WINDOWED), input_partitions=4)
    run.worker.run()
    assert broker.records(OUT)
    assert _not_copartitioned(run.worker.metrics.registry) == 0
    assert logs.of("window input not co-partitioned") == []


@pytest.mark.parametrize("guarantee", MODES)
def test_input_not_keyed_by_the_window_key_is_counted_and_warned(
    guarantee: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round-robin input: every misplaced record is counted, a warning names group_by, and
    the windows are still computed (warn is the default)."""
    logs = Lines()
    monkeypatch.setattr(copartition, "log", logs)
    broker = MemoryBroker()
    _feed_keyed(broker, 200, 4, lambda _key, n, i: i % n)
    misplaced = sum(
        1
        for i in range(200)
        if i % 4
        not in (
            java_partition(f"c{i % 7}".encode(), 4),
            librdkafka_partition(f"c{i % 7}".encode(), 4),
        )
    )
    run = Run(
        broker, fakeredis.FakeServer(), settings_for(guarantee, **WINDOWED), input_partitions=4
    )
    run.worker.run()
    assert misplaced > 0
    assert _not_copartitioned(run.worker.metrics.registry) == misplaced
    warnings = logs.of("window input not co-partitioned")
    assert len(warnings) == 1, "rate-limited: one line per interval"
    assert "group_by" in warnings[0]["fix"]
    assert warnings[0]["setting"] == "RILL_COPARTITION_CHECK"
    assert broker.records(OUT), "windows still computed"


@pytest.mark.parametrize("guarantee", MODES)
def test_fail_refuses_to_window_input_not_keyed_by_the_window_key(guarantee: str) -> None:
    """RILL_COPARTITION_CHECK=fail stops the worker before the batch is windowed, naming
    the setting and group_by; nothing is emitted or committed."""
    broker = MemoryBroker()
    _feed_keyed(broker, 200, 4, lambda _key, n, i: i % n)
    settings = settings_for(guarantee, **WINDOWED, copartition_check="fail")
    run = Run(broker, fakeredis.FakeServer(), settings, input_partitions=4)
    with pytest.raises(CopartitionError, match="RILL_COPARTITION_CHECK=fail") as caught:
        run.worker.run()
    assert "group_by" in str(caught.value)
    assert broker.records(OUT) == []
    assert all(offset <= 0 for offset, _meta in broker.committed.values())


def test_off_and_stateless_pipelines_are_not_checked() -> None:
    """`off` checks nothing; a stateless pipeline has no window key to check."""
    for settings in (
        settings_for(**WINDOWED, copartition_check="off"),
        settings_for(copartition_check="fail"),
    ):
        broker = MemoryBroker()
        _feed_keyed(broker, 100, 4, lambda _key, n, i: i % n)
        run = Run(broker, fakeredis.FakeServer(), settings, input_partitions=4)
        run.worker.run()
        assert broker.records(OUT)
        assert _not_copartitioned(run.worker.metrics.registry) == 0


def test_window_results_an_idle_tick_cannot_route_are_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows closed by the idle tick (not by a batch) whose route is refused get their
    DLQ log line too: one line per DLQ record."""
    logs = Lines()
    monkeypatch.setattr(report, "log", logs)
    broker = MemoryBroker()
    feed(broker, events(30))
    settings = settings_for(
        **{**WINDOWED, "window_idle_timeout_ms": 1}, route_field="key", route_topics="c0,c1"
    )
    run = Run(
        broker,
        fakeredis.FakeServer(),
        settings,
        done=lambda b: (
            len({json.loads(r.value or b"")["window_start"] for r in b.records(DLQ)}) == 3
        ),
    )
    run.worker.run()
    bad = broker.records(DLQ)
    assert {json.loads(r.value or b"")["key"] for r in bad} == {"c2"}
    assert {json.loads(r.value or b"")["window_start"] for r in bad} == {0, 100, 200}
    lines = [e for e in logs.of("record to DLQ") if e["stage"] == "route"]
    assert len(lines) == len(bad)


def test_windows_route_by_a_record_field_carried_by_an_aggregate() -> None:
    """`last:region as region` puts a record field on the window result, and
    RILL_ROUTE_FIELD=region routes each window by it."""
    broker = MemoryBroker()
    broker.create(IN, 1)
    region = {"c0": "eu", "c1": "us", "c2": "eu"}
    for i in range(300):
        key = f"c{i % 3}"
        row = {"k": key, "ts": 10 * i, "amount": i, "region": region[key]}
        broker.append(OutRecord(IN, key.encode(), json.dumps(row).encode()))
    settings = settings_for(
        **{**WINDOWED, "aggregates": "count,last:region as region"},
        route_field="region",
        route_topics="eu,us",
    )
    Run(broker, fakeredis.FakeServer(), settings).worker.run()
    assert {v["key"] for v in _values(broker, "eu")} == {"c0", "c2"}
    assert {v["key"] for v in _values(broker, "us")} == {"c1"}
    assert len(broker.records("us")) == 29, "every window the watermark closed"
    assert broker.records(DLQ) == []
