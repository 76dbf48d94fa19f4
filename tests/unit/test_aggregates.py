"""The compiled aggregate kernels equal the rules written as a plain loop over the aggregates."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import RecordError
from service.processing.aggregates import (
    Aggregation,
    Reducer,
    kernel,
    merge,
    ops_of,
    record_components,
    results,
)
from service.window_state import Component, Op, pack_ordered, unpack_ordered

# --- the rules as a plain loop: the reference the kernels must equal ------------------------


def reference_components(aggs: list[Aggregation], value: Any, ts: int, offset: int) -> list[Any]:
    out: list[Any] = []
    for agg in aggs:
        if agg.fn == "count":
            out.append(1)
            continue
        if agg.fn == "custom":
            out.append("")
            continue
        try:
            got = value[agg.field]
        except (KeyError, TypeError):
            raise RecordError("transform", f"aggregate field {agg.field!r} is missing") from None
        if agg.fn in ("first", "last"):
            out.append(pack_ordered(ts, offset, got))
            continue
        if isinstance(got, bool) or not isinstance(got, int | float):
            raise RecordError("transform", f"{agg.fn}:{agg.field} needs a number, got {got!r}")
        out.extend((got, 1) if agg.fn == "mean" else (got,))
    return out


def reference_merge(ops: list[Op], a: list[Any], b: list[Any]) -> list[Any]:
    out: list[Any] = []
    for op, x, y in zip(ops, a, b, strict=True):
        if op == "add":
            out.append(x + y)
        elif op == "min":
            out.append(x if x <= y else y)
        elif op == "max":
            out.append(x if x >= y else y)
        elif op == "first":
            out.append(min(str(x), str(y)))
        elif op == "set":
            out.append(y)
        else:
            out.append(max(str(x), str(y)))
    return out


def reference_results(aggs: list[Aggregation], comps: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    i = 0
    for agg in aggs:
        if agg.fn == "mean":
            mean = comps[i] / comps[i + 1] if comps[i + 1] else None
            noisy = isinstance(comps[i], float) and mean is not None
            out[agg.name] = float(f"{mean:.15g}") if noisy else mean
        elif agg.fn == "sum":
            out[agg.name] = float(f"{comps[i]:.15g}") if isinstance(comps[i], float) else comps[i]
        elif agg.fn == "count":
            out[agg.name] = int(comps[i])
        elif agg.fn == "custom":
            out[agg.name] = orjson.loads(str(comps[i]))
        elif agg.fn in ("first", "last"):
            out[agg.name] = unpack_ordered(str(comps[i]))
        else:
            out[agg.name] = comps[i]
        i += len(agg.ops)
    return out


# --- generated cases --------------------------------------------------------------------------

FIELDS = ("amount", "qty", "note")
SPECS = [
    "count",
    *(f"{fn}:{f}" for fn in ("sum", "min", "max", "mean", "first", "last") for f in FIELDS),
]
numbers = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False, width=64)
)
field_values = st.one_of(numbers, st.booleans(), st.text(max_size=3), st.none())
aggregate_lists = st.lists(st.sampled_from(SPECS), min_size=1, max_size=6).map(
    lambda specs: [Aggregation.parse(s) for s in specs]
)
records = st.dictionaries(st.sampled_from(FIELDS), field_values)


def outcome(fn: Any, *args: Any) -> Any:
    """What fn gives, or the message of the RecordError it raises."""
    try:
        return fn(*args)
    except RecordError as exc:
        return ("RecordError", exc.stage, str(exc))


@settings(max_examples=300, deadline=None)
@given(aggregate_lists, records, st.integers(-(10**12), 10**12), st.integers(0, 10**9))
def test_components_equal_the_plain_loop(
    aggs: list[Aggregation], value: dict[str, Any], ts: int, offset: int
) -> None:
    """A record's components (or the error naming its first unusable field) are the loop's."""
    got = outcome(kernel(tuple(aggs)).components, value, ts, offset)
    assert got == outcome(reference_components, aggs, value, ts, offset)
    assert got == outcome(record_components, aggs, value, ts, offset)


def component_pairs(aggs: list[Aggregation]) -> st.SearchStrategy[tuple[list[Any], list[Any]]]:
    """Two records' worth of components of aggs, with numbers where a number goes."""
    nums = st.fixed_dictionaries({f: numbers for f in FIELDS})
    return st.tuples(nums, nums, st.integers(0, 10**9), st.integers(0, 10**9)).map(
        lambda t: (
            reference_components(aggs, t[0], t[2], 1),
            reference_components(aggs, t[1], t[3], 2),
        )
    )


@settings(max_examples=300, deadline=None)
@given(st.data(), aggregate_lists)
def test_fold_and_results_equal_the_plain_loop(
    data: st.DataObject, aggs: list[Aggregation]
) -> None:
    """Merged components and final values are the loop's, types included (ints stay ints)."""
    a, b = data.draw(component_pairs(aggs))
    ops = ops_of(aggs)
    compiled = kernel(tuple(aggs))
    merged = compiled.fold(a, b)
    assert merged == reference_merge(ops, a, b)
    assert [type(x) for x in merged] == [type(x) for x in reference_merge(ops, a, b)]
    assert merge(ops, a, b) == merged
    assert compiled.results(merged) == reference_results(aggs, merged)
    assert results(aggs, merged) == reference_results(aggs, merged)


def test_min_and_max_keep_the_first_of_equals() -> None:
    """min / max of equal values keep the first component as it is (1 and 1.0 differ in type)."""
    fold = kernel((Aggregation.parse("min:x"), Aggregation.parse("max:x"))).fold
    assert [type(c) for c in fold([1, 1], [1.0, 1.0])] == [int, int]


def test_errors_name_the_field_and_the_aggregate() -> None:
    """A missing field and a non-number (a bool is none) are RecordErrors naming them."""
    compiled = kernel((Aggregation.parse("count"), Aggregation.parse("sum:amount")))
    with pytest.raises(RecordError, match="aggregate field 'amount' is missing"):
        compiled.components({}, 0, 0)
    with pytest.raises(RecordError, match="sum:amount needs a number, got True"):
        compiled.components({"amount": True}, 0, 0)
    with pytest.raises(RecordError, match="missing"):
        compiled.components(None, 0, 0)


def test_user_reducer_components_and_results() -> None:
    """A user reducer's component is left for the engine, and its result is its JSON."""
    custom = Aggregation("custom", None, "tags", Reducer(list, lambda acc, v: [*acc, v]))
    compiled = kernel((Aggregation.parse("count"), custom))
    assert compiled.components({"x": 1}, 0, 0) == [1, ""]
    assert compiled.fold([1, '["a"]'], [2, '["a","b"]']) == [3, '["a","b"]']
    assert compiled.results([3, '["a","b"]']) == {"count": 3, "tags": ["a", "b"]}


def test_mean_of_nothing_is_none_and_lists_of_another_length_fail() -> None:
    """A mean over a zero count is None; components of another aggregate list are refused."""
    compiled = kernel((Aggregation.parse("mean:x"),))
    assert compiled.results([0, 0]) == {"mean_x": None}
    comps: list[Component] = [1, 2, 3]
    with pytest.raises(ValueError, match="unpack"):
        compiled.fold(comps, comps)


def test_float_sums_and_means_read_as_decimals() -> None:
    """A float sum or mean leaves the window with 15 significant digits; ints stay exact."""
    aggs = (Aggregation.parse("sum:a"), Aggregation.parse("mean:a"), Aggregation.parse("max:a"))
    compiled = kernel(aggs)
    comps = compiled.components({"a": 0.1}, 0, 0)
    comps = compiled.fold(comps, compiled.components({"a": 0.2}, 0, 1))
    assert comps[0] == 0.1 + 0.2 == 0.30000000000000004  # the components keep every bit
    assert compiled.results(comps) == {"sum_a": 0.3, "mean_a": 0.15, "max_a": 0.2}
    ints = kernel((Aggregation.parse("sum:a"),))
    assert ints.results([2**70 + 1]) == {"sum_a": 2**70 + 1}
