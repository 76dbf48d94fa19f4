"""A whole worker joining a table, over the in-memory twins (both guarantees)."""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Sequence
from typing import Any

import fakeredis
import pytest
from confluent_kafka.schema_registry import Schema

from service.config import Settings
from service.errors import FatalError, StateError
from service.processing import dlq
from service.processing.join import JoinPlan
from service.records import OutRecord
from service.serde.avro_registry import RegistryAvroSerde, prepare_avro
from service.serde.schema_cache import SchemaCache
from tests.support.inprocess import DLQ, IN, OUT, WINDOWED, Run, feed, settings_for
from tests.support.memory_kafka import MemoryBroker
from tests.support.memory_table import MemoryTable

TABLE = "customers"
GUARANTEES = ["at_least_once", "exactly_once"]


def put_table(broker: MemoryBroker, rows: dict[str, Any], partitions: int = 2) -> None:
    """Table records (None: a tombstone), spread over the table's partitions by key."""
    if TABLE not in broker.partitions:
        broker.create(TABLE, partitions)
    for key, row in rows.items():
        value = json.dumps(row).encode() if row is not None else None
        broker.append(OutRecord(TABLE, key.encode(), value), partition=int(key[1:]) % partitions)


def table_settings(guarantee: str, **extra: Any) -> Settings:
    return settings_for(guarantee, table_topic=TABLE, table_key_field="k", **extra)


class Tables:
    """Makes the worker's table twin, and keeps it for the test to look at."""

    def __init__(self, broker: MemoryBroker, server: fakeredis.FakeServer, **kw: Any) -> None:
        self.broker, self.server, self.kw = broker, server, kw
        self.made: list[MemoryTable] = []

    def __call__(self, _s: Settings, join: JoinPlan) -> MemoryTable:
        self.made.append(MemoryTable(self.broker, join.topic, self.server, **self.kw))
        return self.made[-1]


def outputs(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in broker.records(OUT)]


def dlq_stages(broker: MemoryBroker) -> Counter[str]:
    return Counter(dlq.reason_of(r.headers)[dlq.ERROR_STAGE] for r in broker.records(DLQ))


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_the_worker_reads_the_whole_table_before_its_input(guarantee: str) -> None:
    """Input is processed only once the table is read to its end: a table of 40 rows read
    2 per partition per check still joins every record, the last row's too."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    put_table(broker, {f"c{i}": {"tier": i} for i in range(40)})
    put_table(broker, {"c39": {"tier": "last"}})
    feed(broker, [{"k": f"c{i}", "v": i} for i in range(40)])
    tables = Tables(broker, server, follow=False)
    Run(broker, server, table_settings(guarantee), table=tables).worker.run()
    joined = {o["k"]: o["table"]["tier"] for o in outputs(broker)}
    assert len(joined) == 40
    assert joined["c39"] == "last"
    assert tables.made[0].loaded_calls > 10, "loaded in chunks, checked each time"
    assert broker.records(DLQ) == []


def test_readyz_names_the_table_while_it_loads() -> None:
    """While the table is read at start /readyz fails, saying how far the table is."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    put_table(broker, {f"c{i}": {"tier": i} for i in range(20)})
    feed(broker, [{"k": "c1"}])
    said: list[tuple[bool, str]] = []

    class Watched(MemoryTable):
        done = False

        def loaded(self) -> bool:
            if not self.done:  # what /readyz says until the table is loaded
                said.append(run.worker.health.ready_check())
            self.done = super().loaded()
            return self.done

    def make(_s: Settings, join: JoinPlan) -> MemoryTable:
        return Watched(broker, join.topic, server)

    run = Run(broker, server, table_settings("at_least_once"), table=make)
    run.worker.run()
    assert said
    assert all(not ok and "table 'customers' loading" in why for ok, why in said), said
    assert run.ready_at_stop[0], run.ready_at_stop
    assert len(outputs(broker)) == 1


@pytest.mark.parametrize("guarantee", GUARANTEES)
@pytest.mark.parametrize(
    ("join", "missing", "outs", "stages"),
    [("inner", "dlq", 2, {"join": 2}), ("inner", "drop", 2, {}), ("left", "dlq", 4, {})],
)
def test_records_without_a_row(
    guarantee: str, join: str, missing: str, outs: int, stages: dict[str, int]
) -> None:
    """No row (never written, or deleted by a tombstone): inner goes to the DLQ (stage
    join) or is dropped, counted; left goes on with a null field."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    put_table(broker, {"c1": {"tier": "gold"}, "c2": {"tier": "x"}, "c3": {"tier": "y"}})
    put_table(broker, {"c3": None})  # deleted
    feed(broker, [{"k": k} for k in ("c1", "c2", "c3", "c4")])
    settings = table_settings(guarantee, table_join=join, table_missing=missing)
    run = Run(broker, server, settings, table=Tables(broker, server))
    run.worker.run()
    got = {o["k"]: o["table"] for o in outputs(broker)}
    assert len(got) == outs
    assert got["c1"] == {"tier": "gold"}
    if join == "left":
        assert got["c3"] is None
        assert got["c4"] is None
    assert dlq_stages(broker) == Counter(stages)
    action = "null" if join == "left" else missing
    misses = run.worker.metrics.table_misses.labels(IN, action)._value.get()
    assert misses == 2


@pytest.mark.parametrize("join", ["inner", "left"])
def test_a_table_lagging_the_stream(join: str) -> None:
    """A row written after the record that needs it was processed is not joined to it
    (inner: DLQ, left: null); records processed after the row arrives see it."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    put_table(broker, {"c1": {"tier": "old"}})
    feed(broker, [{"k": "c1", "n": 0}, {"k": "c2", "n": 1}], partitions=1)
    settings = table_settings("exactly_once", table_join=join)
    tables = Tables(broker, server, follow=True)
    Run(broker, server, settings, table=tables).worker.run()
    # The table moves on: a new row and an update, then more input.
    put_table(broker, {"c2": {"tier": "late"}, "c1": {"tier": "new"}})
    for i, k in enumerate(("c1", "c2")):
        broker.append(OutRecord(IN, k.encode(), json.dumps({"k": k, "n": 2 + i}).encode()))
    Run(broker, server, settings, table=Tables(broker, server, follow=True)).worker.run()
    by_n = {o["n"]: o["table"] for o in outputs(broker)}
    assert by_n[0] == {"tier": "old"}
    assert by_n[2] == {"tier": "new"}
    assert by_n[3] == {"tier": "late"}
    if join == "left":
        assert by_n[1] is None
    else:
        assert 1 not in by_n
        assert dlq_stages(broker) == Counter({"join": 1})


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_windowed_pipeline_aggregates_a_table_field(guarantee: str) -> None:
    """Merged rows feed a window: records keyed by a table field, summed per tumbling
    window, equal to the sums computed from the input and the table."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    region = {f"c{i}": "north" if i % 2 else "south" for i in range(6)}
    put_table(broker, {k: {"region": r} for k, r in region.items()})
    events = [{"k": f"c{i % 6}", "ts": 10 * i, "amount": i} for i in range(60)]
    feed(broker, events, partitions=1)
    window = {**WINDOWED, "window_grace_ms": 0}
    settings = settings_for(
        guarantee, table_topic=TABLE, table_key_field="k", table_as="", **window
    )
    settings = settings.model_copy(update={"key_by": "region"})
    Run(broker, server, settings, table=Tables(broker, server)).worker.run()
    got = {(o["key"], o["window_start"]): o["sum_amount"] for o in outputs(broker)}
    want: Counter[tuple[str, int]] = Counter()
    for e in events:
        if e["ts"] - e["ts"] % 100 + 100 <= events[-1]["ts"]:  # closed by the watermark
            want[(region[e["k"]], e["ts"] - e["ts"] % 100)] += e["amount"]
    assert got == dict(want)


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_one_lookup_per_batch_never_per_record(guarantee: str) -> None:
    """120 records naming 30 keys in batches of 40: three table lookups, one per batch,
    each of the batch's distinct keys."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    put_table(broker, {f"c{i}": {"tier": i} for i in range(30)})
    feed(broker, [{"k": f"c{i % 30}", "n": i} for i in range(120)], partitions=1)
    tables = Tables(broker, server)
    settings = table_settings(guarantee, batch_size=40)
    Run(broker, server, settings, table=tables).worker.run()
    assert len(outputs(broker)) == 120
    assert tables.made[0].store.round_trips == 3


def test_a_failing_lookup_is_retried_and_joins_every_record() -> None:
    """Redis failing the batch's lookup: retried behind back-pressure, every record joined
    once, nothing sent to the DLQ."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    put_table(broker, {f"c{i}": {"tier": i} for i in range(5)})
    feed(broker, [{"k": f"c{i % 5}", "n": i} for i in range(20)], partitions=1)

    class Failing(MemoryTable):
        failures = 3

        def get(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
            if self.failures:
                self.failures -= 1
                raise StateError("Redis does not answer")
            return super().get(keys)

    def make(_s: Settings, join: JoinPlan) -> MemoryTable:
        return Failing(broker, join.topic, server)

    run = Run(broker, server, table_settings("exactly_once"), table=make)
    run.worker.run()
    assert sorted(o["n"] for o in outputs(broker)) == list(range(20))
    assert broker.records(DLQ) == []
    assert run.worker.metrics.retries.labels("redis")._value.get() == 3


@pytest.mark.parametrize("when", ["loading", "running"])
def test_a_table_that_stops_being_read_stops_the_worker(when: str) -> None:
    """The table's reading failing for good (a fatal Kafka error) stops the worker with
    that error, while the table loads at start as after, before any record is processed."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    put_table(broker, {"c1": {"tier": 1}})
    feed(broker, [{"k": "c1"}])

    class Broken(MemoryTable):
        was_loaded = False
        checks_after = 0  # the first one ends the wait at start, the next is a batch's

        def loaded(self) -> bool:
            self.was_loaded = self.was_loaded or super().loaded()
            return self.was_loaded

        def check(self) -> None:
            self.checks_after += self.was_loaded
            if when == "loading" or self.checks_after >= 2:
                raise FatalError("table 'customers': broker says the topic is gone")

    def make(_s: Settings, join: JoinPlan) -> MemoryTable:
        return Broken(broker, join.topic, server)

    run = Run(broker, server, table_settings("at_least_once"), table=make)
    with pytest.raises(FatalError, match="topic is gone"):
        run.worker.run()
    assert broker.records(OUT) == []
    assert (run.worker.worker is not None) == (when == "running"), "the worker was built"


def test_the_tables_lag_is_exported() -> None:
    """Table records not in Redis yet (a follower behind) show in rill_table_lag."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    put_table(broker, {"c1": {"tier": 1}})
    feed(broker, [{"k": "c1"}])
    tables = Tables(broker, server, follow=False)

    def lagging(_b: MemoryBroker) -> bool:
        if tables.made and not tables.made[0].lag():
            put_table(broker, {"c2": {"tier": 2}, "c3": {"tier": 3}})  # after the start
        return gauge() == 2

    run = Run(broker, server, table_settings("at_least_once"), done=lagging, table=tables)

    def gauge() -> float:
        return float(run.worker.metrics.table_lag.labels(TABLE)._value.get())

    run.worker.run()
    assert gauge() == 2


AVRO_ROW = {
    "type": "record",
    "name": "Customer",
    "fields": [{"name": "tier", "type": "string"}],
}


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_table_values_in_the_registry_wire_format(guarantee: str) -> None:
    """Avro rows framed with registry schema ids: their writer schemas are fetched from the
    registry and the rows joined; a row of an id the registry does not know sends its
    record to the DLQ (stage join) with the registry's reason."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    feed(broker, [{"k": "c1"}, {"k": "c2"}], partitions=1)
    settings = table_settings(
        guarantee,
        table_format="avro",
        table_wire="registry",
        schema_registry_url="mock://table-rows",
    )

    def make(_s: Settings, join: JoinPlan) -> MemoryTable:
        # The mock registry lives in the worker's client (started by now): register there.
        client = join.resolver.client
        schema_id = client.register_schema("customers-value", Schema(json.dumps(AVRO_ROW), "AVRO"))
        writer = RegistryAvroSerde(SchemaCache(prepare_avro(None)), AVRO_ROW, schema_id)
        broker.create(TABLE, 1)
        broker.append(OutRecord(TABLE, b"c1", writer.encode({"tier": "gold"})))
        broker.append(OutRecord(TABLE, b"c2", struct.pack(">bI", 0, 999) + b"\x02"))
        return MemoryTable(broker, join.topic, server)

    Run(broker, server, settings, table=make).worker.run()
    assert [(o["k"], o["table"]) for o in outputs(broker)] == [("c1", {"tier": "gold"})]
    [entry] = broker.records(DLQ)
    reason = dlq.reason_of(entry.headers)
    assert reason[dlq.ERROR_STAGE] == "join"
    assert "999" in reason[dlq.ERROR_MESSAGE]
