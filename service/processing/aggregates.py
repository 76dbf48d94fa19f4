"""Aggregates: what each keeps (components merged by one operation each), and the
three functions over them, compiled once per aggregate list.

The rules (also the Redis scripts'): a record gives one component per operation (`count`
1, `sum`/`min`/`max` the field's number, `mean` the number and 1, `first`/`last` the
value packed with its time and offset, a user reducer its accumulator); two component
lists merge op by op (`add`, `min`, `max` keep the first of equals, `first`/`last` the
lower / higher packed text, `set` the newer); the final values come from the components.
Numbers stay as they are: int + int stays an int (exact at any size), a float merged in
makes a float; a float sum or mean is written with 15 significant digits (`float_digits`).

These run for every record and every window, so instead of looping over the aggregates
and branching on their names each time, `kernel(aggs)` writes the rules out as
straight-line Python for one aggregate list and compiles it once (as `dataclasses` writes
`__init__`). `record_components`, `merge` and `results` are the same kernels, cached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

from service.errors import ConfigError, RecordError
from service.window_state import Component, Op, pack_ordered, unpack_ordered

Number: TypeAlias = int | float
Fold: TypeAlias = Callable[[Sequence[Component], Sequence[Component]], list[Component]]
AGG_FUNCTIONS = ("count", "sum", "min", "max", "mean", "first", "last")


@dataclass(frozen=True, slots=True)
class Reducer:
    """A user aggregate: `reducer(acc, record) -> acc`, starting from `initializer()`.

    The accumulator must be JSON-serializable: it is stored in Redis between batches.
    """

    initializer: Callable[[], Any]
    reducer: Callable[[Any, Any], Any]


@dataclass(frozen=True, slots=True)
class Aggregation:
    """One aggregate: function over a field, under an output name."""

    fn: str
    field: str | None
    name: str
    custom: Reducer | None = None

    @classmethod
    def parse(cls, spec: str) -> Aggregation:
        """`count`, `sum:amount`, `mean:amount` or `max:amount as top`.

        Raises:
            ConfigError: an unknown function, or a function other than count without a field.
        """
        text, _, alias = spec.partition(" as ")
        fn, _, fld = text.strip().partition(":")
        fn = fn.strip()
        if fn not in AGG_FUNCTIONS:
            raise ConfigError(f"unknown aggregation {fn!r}: use one of {', '.join(AGG_FUNCTIONS)}")
        if fn != "count" and not fld.strip():
            raise ConfigError(f"aggregation {fn!r} needs a field, e.g. {fn}:amount")
        name = alias.strip() or (fn if fn == "count" else f"{fn}_{fld.strip()}")
        return cls(fn, fld.strip() or None, name)

    @property
    def ops(self) -> tuple[Op, ...]:
        """The components this aggregate keeps."""
        return _OPS[self.fn]


_OPS: dict[str, tuple[Op, ...]] = {
    "count": ("add",),
    "sum": ("add",),
    "min": ("min",),
    "max": ("max",),
    "mean": ("add", "add"),
    "first": ("first",),
    "last": ("last",),
    "custom": ("set",),
    # Internal (not parseable): the record's input offset, kept by count windows.
    "offset": ("max",),
}


def ops_of(aggs: Sequence[Aggregation]) -> list[Op]:
    """All components of a list of aggregates, in order."""
    return [op for agg in aggs for op in agg.ops]


def _number(value: Any, agg: Aggregation) -> Number:
    """The field's number as it is: an int stays an int, so sums of ints stay exact."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError("transform", f"{agg.fn}:{agg.field} needs a number, got {value!r}")
    return value


def float_digits(value: Number) -> Number:
    """A computed float with at most 15 significant digits, the decimal digits a double
    holds (DBL_DIG); ints as they are.

    Sums and means are rounded so, once, as they leave the window (the components in
    Redis keep every bit): a sum of decimal amounts then reads as the decimal it is
    (28814.76, not 28814.759999999995). For money that must be exact, send integer cents:
    int sums stay exact at any size.
    """
    return float(f"{value:.15g}") if type(value) is float else value


def mean_of(total: Number, count: Number) -> float:
    """A mean: of an int sum the division as it is (rounded once, no noise to hide), of a
    float sum with 15 significant digits (`float_digits`)."""
    mean = total / count
    return mean if type(total) is int else float(float_digits(mean))


def _missing(name: str | None) -> RecordError:
    return RecordError("transform", f"aggregate field {name!r} is missing")


@dataclass(frozen=True, slots=True)
class Kernel:
    """The compiled rules of one aggregate list (see the module docstring).

    Attributes:
        components: `(value, ts, offset) -> components` of one record; RecordError when a
            field is missing or not a number.
        fold: `(a, b) -> merged` of two component lists of this aggregate list.
        results: `components -> {name: final value}`.
    """

    components: Callable[[Any, int, int], list[Component]]
    fold: Fold
    results: Callable[[Sequence[Component]], dict[str, Any]]


_MERGE: dict[str, str] = {
    "add": "a{i} + b{i}",
    "min": "a{i} if a{i} <= b{i} else b{i}",
    "max": "a{i} if a{i} >= b{i} else b{i}",
    "first": "min(str(a{i}), str(b{i}))",
    "last": "max(str(a{i}), str(b{i}))",
    "set": "b{i}",
}


def _components_source(aggs: Sequence[Aggregation]) -> list[str]:
    lines = ["def components(value, ts, offset):"]
    fetched: dict[str | None, str] = {}
    items: list[str] = []
    for i, agg in enumerate(aggs):
        if agg.fn == "count":
            items.append("1")
            continue
        if agg.fn == "custom":
            items.append('""')  # the window engine folds it from the stored accumulator
            continue
        if agg.fn == "offset":
            items.append("offset")
            continue
        var = fetched.get(agg.field)
        if var is None:  # each field read once, where the generic loop first reads it
            var = fetched[agg.field] = f"f{len(fetched)}"
            lines += [
                "    try:",
                f"        {var} = value[{agg.field!r}]",
                "    except (KeyError, TypeError):",
                f"        raise _missing({agg.field!r}) from None",
            ]
        if agg.fn in ("first", "last"):
            items.append(f"_pack(ts, offset, {var})")
            continue
        # No bool, no subclass on the fast path; `_number` checks (and names) the rest.
        lines.append(
            f"    n{i} = {var} if type({var}) is float or type({var}) is int"
            f" else _number({var}, _aggs[{i}])"
        )
        items.append(f"n{i}, 1" if agg.fn == "mean" else f"n{i}")
    return [*lines, f"    return [{', '.join(items)}]"]


def _unpacked(prefix: str, count: int, source: str) -> str:
    if count == 0:
        return (
            f"    if len({source}) != 0: raise ValueError('components of another aggregate list')"
        )
    names = ", ".join(f"{prefix}{i}" for i in range(count))
    return f"    {names}, = {source}"


def _fold_source(ops: Sequence[Op]) -> list[str]:
    merged = ", ".join(_MERGE[op].format(i=i) for i, op in enumerate(ops))
    return [
        "def fold(a, b):",
        _unpacked("a", len(ops), "a"),
        _unpacked("b", len(ops), "b"),
        f"    return [{merged}]",
    ]


def _results_source(aggs: Sequence[Aggregation]) -> list[str]:
    items: list[str] = []
    i = 0
    for agg in aggs:
        if agg.fn == "mean":
            value = f"_mean(c{i}, c{i + 1}) if c{i + 1} else None"
        elif agg.fn == "sum":
            value = f"_digits(c{i})"
        elif agg.fn == "count":
            value = f"int(c{i})"
        elif agg.fn == "custom":
            value = f"_loads(str(c{i}))"
        elif agg.fn in ("first", "last"):
            value = f"_unpack(str(c{i}))"
        else:
            value = f"c{i}"
        items.append(f"{agg.name!r}: {value}")
        i += len(agg.ops)
    return ["def results(c):", _unpacked("c", i, "c"), f"    return {{{', '.join(items)}}}"]


def _compiled(lines: list[str], scope: dict[str, Any]) -> dict[str, Any]:
    """Run generated definitions in `scope`; returns it with them."""
    exec(compile("\n".join(lines), "<rill aggregates>", "exec"), scope)  # noqa: S102 - generated here
    return scope


@functools.lru_cache(maxsize=64)
def kernel(aggs: tuple[Aggregation, ...]) -> Kernel:
    """The compiled rules of an aggregate list (cached: compiled once per list)."""
    scope: dict[str, Any] = {
        "_aggs": aggs,
        "_number": _number,
        "_missing": _missing,
        "_pack": pack_ordered,
        "_unpack": unpack_ordered,
        "_loads": orjson.loads,
        "_digits": float_digits,
        "_mean": mean_of,
    }
    scope = _compiled([*_components_source(aggs), *_results_source(aggs)], scope)
    return Kernel(scope["components"], fold_of(tuple(ops_of(aggs))), scope["results"])


@functools.lru_cache(maxsize=64)
def fold_of(ops: tuple[Op, ...]) -> Fold:
    """The merge of two component lists of these ops, compiled (cached per ops)."""
    fold: Fold = _compiled(_fold_source(ops), {})["fold"]
    return fold


def record_components(
    aggs: Sequence[Aggregation], value: Any, ts: int, offset: int
) -> list[Component]:
    """One record's contribution to each component."""
    return kernel(tuple(aggs)).components(value, ts, offset)


def merge(ops: Sequence[Op], a: Sequence[Component], b: Sequence[Component]) -> list[Component]:
    """Merge two component lists (the same rule as the Redis script)."""
    return fold_of(tuple(ops))(a, b)


def results(aggs: Sequence[Aggregation], comps: Sequence[Component]) -> dict[str, Any]:
    """Final values of the aggregates from their components."""
    return kernel(tuple(aggs)).results(comps)
