"""The pure join of a record with its table row, and process_batch with a table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.errors import ConfigError, RecordError
from service.pipeline import Pipeline
from service.processing.batch import Plan, decode_batch, process_batch
from service.processing.chain import Step
from service.processing.join import (
    DROPPED,
    JoinPlan,
    field_key,
    join_record,
    key_text,
    table_key,
)
from service.records import InRecord
from service.serde import JsonSerde
from service.serde.wire import PlainWire

SERDE = JsonSerde(PlainWire())


def plan_of(**kw: Any) -> JoinPlan:
    return JoinPlan("customers", field_key("customer_id"), SERDE, key_name="customer_id", **kw)


ROWS = {b"c1": b'{"name": "Ada", "tier": "gold"}', b"bad": b"not json"}


def test_a_row_goes_under_its_name() -> None:
    """Inner join with a row: the decoded row is the record's `as_` field."""
    out = join_record(plan_of(), {"customer_id": "c1", "amount": 3}, b"c1", ROWS)
    assert out == {"customer_id": "c1", "amount": 3, "table": {"name": "Ada", "tier": "gold"}}


def test_merged_row_never_overwrites_the_record() -> None:
    """as_=None merges the row's fields in; a field the record has keeps its value."""
    out = join_record(plan_of(as_=None), {"customer_id": "c1", "tier": "mine"}, b"c1", ROWS)
    assert out == {"customer_id": "c1", "tier": "mine", "name": "Ada"}


def test_left_join_without_a_row_has_a_null_field_or_nothing_merged() -> None:
    """Left join, no row: the `as_` field is None; merged, the record is unchanged."""
    record = {"customer_id": "zz"}
    assert join_record(plan_of(kind="left"), record, b"zz", ROWS) == {**record, "table": None}
    assert join_record(plan_of(kind="left", as_=None), record, b"zz", ROWS) == record
    assert join_record(plan_of(kind="left"), record, None, ROWS) == {**record, "table": None}


def test_inner_join_without_a_row_is_a_join_error_or_dropped() -> None:
    """Inner join, no row: a RecordError of stage `join` naming the key, or DROPPED."""
    with pytest.raises(RecordError, match="no row in table 'customers' for key 'zz'") as err:
        join_record(plan_of(), {"customer_id": "zz"}, b"zz", ROWS)
    assert err.value.stage == "join"
    assert join_record(plan_of(missing="drop"), {"customer_id": "zz"}, b"zz", ROWS) is DROPPED


def test_a_row_that_cannot_be_decoded_is_the_records_join_error() -> None:
    """A table value the table serde refuses sends the joined record to the DLQ (join)."""
    with pytest.raises(RecordError, match="cannot be decoded") as err:
        join_record(plan_of(kind="left"), {"customer_id": "bad"}, b"bad", ROWS)
    assert err.value.stage == "join"


def test_key_text_matches_kafka_keys() -> None:
    """Key values become the table's Kafka key bytes: text as UTF-8, numbers as text."""
    assert key_text("é") == "é".encode()
    assert key_text(42) == b"42"
    assert key_text(True) == b"true"
    assert key_text(b"\x00") == b"\x00"
    assert key_text(None) is None


def test_a_key_expression_that_fails_is_a_join_error() -> None:
    """A missing key field or a raising key function: RecordError stage `join`."""
    with pytest.raises(RecordError, match="table key field 'customer_id' is missing"):
        table_key(plan_of(), {"other": 1})
    raising = JoinPlan("t", lambda r: r["x"]["y"], SERDE, key_name="nested")
    with pytest.raises(RecordError, match="table key nested: KeyError") as err:
        table_key(raising, {"x": {}})
    assert err.value.stage == "join"


def _record(offset: int, value: dict[str, Any] | bytes) -> InRecord:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return InRecord("in", 0, offset, None, raw, None, 1_000)


def _plan(join: JoinPlan, steps: tuple[Step, ...] = ()) -> Plan:
    return Plan(SERDE, SERDE, steps, "out", "dlq", 1_000_000, 0, "test", join=join)


def test_decode_batch_looks_each_key_up_once() -> None:
    """A batch's distinct keys, each once, whatever the number of records naming it."""
    records = [_record(i, {"customer_id": f"c{i % 3}"}) for i in range(10)]
    records.append(_record(10, b"not json"))
    decoded, keys = decode_batch(records, _plan(plan_of()))
    assert keys == [b"c0", b"c1", b"c2"]
    assert isinstance(decoded[10], RecordError)


@pytest.mark.parametrize("missing", ["dlq", "drop"])
def test_process_batch_joins_before_the_steps(missing: str) -> None:
    """Steps see the joined record; a miss goes to the DLQ (stage join, original bytes)
    or is dropped, counted either way; every offset is committed."""
    steps = (Step("filter", lambda r: r["table"]["tier"] == "gold", "filter:gold"),)
    plan = _plan(plan_of(missing=missing), steps)
    records = [_record(0, {"customer_id": "c1"}), _record(1, {"customer_id": "nope"})]
    decoded, keys = decode_batch(records, plan)
    rows = {k: v for k, v in ROWS.items() if k in keys}
    result = process_batch(records, plan, 5, decoded, rows)
    [out] = result.outputs
    assert json.loads(out.value or b"")["table"]["name"] == "Ada"
    assert result.join_misses == {missing: 1}
    assert result.next_offsets == {("in", 0): 2}
    if missing == "dlq":
        [entry] = result.dlq
        assert (entry.stage, entry.source_offset, entry.value) == ("join", 1, records[1].value)
    else:
        assert result.dlq == []


def test_pipeline_join_table_comes_first_and_once() -> None:
    """join_table runs before the steps: after a step, or twice, it is a ConfigError."""
    with pytest.raises(ConfigError, match="call it first"):
        Pipeline("p").map(dict).join_table("t", lambda r: r["k"])
    with pytest.raises(ConfigError, match="one table"):
        Pipeline("p").join_table("t", lambda r: r["k"]).join_table("u", lambda r: r["k"])
    with pytest.raises(ConfigError, match="inner or left"):
        Pipeline("p").join_table("t", lambda r: r["k"], join="outer")  # type: ignore[arg-type]
