"""Bad and edge input through the pure seams: flat_map keys, event times no window can
take, records and DLQ copies over the producer's limit, and exact aggregate values.

The window tests run the real Lua scripts on fakeredis (`MemoryWindowStore`), so the
Python merge and the scripts' merge are both pinned.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from typing import Any

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.app import build_plan
from service.config import load_settings
from service.errors import RecordError
from service.pipeline import Pipeline
from service.processing import dlq
from service.processing.aggregates import Aggregation, merge, ops_of, record_components, results
from service.processing.batch import Plan, emit, process_batch
from service.processing.dlq import render
from service.processing.sizes import TRUNCATED, record_size
from service.processing.windows import WindowPlan, WindowResult, WindowSpec, event_time
from service.records import BatchResult, DlqEntry, InRecord, Keyed
from service.runtime.window_engine import WindowEngine
from service.serde import JsonSerde
from service.serde.wire import PlainWire
from service.state.codec import StateLayout
from service.window_state import pack_ordered
from tests.support.memory_store import MemoryWindowStore

NOW = 1_700_000_000_000
HOUR = 3_600_000
SERDE = JsonSerde(PlainWire())


def _rec(value: Any, offset: int = 0, key: bytes | None = b"k", ts: int = NOW) -> InRecord:
    raw = value if isinstance(value, bytes | None) else json.dumps(value).encode()
    return InRecord("in", 0, offset, key, raw, None, ts)


def _window(
    aggregates: tuple[str, ...] = ("count",),
    time_field: str | None = "ts",
    max_future_ms: int = HOUR,
    grace_ms: int = 0,
) -> WindowPlan:
    spec = WindowSpec("tumbling", size_ms=1000, grace_ms=grace_ms)
    aggs = tuple(Aggregation.parse(a) for a in aggregates)
    return WindowPlan(spec, aggs, time_field, "final", 0, max_future_ms)


def _plan(
    pipeline: Pipeline, window: WindowPlan | None = None, max_message_bytes: int = 1_000_000
) -> Plan:
    return Plan(
        SERDE,
        SERDE,
        tuple(pipeline.steps),
        "out",
        "dlq",
        max_record_bytes=1_000_000,
        transform_retries=0,
        version="test",
        window=window,
        max_message_bytes=max_message_bytes,
    )


def _reason(entry: DlqEntry) -> dict[str, str]:
    return dlq.reason_of(render(entry, "test").headers)


def _engine(window: WindowPlan) -> WindowEngine:
    layout = StateLayout(
        prefix=f"edges-{uuid.uuid4().hex[:8]}",
        group="g",
        kind=window.spec.kind,
        size_ms=window.spec.size_ms,
        emit=window.emit,
        ops=tuple(ops_of(window.aggregations)),
        ttl_s=600,
    )
    engine = WindowEngine(
        window,
        MemoryWindowStore(layout, fakeredis.FakeServer()),
        lambda rec, err: DlqEntry.of(rec, "dlq", err, 0),
    )
    engine.assign(("in", 0), 0)
    return engine


def _close_all(engine: WindowEngine, window: WindowPlan, offset: int) -> list[WindowResult]:
    """A record far ahead (in the window's clock, not the wall clock) closes every window."""
    value = {"ts": 10**12, "v": 0, "amount": 0}
    far = Keyed(InRecord("in", 0, offset, None, None, None, 0), "zz", value)
    return [r for r in engine.apply([far], 0).results if r.key != "zz"]


# --- B6: flat_map then key_by --------------------------------------------------------------


def test_flat_map_then_key_by_windows_each_item_under_its_own_key() -> None:
    """Every item of a flat_map is windowed under the key key_by gave it, not the first's."""
    pipeline = Pipeline().flat_map(lambda v: v["lines"]).key_by(lambda v: v["customer"])
    plan = _plan(pipeline, _window())
    lines = [{"customer": c, "ts": NOW} for c in ("a", "b", "c", "b")]
    result = process_batch([_rec({"lines": lines})], plan, NOW)
    assert [k.key for k in result.keyed] == ["a", "b", "c", "b"]
    assert result.dlq == []


def test_flat_map_items_are_counted_per_key_in_the_store() -> None:
    """Through the scripts: each customer's window counts its own items."""
    window = _window(("count", "sum:amount"))
    pipeline = Pipeline().flat_map(lambda v: v["lines"]).key_by(lambda v: v["customer"])
    lines = [{"customer": c, "ts": 500, "amount": n} for c, n in (("a", 1), ("b", 2), ("b", 3))]
    result = process_batch([_rec({"lines": lines})], _plan(pipeline, window), 1000)
    engine = _engine(window)
    engine.apply(result.keyed, 0)
    found = {r.key: r.values for r in _close_all(engine, window, 1)}
    assert found == {"a": {"count": 1, "sum_amount": 1}, "b": {"count": 2, "sum_amount": 5}}


def test_an_item_without_a_key_is_a_dlq_entry_and_its_siblings_are_windowed() -> None:
    """A null key_by on one flat_map item sends that item to the DLQ, not the whole record."""
    pipeline = Pipeline().flat_map(lambda v: v["lines"]).key_by(lambda v: v.get("customer"))
    lines: list[dict[str, Any]] = [{"customer": "a", "ts": NOW}, {"ts": NOW}]
    lines.append({"customer": "c", "ts": NOW})
    result = process_batch([_rec({"lines": lines}, offset=7)], _plan(pipeline, _window()), NOW)
    assert [k.key for k in result.keyed] == ["a", "c"]
    [entry] = result.dlq
    reason = _reason(entry)
    assert reason[dlq.ERROR_STAGE] == "transform"
    assert reason[dlq.ERROR_MESSAGE].startswith("item 2 of 3: ")
    assert "null key" in reason[dlq.ERROR_MESSAGE]
    assert reason[dlq.SOURCE_OFFSET] == "7"
    assert json.loads(entry.value or b"") == {"ts": NOW}


def test_a_record_whose_items_all_lack_a_key_is_itself_the_dlq_entry() -> None:
    """When no item can be windowed, the DLQ holds the record's own bytes (replayable)."""
    pipeline = Pipeline().flat_map(lambda v: v["lines"])
    record = _rec({"lines": [{"ts": NOW}, {"ts": NOW}]}, key=None)
    result = process_batch([record], _plan(pipeline, _window()), NOW)
    assert result.keyed == []
    [entry] = result.dlq
    assert entry.value == record.value
    assert "(all 2 items)" in entry.message


def test_stateless_flat_map_outputs_the_items_that_have_a_key() -> None:
    """Without a window too, one item's null key fails that item alone."""
    pipeline = Pipeline().flat_map(lambda v: v["lines"]).key_by(lambda v: v.get("customer"))
    lines = [{"customer": "a"}, {}, {"customer": "c"}]
    result = process_batch([_rec({"lines": lines})], _plan(pipeline), NOW)
    assert [o.key for o in result.outputs] == [b"a", b"c"]
    assert [e.message.split(":")[0] for e in result.dlq] == ["item 2 of 3"]


# --- B12: event times no window can take ---------------------------------------------------

BAD_TIMES = [
    float("nan"),
    float("inf"),
    float("-inf"),
    1e300,
    10**19,
    -(10**17),
]


@pytest.mark.parametrize("ts", BAD_TIMES, ids=repr)
def test_event_time_no_window_can_hold_is_a_record_error(ts: float) -> None:
    """NaN, ±Inf and times outside the years 1-9999 raise RecordError, never ValueError."""
    with pytest.raises(RecordError) as caught:
        event_time({"ts": ts}, "ts", 0)
    assert caught.value.stage == "transform"
    assert type(caught.value.__cause__).__name__ == "EventTimeError"


@pytest.mark.parametrize("ts", BAD_TIMES, ids=repr)
def test_bad_event_time_goes_to_the_dlq_and_the_batch_goes_on(ts: float) -> None:
    """A batch with such a time: that record is a DLQ entry, the next is windowed."""
    pipeline = Pipeline().map(lambda v: {**v, "ts": ts} if v["bad"] else v)
    records = [_rec({"bad": True, "ts": 0}, 0), _rec({"bad": False, "ts": NOW}, 1)]
    result = process_batch(records, _plan(pipeline, _window()), NOW)
    assert [k.record.offset for k in result.keyed] == [1]
    [entry] = result.dlq
    assert entry.error_class == "EventTimeError"
    assert entry.source_offset == 0


def test_bad_event_time_reaching_the_aggregator_is_a_dlq_entry() -> None:
    """The aggregator's own event-time read turns NaN into a DLQ entry, not a crash."""
    window = _window()
    engine = _engine(window)
    bad = Keyed(InRecord("in", 0, 0, None, None, None, 0), "k", {"ts": float("nan")})
    out = engine.apply([bad], 0)
    assert [e.error_class for e in out.dlq] == ["EventTimeError"]


def test_far_future_event_time_goes_to_the_dlq_and_leaves_the_watermark() -> None:
    """A time more than RILL_WINDOW_MAX_FUTURE_MS ahead is a DLQ entry; later records are
    on time."""
    window = _window(time_field="ts", max_future_ms=HOUR)
    records = [
        _rec({"ts": NOW - 10}, 0),
        _rec({"ts": NOW + 10 * 365 * 24 * HOUR}, 1),  # a clock ten years ahead
        _rec({"ts": NOW}, 2),
        _rec({"ts": NOW + HOUR - 1}, 3),  # within the limit
    ]
    result = process_batch(records, _plan(Pipeline(), window), NOW)
    [entry] = result.dlq
    assert (entry.stage, entry.error_class, entry.source_offset) == (
        "transform",
        "EventTimeError",
        1,
    )
    assert "ahead of the wall clock" in entry.message
    engine = _engine(window)
    out = engine.apply(result.keyed, NOW)
    assert out.late == 0
    assert [k.record.offset for k in result.keyed] == [0, 2, 3]


def test_max_future_zero_takes_any_time_in_range() -> None:
    """RILL_WINDOW_MAX_FUTURE_MS=0 switches the limit off."""
    records = [_rec({"ts": NOW + 10 * 365 * 24 * HOUR})]
    result = process_batch(records, _plan(Pipeline(), _window(max_future_ms=0)), NOW)
    assert len(result.keyed) == 1
    assert result.dlq == []


def test_kafka_timestamp_event_time_is_checked_too() -> None:
    """Without a time field, a far-future Kafka timestamp goes to the DLQ likewise."""
    record = _rec({"x": 1}, ts=NOW + 2 * HOUR)
    result = process_batch([record], _plan(Pipeline(), _window(time_field=None)), NOW)
    assert [e.error_class for e in result.dlq] == ["EventTimeError"]


def test_max_future_setting_reaches_the_plan() -> None:
    """RILL_WINDOW_MAX_FUTURE_MS defaults to one hour and is in the window plan."""
    base = {"input_format": "json", "input_wire": "plain", "filter_field": ""}
    plan = build_plan(load_settings(**base))
    assert plan.window is not None
    assert plan.window.max_future_ms == HOUR
    plan = build_plan(load_settings(**base, window_max_future_ms=0))
    assert plan.window is not None
    assert plan.window.max_future_ms == 0


# --- B9: outputs and DLQ copies over the producer's limit -----------------------------------


def test_dlq_copy_over_the_limit_keeps_a_reference_to_its_source() -> None:
    """A record near the limit that fails: its DLQ record fits, without the value."""
    limit = 10_000
    value = b"\x00not json" + b"x" * (limit - 100)  # fits max_record_bytes, not with headers
    record = InRecord("in", 3, 42, b"key", value, [("trace", b"t" * 50)], NOW)
    result = process_batch([record], _plan(Pipeline(), max_message_bytes=limit), NOW)
    [entry] = result.dlq
    rendered = render(entry, "test")
    assert record_size(rendered) <= limit
    assert entry.value is None
    assert (TRUNCATED, str(len(value)).encode()) in (entry.headers or [])
    assert ("trace", b"t" * 50) in (entry.headers or [])
    reason = _reason(entry)
    assert (reason[dlq.SOURCE_PARTITION], reason[dlq.SOURCE_OFFSET]) == ("3", "42")
    assert reason[dlq.ERROR_STAGE] == "decode"


def test_small_dlq_copies_are_kept_whole() -> None:
    """Under the limit, the DLQ copy is the record's bytes as they were."""
    record = _rec(b"\x00garbage")
    [entry] = process_batch([record], _plan(Pipeline()), NOW).dlq
    assert entry.value == record.value
    assert all(name != TRUNCATED for name, _ in entry.headers or [])


def test_output_over_the_limit_goes_to_the_dlq() -> None:
    """An output whose key, value and headers exceed message.max.bytes is a DLQ entry."""
    limit = 5_000
    pipeline = Pipeline().key_by(lambda v: v["k"])
    record = _rec({"k": "k" * 2_000, "pad": "p" * 2_990})
    result = process_batch([record], _plan(pipeline, max_message_bytes=limit), NOW)
    assert result.outputs == []
    [entry] = result.dlq
    assert entry.stage == "encode"
    assert "message.max.bytes=5000" in entry.message
    assert record_size(render(entry, "test")) <= limit


def test_window_result_over_the_limit_goes_to_the_dlq_whole_or_as_a_reference() -> None:
    """A window result too large to produce is a DLQ entry that fits the limit too."""
    limit = 4_000
    plan = _plan(Pipeline(), _window(), max_message_bytes=limit)
    small = WindowResult("a", 0, 1000, {"count": 1}, True)
    big = WindowResult("b" * 3_000, 0, 1000, {"count": 1}, True)
    result = BatchResult()
    emit(result, [small, big], [("in", 0), ("in", 0)], plan, NOW)
    assert [json.loads(o.value or b"")["key"] for o in result.outputs] == ["a"]
    [entry] = result.dlq
    assert entry.stage == "encode"
    assert "message.max.bytes=4000" in entry.message
    assert record_size(render(entry, "test")) <= limit


def test_producer_limit_is_a_setting_given_to_the_producer() -> None:
    """RILL_PRODUCER_MESSAGE_MAX_BYTES is the producer's message.max.bytes and the plan's."""
    from service.kafka.clients import producer_config  # noqa: PLC0415 - the one use

    settings = load_settings(
        input_format="json", input_wire="plain", producer_message_max_bytes=2_000_000
    )
    assert producer_config(settings)["message.max.bytes"] == 2_000_000
    assert build_plan(settings).max_message_bytes == 2_000_000


# --- B16: first/last, datetimes, integers ----------------------------------------------------


@given(a=st.integers(-(10**14), 10**14), b=st.integers(-(10**14), 10**14))
def test_first_last_text_orders_as_event_time(a: int, b: int) -> None:
    """pack_ordered text compares as the event times, negative ones included."""
    assert (pack_ordered(a, 0, "x") < pack_ordered(b, 0, "x")) == (a < b)


def test_first_and_last_of_negative_event_times() -> None:
    """Through the scripts, first/last of times before 1970 are the earliest and latest."""
    window = _window(("first:v", "last:v"), grace_ms=100)
    engine = _engine(window)
    times = [-5, -10, -1, -20, -3]  # one window [-1000, 0), all on time
    keyed = [
        Keyed(InRecord("in", 0, i, None, None, None, 0), "k", {"ts": t, "v": t})
        for i, t in enumerate(times)
    ]
    engine.apply(keyed[:2], 0)
    engine.apply(keyed[2:], 0)
    [found] = _close_all(engine, window, len(times))
    assert found.values == {"first_v": -20, "last_v": -1}


def test_datetime_event_time_is_exact_to_the_millisecond() -> None:
    """A datetime converts without a float product (which gives ...471 here)."""
    when = dt.datetime(2004, 3, 15, 7, 55, 47, 472000, tzinfo=dt.UTC)
    assert event_time({"ts": when}, "ts", 0) == 1_079_337_347_472


@given(st.datetimes(timezones=st.just(dt.UTC)))
def test_datetime_event_time_matches_timedelta_arithmetic(when: dt.datetime) -> None:
    """Every aware datetime gives floor((t - epoch) / 1 ms)."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert event_time({"ts": when}, "ts", 0) == (when - epoch) // dt.timedelta(milliseconds=1)


BIG = 2**53


def test_integer_components_stay_integers_in_python() -> None:
    """count, sum, min and max of ints are ints; a float makes a sum a float."""
    aggs = tuple(Aggregation.parse(a) for a in ("count", "sum:v", "min:v", "max:v", "mean:v"))
    ops = ops_of(aggs)
    a = record_components(aggs, {"v": BIG + 1}, 0, 0)
    b = record_components(aggs, {"v": 2}, 0, 1)
    got = results(aggs, merge(ops, a, b))
    assert got == {
        "count": 2,
        "sum_v": BIG + 3,
        "min_v": 2,
        "max_v": BIG + 1,
        "mean_v": (BIG + 3) / 2,
    }
    assert all(type(got[n]) is int for n in ("sum_v", "min_v", "max_v"))
    c = record_components(aggs, {"v": 0.5}, 0, 2)
    # A float sum is a float, written with 15 significant digits (float_digits).
    with_float = results(aggs, merge(ops, merge(ops, a, b), c))["sum_v"]
    assert type(with_float) is float
    assert with_float == float(f"{float(BIG + 3) + 0.5:.15g}")


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(-(2**70), 2**70), min_size=1, max_size=8),
    cut=st.integers(0, 8),
)
def test_integer_sums_min_max_are_exact_through_the_scripts(values: list[int], cut: int) -> None:
    """Int sums, mins and maxes merged by the Lua scripts equal Python's, at any size."""
    window = _window(("count", "sum:v", "min:v", "max:v"))
    engine = _engine(window)
    keyed = [
        Keyed(InRecord("in", 0, i, None, None, None, 0), "k", {"ts": 1, "v": v})
        for i, v in enumerate(values)
    ]
    # One record per batch: every merge after the first happens in the script.
    for item in keyed:
        engine.apply([item], 0)
    [found] = _close_all(engine, window, len(values))
    assert found.values == {
        "count": len(values),
        "sum_v": sum(values),
        "min_v": min(values),
        "max_v": max(values),
    }
    assert all(type(v) is int for v in found.values.values())
    # The same through the Python pre-aggregation of one batch.
    engine = _engine(window)
    engine.apply(keyed[:cut], 0)
    engine.apply(keyed[cut:], 0)
    [again] = _close_all(engine, window, len(values))
    assert again.values == found.values


def test_mixed_int_and_float_sum_is_a_float_in_the_scripts() -> None:
    """Once a float is merged in, the script's sum is a float (and reads back as one)."""
    window = _window(("sum:v", "max:v"))
    engine = _engine(window)
    for i, v in enumerate((3, 0.5, 4)):
        keyed = Keyed(InRecord("in", 0, i, None, None, None, 0), "k", {"ts": 1, "v": v})
        engine.apply([keyed], 0)
    [found] = _close_all(engine, window, 3)
    assert found.values == {"sum_v": 7.5, "max_v": 4}
    assert type(found.values["sum_v"]) is float
    assert type(found.values["max_v"]) is int


def test_float_sums_that_are_whole_stay_floats() -> None:
    """1.5 + 1.5 is 3.0 from the script too (a float mark is kept on whole floats)."""
    window = _window(("sum:v",))
    engine = _engine(window)
    for i in range(2):
        keyed = Keyed(InRecord("in", 0, i, None, None, None, 0), "k", {"ts": 1, "v": 1.5})
        engine.apply([keyed], 0)
    [found] = _close_all(engine, window, 2)
    assert found.values == {"sum_v": 3.0}
    assert type(found.values["sum_v"]) is float
    assert not math.isnan(found.values["sum_v"])
