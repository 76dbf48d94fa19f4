"""group_by: re-keying through the repartition topic, pure and over the in-memory twins."""

from __future__ import annotations

import json
import sys
import types
from collections import Counter
from dataclasses import replace
from typing import Any

import fakeredis
import pytest

from service.app import build_plan
from service.config import load_settings
from service.demo import demo_orders
from service.errors import ConfigError, DeliveryError, RecordError, RillError
from service.kafka.clients import producer_config
from service.pipeline import Pipeline
from service.processing import dlq
from service.processing.batch import Plan, decode_batch, process_batch
from service.processing.join import JoinPlan
from service.processing.partitioning import java_partition
from service.processing.regroup import (
    EVENT_TIME_HEADER,
    SOURCE_HEADER,
    repartition_topic,
    source_position,
)
from service.records import InRecord, OutRecord
from tests.support.demo_configs import GROUP_BY_SETTINGS
from tests.support.inprocess import DLQ, IN, OUT, WINDOWED, Run, settings_for
from tests.support.memory_kafka import MemoryBroker, MemoryProducer

REPARTITION = repartition_topic("rill")
# Far above the spread of event times in a batch: re-keyed records of one customer come
# from several input partitions, interleaved, and none of them may be late here.
GRACE_MS = 100_000
REKEYED = {**WINDOWED, "window_grace_ms": GRACE_MS, "group_by": "k", "key_by": "order"}


def test_partition_is_the_positive_hash_modulo_the_count() -> None:
    """java_partition is toPositive(murmur2(key)) % n, as the Java client's default partitioner."""
    assert java_partition(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7
    assert {java_partition(f"c{i}".encode(), 4) for i in range(40)} == {0, 1, 2, 3}


def _plan(**extra: Any) -> Plan:
    settings = settings_for(**{**REKEYED, **extra})
    plan = build_plan(settings)
    assert plan.regroup is not None
    return replace(plan, regroup=plan.regroup.with_partitions(4))


def _in(value: dict[str, Any] | bytes, offset: int = 0, partition: int = 0) -> InRecord:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return InRecord(IN, partition, offset, b"order-key", raw, None, 5)


def test_stage_one_sends_the_transformed_record_under_its_new_key() -> None:
    """An input record goes to the repartition topic keyed by its group_by field, to the
    Java client's partition, as JSON, with its event time in a header; nothing is windowed."""
    plan = _plan()
    event = {"order": 7, "k": "customer-9", "ts": 1234, "amount": 5}
    result = process_batch([_in(event, offset=3, partition=2)], plan, 0)
    assert result.keyed == []
    [out] = result.outputs
    assert out.topic == REPARTITION
    assert out.key == b"customer-9"
    assert out.partition == java_partition(b"customer-9", 4)
    assert json.loads(out.value or b"") == event
    assert out.headers == [
        (EVENT_TIME_HEADER, b"1234"),
        (SOURCE_HEADER, f"2:{source_position(3, 0)}".encode()),
    ]
    assert result.sources == [(IN, 2)]
    assert result.next_offsets == {(IN, 2): 4}


def test_stage_two_windows_the_record_stage_one_sent() -> None:
    """A repartition record reaches the window under the key and event time stage one wrote."""
    plan = _plan()
    stage_one = process_batch([_in({"order": 1, "k": "c1", "ts": 99, "amount": 2})], plan, 0)
    out = stage_one.outputs[0]
    record = InRecord(REPARTITION, out.partition, 11, out.key, out.value, out.headers, 0)
    result = process_batch([record], plan, 0)
    assert result.outputs == []
    [keyed] = result.keyed
    assert (keyed.key, keyed.ts, keyed.value["amount"]) == ("c1", 99, 2)
    assert keyed.source == (0, source_position(0, 0))
    assert result.next_offsets == {(REPARTITION, out.partition): 12}


def test_a_batch_of_both_topics_takes_each_record_its_own_way() -> None:
    """One batch, records of both topics: input records re-keyed, repartition ones windowed."""
    plan = _plan()
    headers: list[tuple[str, bytes | None]] = [(EVENT_TIME_HEADER, b"5"), (SOURCE_HEADER, b"3:7")]
    records = [
        _in({"order": 1, "k": "a", "ts": 1, "amount": 1}, offset=0),
        InRecord(REPARTITION, 1, 0, b"b", b'{"k":"b","amount":3}', headers, 0),
        _in({"order": 2, "k": "c", "ts": 2, "amount": 1}, offset=1),
    ]
    result = process_batch(records, plan, 0)
    assert [o.key for o in result.outputs] == [b"a", b"c"]
    assert [(k.key, k.ts, k.source) for k in result.keyed] == [("b", 5, (3, 7))]
    assert result.next_offsets == {(IN, 0): 2, (REPARTITION, 1): 1}


def test_records_without_a_group_key_or_foreign_repartition_records_go_to_the_dlq() -> None:
    """A missing group_by field (transform) and a repartition record rill did not write
    (decode) become DLQ entries with their reason; nothing is dropped silently."""
    plan = _plan()
    no_key = _in({"order": 1, "ts": 1, "amount": 1})
    foreign = InRecord(REPARTITION, 0, 0, b"x", b"{}", None, 0)
    result = process_batch([no_key, foreign], plan, 0)
    assert result.outputs == []
    assert result.keyed == []
    reasons = [dlq.reason_of(dlq.render(e, "t").headers) for e in result.dlq]
    assert [r[dlq.ERROR_STAGE] for r in reasons] == ["transform", "decode"]
    assert "group_by field 'k' is missing" in reasons[0]["rill.error.message"]
    assert SOURCE_HEADER in reasons[1]["rill.error.message"]


def test_group_by_needs_a_window_and_a_topic_of_its_own() -> None:
    """RILL_GROUP_BY without a window, or a group id whose repartition topic is one of its own
    fails at start naming the setting to change."""
    with pytest.raises(ConfigError, match="RILL_WINDOW_TYPE"):
        build_plan(settings_for(group_by="k"))
    with pytest.raises(ConfigError, match="RILL_GROUP_ID"):
        build_plan(settings_for(**REKEYED, late_topic="g-repartition", group_id="g"))


def test_python_group_by_takes_a_function_and_is_the_last_step() -> None:
    """Pipeline.group_by(fn) re-keys by fn(record); a step after it is refused."""
    pipeline = Pipeline("p").map(lambda r: {**r, "c": r["k"].upper()}).group_by(lambda r: r["c"])
    with pytest.raises(ConfigError, match="after group_by"):
        Pipeline("q").group_by("k").map(lambda r: r)
    pipeline.window("tumbling", size_ms=100, time_field="ts", aggregates=["count"])
    module = types.ModuleType("rill_group_by_app")
    module.app = pipeline  # type: ignore[attr-defined]
    sys.modules["rill_group_by_app"] = module
    plan = build_plan(load_settings(app="rill_group_by_app:app", input_format="json"))
    assert plan.regroup is not None
    assert plan.regroup.topic == "rill-repartition"
    assert plan.regroup.key({"c": "X"}) == "X"


# --- the whole worker over the twins --------------------------------------------------


def _orders(n: int, customers: int = 5) -> list[dict[str, Any]]:
    return [
        {"order": f"o{i}", "k": f"cust-{i % customers}", "ts": 10 * i, "amount": i}
        for i in range(n)
    ]


def _feed_by_order(broker: MemoryBroker, orders: list[dict[str, Any]], partitions: int) -> None:
    """Orders keyed by order id, spread over the input partitions by that key."""
    broker.create(IN, partitions)
    for order in orders:
        key = order["order"].encode()
        broker.append(
            OutRecord(IN, key, json.dumps(order).encode()), java_partition(key, partitions)
        )


def _windows(broker: MemoryBroker) -> Counter[tuple[str, int, int, int]]:
    out: Counter[tuple[str, int, int, int]] = Counter()
    for r in broker.records(OUT):
        v = json.loads(r.value or b"")
        out[(v["key"], v["window_start"], v["count"], v["sum_amount"])] += 1
    return out


def _reference(orders: list[dict[str, Any]]) -> Counter[tuple[str, int, int, int]]:
    per: dict[tuple[str, int], list[int]] = {}
    for o in orders:
        per.setdefault((o["k"], o["ts"] - o["ts"] % 100), []).append(o["amount"])
    return Counter((k, start, len(a), sum(a)) for (k, start), a in per.items())


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "in-turn"])
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_windows_per_customer_are_exact_through_the_repartition_topic(
    guarantee: str, overlap: bool
) -> None:
    """Orders keyed by order id over 4 partitions, windowed per customer: each (customer,
    window) once, totals equal to a reference from the input, across a restart."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    orders = _orders(400)
    _feed_by_order(broker, orders, 4)
    settings = settings_for(guarantee, **REKEYED, state_overlap=overlap, batch_size=40)
    Run(broker, server, settings).worker.run()
    assert broker.partitions[REPARTITION] == 4, "created with the input's partition count"
    assert broker.records(OUT) == [], "no window closed yet (grace)"
    # Far-future orders, one per customer, close every window; their own stay open.
    late = [{"order": f"z{c}", "k": f"cust-{c}", "ts": 10**7, "amount": 0} for c in range(5)]
    for order in late:
        key = order["order"].encode()
        broker.append(OutRecord(IN, key, json.dumps(order).encode()), java_partition(key, 4))
    Run(broker, server, settings).worker.run()
    assert _windows(broker) == _reference(orders)
    committed = {tp: offset for tp, (offset, _meta) in broker.committed.items()}
    for tp, log in broker.logs.items():
        if tp[0] in (IN, REPARTITION):
            assert committed.get(tp, 0) == len(log), f"{tp} committed to its end"


def test_every_record_of_a_customer_lands_in_one_repartition_partition() -> None:
    """The repartition topic holds each customer in exactly one partition, the Java one."""
    broker = MemoryBroker()
    _feed_by_order(broker, _orders(120, customers=7), 4)
    settings = settings_for(**REKEYED, repartition_partitions=3)
    Run(broker, fakeredis.FakeServer(), settings).worker.run()
    assert broker.partitions[REPARTITION] == 3, "RILL_REPARTITION_PARTITIONS"
    seen: dict[bytes, set[int]] = {}
    for (topic, partition), log in broker.logs.items():
        if topic == REPARTITION:
            for r in log:
                seen.setdefault(r.key or b"", set()).add(partition)
    assert len(seen) == 7
    assert all(parts == {java_partition(k, 3)} for k, parts in seen.items())


def test_lag_is_shown_for_both_topics() -> None:
    """rill_consumer_lag has a series for the input's and the repartition topic's partitions."""
    broker = MemoryBroker()
    _feed_by_order(broker, _orders(40), 2)
    run: Run

    def done(_broker: MemoryBroker) -> bool:
        assert run.worker.worker is not None
        run.worker.worker.on_stats({})
        return True

    run = Run(broker, fakeredis.FakeServer(), settings_for(**REKEYED), done=done)
    run.worker.run()
    topics = {
        dict(labels)["topic"]
        for (name, labels), _value in run.samples_at_stop.items()
        if name == "rill_consumer_lag"
    }
    assert topics == {IN, REPARTITION}


def test_rekeyed_records_are_counted_apart_from_sink_records() -> None:
    """rill_records_rekeyed counts stage one's records; rill_records_out only sink records."""
    broker = MemoryBroker()
    orders = _orders(30)
    _feed_by_order(broker, orders, 2)
    run = Run(broker, fakeredis.FakeServer(), settings_for(**{**REKEYED, "window_grace_ms": 0}))
    run.worker.run()
    counts = {
        name: value
        for (name, labels), value in run.samples_at_stop.items()
        if dict(labels).get("topic") == IN
    }
    assert counts["rill_records_rekeyed_total"] == len(orders)
    assert counts["rill_records_out_total"] == len(broker.records(OUT)) > 0


def test_the_demo_orders_keyed_by_order_id_are_totalled_per_customer() -> None:
    """The demo pipeline (Avro orders, cancelled ones filtered out) with group_by: the
    per-customer 10 s windows equal a reference from the orders, keyed by order id."""
    settings = load_settings(
        **GROUP_BY_SETTINGS,
        input_topic=IN,
        output_topic=OUT,
        dlq_topic=DLQ,
        output_format="json",
        output_wire="plain",
        metrics_port=0,
        window_grace_ms=GRACE_MS,
        window_idle_timeout_ms=0,
    )
    encode = build_plan(settings).decoder.encode
    orders = list(demo_orders(300, seed=3))
    closing = [
        {
            **orders[0],
            "order_id": f"end-{c}",
            "customer_id": f"c-{c:03d}",
            "status": "paid",
            "created_at": orders[-1]["created_at"] + 10 * GRACE_MS,
        }
        for c in range(20)
    ]
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    broker.create(IN, 4)

    def send(batch: list[dict[str, Any]]) -> None:
        for order in batch:
            key = order["order_id"].encode()
            broker.append(OutRecord(IN, key, encode(order)), java_partition(key, 4))

    send(orders)
    Run(broker, server, settings).worker.run()
    send(closing)
    Run(broker, server, settings).worker.run()
    per: dict[tuple[str, int], list[float]] = {}
    for o in orders:
        if o["status"] != "cancelled":
            start = o["created_at"] - o["created_at"] % 10_000
            per.setdefault((o["customer_id"], start), []).append(o["amount"])
    got = {}
    for r in broker.records(OUT):
        v = json.loads(r.value or b"")
        got[(v["key"], v["window_start"])] = (v["count"], v["total"])
    assert set(got) == set(per)
    assert all(got[w][0] == len(a) and abs(got[w][1] - sum(a)) < 1e-6 for w, a in per.items())


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_record_re_keyed_twice_is_applied_once(guarantee: str) -> None:
    """Records stage one sent again (a batch redone after a crash, at least once) reach
    the repartition topic twice; the windows count them once, also after a restart (the
    source marks live in Redis with the state)."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    orders = _orders(200)
    _feed_by_order(broker, orders, 4)
    settings = settings_for(guarantee, **REKEYED, batch_size=40)
    Run(broker, server, settings).worker.run()
    # What a redone batch writes: the same records, again, after the first ones.
    for (topic, partition), log in list(broker.logs.items()):
        if topic == REPARTITION:
            for record in log[: len(log) // 2]:
                broker.append(record, partition)
    late = [{"order": f"z{c}", "k": f"cust-{c}", "ts": 10**7, "amount": 0} for c in range(5)]
    for order in late:
        key = order["order"].encode()
        broker.append(OutRecord(IN, key, json.dumps(order).encode()), java_partition(key, 4))
    Run(broker, server, settings).worker.run()
    assert _windows(broker) == _reference(orders)


@pytest.mark.parametrize(
    ("guarantee", "extra", "gapless"),
    [
        ("at_least_once", REKEYED, True),
        ("exactly_once", REKEYED, False),
        ("at_least_once", WINDOWED, False),
    ],
)
def test_at_least_once_group_by_producer_allows_no_gap(
    guarantee: str, extra: dict[str, Any], gapless: bool
) -> None:
    """group_by at least once asks for a gapless producer (the source marks need each
    input partition's records as a prefix: librdkafka enable.gapless.guarantee); other
    pipelines keep librdkafka's default."""
    broker = MemoryBroker()
    _feed_by_order(broker, _orders(4), 2)
    run = Run(broker, fakeredis.FakeServer(), settings_for(guarantee, **extra))
    asked: list[bool] = []
    edges = run.worker.edges

    def producer(s: Any, gap_free: bool) -> Any:
        asked.append(gap_free)
        return edges.producer(s, gap_free)

    run.worker.edges = replace(edges, producer=producer)
    run.worker.run()
    assert asked == [gapless]
    conf = producer_config(settings_for(guarantee, **extra), gapless=gapless)
    assert conf.get("enable.gapless.guarantee", False) is gapless


def test_a_re_keyed_record_sent_again_after_a_failed_delivery_is_applied() -> None:
    """At least once, a repartition record whose delivery failed lands after later records
    of its input partition (a gap then filled): it is marked as sent again and applied,
    not taken for a duplicate."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    orders = _orders(120)
    _feed_by_order(broker, orders, 2)
    failed: list[OutRecord] = []

    def refuse(record: OutRecord) -> RillError | None:
        if record.topic == REPARTITION and not failed and b'"o3"' in (record.value or b""):
            failed.append(record)
            return DeliveryError("MSG_TIMED_OUT: timed out")
        return None

    settings = settings_for(**REKEYED)
    Run(broker, server, settings, MemoryProducer(broker, refuse=refuse)).worker.run()
    assert failed, "one repartition delivery failed"
    late = [{"order": f"z{c}", "k": f"cust-{c}", "ts": 10**7, "amount": 0} for c in range(5)]
    for order in late:
        key = order["order"].encode()
        broker.append(OutRecord(IN, key, json.dumps(order).encode()), java_partition(key, 2))
    Run(broker, server, settings).worker.run()
    assert _windows(broker) == _reference(orders)


def test_group_by_with_dedupe_is_refused_at_start() -> None:
    """Dedupe keeps ids per input partition, which group_by leaves without state: refused."""
    with pytest.raises(ConfigError, match="group_by and dedupe"):
        _plan(dedupe_field="order_id")


def test_a_join_does_not_decode_repartition_records_with_the_input_decoder() -> None:
    """decode_batch leaves stage-two records to process_batch: no wasted failed decode."""
    plan = replace(_plan(), join=JoinPlan("customers", lambda r: r.get("customer_id"), None))
    stage_two = InRecord(plan.regroup.topic, 0, 0, b"c-1", b'{"not": "the input"}', None, 0)
    calls: list[bytes | None] = []
    decoder = plan.decoder

    class Counting:
        def decode(self, value: bytes | None) -> Any:
            calls.append(value)
            return decoder.decode(value)

    decoded, keys = decode_batch([stage_two], replace(plan, decoder=Counting()))
    assert calls == []
    assert keys == []
    assert isinstance(decoded[0], RecordError)
