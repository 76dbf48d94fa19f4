"""A schema registry that does not answer: asked at most once per interval, records of
its pending ids wait in Kafka (then the DLQ after RILL_SCHEMA_REGISTRY_WAIT_S), cached
ids keep flowing, and nothing is lost."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from typing import Any

import fakeredis
from confluent_kafka.schema_registry import Schema

from service.config import load_settings
from service.kafka.registry_client import RegistryResolver
from service.processing import dlq
from service.records import InRecord, OutRecord
from service.serde.json_registry import prepare_json
from service.serde.schema_cache import SchemaCache, split_waiting
from tests.support.inprocess import DLQ, IN, OUT, Run
from tests.support.memory_kafka import MemoryBroker

ANY_OBJECT = json.dumps({"type": "object"})
DOWN_URL = "http://127.0.0.1:1"  # nothing listens: refused at once, as a registry that is away


class Clock:
    """Monotonic seconds the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _value(schema_id: int, body: dict[str, Any]) -> bytes:
    return struct.pack(">bI", 0, schema_id) + json.dumps(body).encode()


def _rec(schema_id: int, partition: int = 0, offset: int = 0) -> InRecord:
    return InRecord("t", partition, offset, None, _value(schema_id, {}), None, 0)


def _down(clock: Clock, wait_s: float = 60.0) -> RegistryResolver:
    cache = SchemaCache(prepare_json)
    resolver = RegistryResolver(
        {"url": DOWN_URL, "timeout": 1, "max.retries": 0},
        cache,
        retries=3,
        backoff_s=0.0,
        retry_interval_s=10.0,
        wait_s=wait_s,
        clock=clock,
    )
    return resolver.start()


def test_a_registry_that_does_not_answer_is_asked_at_most_once_per_interval() -> None:
    """After a new id's retries fail, other ids wait without a request until the interval."""
    clock = Clock()
    resolver = _down(clock)
    assert resolver.prefetch([_rec(5)]) == {5}
    assert resolver.lookups == 3, "a new id gets its retries while the registry is thought up"
    for _ in range(20):  # twenty batches in the same interval, with new ids
        assert resolver.prefetch([_rec(5), _rec(6), _rec(7)]) == {5, 6, 7}
    assert resolver.lookups == 3, "no request until the interval passed"
    clock.now += 10.0
    assert resolver.prefetch([_rec(5), _rec(6), _rec(7)]) == {5, 6, 7}
    assert resolver.lookups == 4, "one attempt per interval, not one per id"
    assert resolver.cache is not None
    assert resolver.cache.failed == {}, "waiting records are no DLQ entries yet"


def test_records_of_a_pending_id_go_to_the_dlq_after_the_wait() -> None:
    """Past RILL_SCHEMA_REGISTRY_WAIT_S a pending id is a DLQ reason (replayable)."""
    clock = Clock()
    resolver = _down(clock, wait_s=30.0)
    resolver.prefetch([_rec(5)])
    clock.now += 31.0
    assert resolver.prefetch([_rec(5)]) == set()
    assert resolver.cache is not None
    assert "schema registry unavailable for schema id 5" in resolver.cache.failed[5]


def test_split_waiting_holds_a_partition_from_its_first_pending_record() -> None:
    """Records before the pending one and other partitions go on; the rest waits in order."""
    records = [
        _rec(1, 0, 0),
        _rec(1, 1, 0),
        _rec(2, 0, 1),
        _rec(1, 1, 1),
        _rec(1, 0, 2),
    ]
    ready, held = split_waiting(records, {2})
    assert [(r.partition, r.offset) for r in ready] == [(0, 0), (1, 0), (1, 1)]
    assert [(r.partition, r.offset) for r in held] == [(0, 1), (0, 2)]


class FlakyRegistry:
    """A registry client that refuses the first `down` lookups, then answers."""

    def __init__(self, schemas: dict[int, str], down: int) -> None:
        self.schemas = schemas
        self.down = down

    def get_schema(self, schema_id: int) -> Schema:
        if self.down > 0:
            self.down -= 1
            raise ConnectionError("registry does not answer")
        return Schema(self.schemas[schema_id], "JSON")

    def close(self) -> None:
        """Nothing to close."""


class FlakyResolver(RegistryResolver):
    """The real resolver over `FlakyRegistry`."""

    def __init__(self, cache: SchemaCache, registry: FlakyRegistry, **kwargs: Any) -> None:
        super().__init__({"url": "unused"}, cache, retries=2, backoff_s=0.0, **kwargs)
        self.registry = registry

    def start(self) -> FlakyResolver:
        self._client = self.registry  # type: ignore[assignment]
        return self


def _run(down: int, wait_s: float) -> tuple[MemoryBroker, FlakyResolver]:
    """A worker over two partitions; partition 1 has records of a new id (2) mid-way."""
    broker = MemoryBroker()
    broker.create(IN, 2)
    for i in range(10):
        body = {"k": f"p0-{i}"}
        broker.append(OutRecord(IN, b"p0", _value(1, body)), partition=0)
        body = {"k": f"p1-{i}"}
        broker.append(OutRecord(IN, b"p1", _value(2 if 3 <= i < 6 else 1, body)), partition=1)
    settings = load_settings(
        input_topic=IN,
        output_topic=OUT,
        dlq_topic=DLQ,
        input_format="json",
        input_wire="registry",
        input_schema="",
        schema_registry_url="mock://unit-b15",
        output_format="json",
        output_wire="plain",
        filter_field="",
        key_by="k",
        window_type="none",
        metrics_port=0,
    )
    run = Run(
        broker,
        fakeredis.FakeServer(),
        settings,
        done=lambda b: len(b.records(OUT)) + len(b.records(DLQ)) >= 20,
        deadline_s=20.0,
    )
    resolver = run.worker.plan.resolver
    assert resolver is not None
    assert resolver.cache is not None
    cache = resolver.cache
    cache.known[1] = prepare_json("JSON", ANY_OBJECT)  # id 1 is cached already
    flaky = FlakyResolver(
        cache,
        FlakyRegistry({1: ANY_OBJECT, 2: ANY_OBJECT}, down),
        retry_interval_s=0.01,
        wait_s=wait_s,
    )
    run.worker.plan = replace(run.worker.plan, resolver=flaky)
    run.worker.run()
    return broker, flaky


def test_records_wait_for_the_registry_and_none_is_lost() -> None:
    """Registry away for a while: the new id's records wait, then come out in order."""
    broker, resolver = _run(down=6, wait_s=60.0)
    keys = [json.loads(r.value or b"")["k"] for r in broker.records(OUT)]
    assert broker.records(DLQ) == []
    assert sorted(keys) == sorted([f"p0-{i}" for i in range(10)] + [f"p1-{i}" for i in range(10)])
    p1 = [k for k in keys if k.startswith("p1")]
    assert p1 == [f"p1-{i}" for i in range(10)], "the waiting partition keeps its order"
    assert resolver.lookups == 7, "retries once, then one probe per interval"
    assert broker.committed[(IN, 1)][0] == 10


def test_records_go_to_the_dlq_when_the_registry_stays_away() -> None:
    """Registry away past the wait: the new id's records are DLQ entries; the rest flows."""
    broker, _ = _run(down=10**9, wait_s=0.05)
    keys = sorted(json.loads(r.value or b"")["k"] for r in broker.records(OUT))
    assert keys == sorted(
        [f"p0-{i}" for i in range(10)] + [f"p1-{i}" for i in (0, 1, 2, 6, 7, 8, 9)]
    )
    dead = broker.records(DLQ)
    assert len(dead) == 3
    for record in dead:
        reason = dlq.reason_of(record.headers)
        assert "schema registry unavailable for schema id 2" in reason[dlq.ERROR_MESSAGE]
