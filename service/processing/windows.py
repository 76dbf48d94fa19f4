"""Windows, as pure functions: assignment, late detection and batch pre-aggregation.

Every window is half-open, `[start, end)`, and closes when its partition's watermark
reaches `end`. A record is late when its event time is below the watermark, so a closed
window never receives another record.

- tumbling(size): `[ts - ts % size, +size)`
- hopping(size, advance): every `[k*advance, k*advance + size)` holding ts
- sliding(size): one window per distinct event time t of a key, `[t - size + 1, t + 1)`,
  holding the key's records in that range. Stored as per-timestamp buckets.
- session(gap): records of a key whose consecutive event times differ by less than `gap`;
  the window is `[first, last + gap)`.

Aggregates are lists of components, each merged by one associative operation (`add`,
`min`, `max`, `first`, `last`); the Redis script merges them the same way. Numeric
components stay integers while every input is an integer (exact at any size, in Python
and in the scripts), and become floats once a float is merged in.

Event times are integer milliseconds within the years 1-9999 (`EARLIEST_MS`,
`LATEST_MS`); a non-finite, unparsable or out-of-range time is a DLQ entry, never a crash.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import orjson

from service.errors import ConfigError, EventTimeError, RecordError
from service.records import InRecord
from service.state.codec import pack_ordered, unpack_ordered

WindowKind: TypeAlias = Literal["tumbling", "hopping", "sliding", "session"]
WINDOW_KINDS: tuple[WindowKind, ...] = ("tumbling", "hopping", "sliding", "session")
EMIT_MODES = ("final", "update")
Op: TypeAlias = Literal["add", "min", "max", "first", "last", "set"]
Component: TypeAlias = int | float | str
Number: TypeAlias = int | float
AGG_FUNCTIONS = ("count", "sum", "min", "max", "mean", "first", "last")
# Event times a datetime can hold (0001-01-01 to 9999-12-31, UTC): the range every
# encoding of a time (first/last ordering, Avro timestamp-millis, ISO text) represents.
EARLIEST_MS = -62_135_596_800_000
LATEST_MS = 253_402_300_799_999
DEFAULT_MAX_FUTURE_MS = 3_600_000
_INTEGER = re.compile(r"-?[0-9]+")


def _arg(name: str) -> str:
    return name


def check_window(
    kind: str,
    size_ms: int,
    advance_ms: int,
    gap_ms: int,
    grace_ms: int,
    name: Callable[[str], str] = _arg,
) -> None:
    """Refuse a window definition that cannot assign records.

    The one check of the Python API (`WindowSpec`) and of the settings, so a bad window
    fails at start, never at the first record.

    Args:
        kind: tumbling, hopping, sliding or session.
        size_ms: the window length (tumbling, hopping, sliding).
        advance_ms: the hop (hopping).
        gap_ms: the inactivity gap that closes a session.
        grace_ms: how long after its end a window still takes late records.
        name: how to name an argument in the message (`advance_ms`, or a setting).

    Raises:
        ConfigError: naming the argument and how to fix it.
    """
    if kind not in WINDOW_KINDS:
        raise ConfigError(
            f"{name('kind')}={kind!r} is not a window kind: use one of {', '.join(WINDOW_KINDS)}"
        )
    if kind in ("tumbling", "hopping", "sliding") and size_ms <= 0:
        raise ConfigError(
            f"a {kind} window needs {name('size_ms')} > 0 (got {size_ms}): set the window length"
        )
    if kind == "hopping" and not 0 < advance_ms <= size_ms:
        raise ConfigError(
            f"a hopping window needs 0 < {name('advance_ms')} <= {name('size_ms')} (got "
            f"{advance_ms} and {size_ms}): set the hop, e.g. half the size"
        )
    if kind == "session" and gap_ms <= 0:
        raise ConfigError(
            f"a session window needs {name('gap_ms')} > 0 (got {gap_ms}): set the inactivity "
            "gap that closes a session"
        )
    if grace_ms < 0:
        raise ConfigError(f"{name('grace_ms')} must be >= 0 (got {grace_ms}): use 0 for no grace")


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """What windows a record falls into, and how late it may be.

    Raises:
        ConfigError: the definition cannot assign records (see `check_window`).
    """

    kind: WindowKind
    size_ms: int = 0
    advance_ms: int = 0
    gap_ms: int = 0
    grace_ms: int = 0

    def __post_init__(self) -> None:
        check_window(self.kind, self.size_ms, self.advance_ms, self.gap_ms, self.grace_ms)

    def assign(self, ts: int) -> list[tuple[int, int]]:
        """The `[start, end)` windows (or sliding buckets / session seeds) of event time ts."""
        if self.kind == "tumbling":
            start = ts - ts % self.size_ms
            return [(start, start + self.size_ms)]
        if self.kind == "hopping":
            start = ts - ts % self.advance_ms
            spans = []
            while start > ts - self.size_ms:
                spans.append((start, start + self.size_ms))
                start -= self.advance_ms
            return spans[::-1]
        if self.kind == "sliding":
            return [(ts, ts + 1)]
        return [(ts, ts + self.gap_ms)]


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
}


def ops_of(aggs: Sequence[Aggregation]) -> list[Op]:
    """All components of a list of aggregates, in order."""
    return [op for agg in aggs for op in agg.ops]


def _number(value: Any, agg: Aggregation) -> Number:
    """The field's number as it is: an int stays an int, so sums of ints stay exact."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError("transform", f"{agg.fn}:{agg.field} needs a number, got {value!r}")
    return value


def _num(comp: Component) -> Number:
    """A numeric component (text only where a caller kept the stored form)."""
    if isinstance(comp, str):
        return int(comp) if _INTEGER.fullmatch(comp) else float(comp)
    return comp


def record_components(
    aggs: Sequence[Aggregation], value: Any, ts: int, offset: int
) -> list[Component]:
    """One record's contribution to each component."""
    out: list[Component] = []
    for agg in aggs:
        if agg.fn == "count":
            out.append(1)
            continue
        if agg.fn == "custom":
            out.append("")  # the window engine folds it from the stored accumulator
            continue
        try:
            got = value[agg.field]
        except (KeyError, TypeError):
            raise RecordError("transform", f"aggregate field {agg.field!r} is missing") from None
        if agg.fn in ("first", "last"):
            out.append(pack_ordered(ts, offset, got))
        elif agg.fn == "mean":
            out.extend((_number(got, agg), 1))
        else:
            out.append(_number(got, agg))
    return out


def merge(ops: Sequence[Op], a: Sequence[Component], b: Sequence[Component]) -> list[Component]:
    """Merge two component lists (the same rule as the Redis script).

    int + int stays an int (exact at any size); min and max keep the winning component
    as it is (the first of equals).
    """
    out: list[Component] = []
    for op, x, y in zip(ops, a, b, strict=True):
        if op == "add":
            out.append(_num(x) + _num(y))
        elif op == "min":
            out.append(x if _num(x) <= _num(y) else y)
        elif op == "max":
            out.append(x if _num(x) >= _num(y) else y)
        elif op == "first":
            out.append(min(str(x), str(y)))
        elif op == "set":
            out.append(y)
        else:
            out.append(max(str(x), str(y)))
    return out


def results(aggs: Sequence[Aggregation], comps: Sequence[Component]) -> dict[str, Any]:
    """Final values of the aggregates from their components."""
    out: dict[str, Any] = {}
    i = 0
    for agg in aggs:
        if agg.fn == "mean":
            total, count = _num(comps[i]), _num(comps[i + 1])
            out[agg.name] = total / count if count else None
            i += 2
            continue
        comp = comps[i]
        i += 1
        if agg.fn == "count":
            out[agg.name] = int(_num(comp))
        elif agg.fn == "custom":
            out[agg.name] = orjson.loads(str(comp))
        elif agg.fn in ("first", "last"):
            out[agg.name] = unpack_ordered(str(comp))
        else:
            out[agg.name] = _num(comp)
    return out


def _time_error(message: str) -> RecordError:
    error = RecordError("transform", message)
    error.__cause__ = EventTimeError(message)
    return error


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)


def datetime_ms(value: dt.datetime) -> int:
    """Milliseconds since the epoch, exactly (a naive datetime is local time, as in Python).

    The whole seconds are an exact float; the milliseconds come from the integer
    microseconds, never through a float product (which is 1 ms off for some times).
    """
    if value.utcoffset() is not None:
        # Aware (fastavro's timestamp-millis): exact integer arithmetic on the timedelta.
        return (value - _EPOCH) // _ONE_MS
    try:
        seconds = int(value.replace(microsecond=0).timestamp())
    except (OverflowError, OSError, ValueError) as exc:
        raise _time_error(f"event time {value!r} cannot be converted: {exc}") from None
    return seconds * 1000 + value.microsecond // 1000


def event_time(value: Any, time_field: str | None, kafka_ts: int) -> int:
    """Event time in ms: a field (int ms, float ms, datetime) or the Kafka timestamp.

    Raises:
        RecordError: the field is missing or not a time, not finite, or outside the years
            1-9999 (`EARLIEST_MS`..`LATEST_MS`); stage transform, cause `EventTimeError`.
    """
    if time_field is None:
        return in_range(kafka_ts, "the Kafka timestamp")
    try:
        got = value[time_field]
    except (KeyError, TypeError):
        raise RecordError("transform", f"event time field {time_field!r} is missing") from None
    kind = type(got)
    if kind is int or kind is float:  # the common case first: no bool, no subclass
        if kind is float and not math.isfinite(got):
            raise _time_error(f"event time field {time_field!r} is not finite: {got!r}")
        ts = int(got)
        if EARLIEST_MS <= ts <= LATEST_MS:
            return ts
        return in_range(ts, f"event time field {time_field!r}")
    if isinstance(got, dt.datetime):
        return in_range(datetime_ms(got), f"event time field {time_field!r}")
    if isinstance(got, int | float) and not isinstance(got, bool):
        if isinstance(got, float) and not math.isfinite(got):
            raise _time_error(f"event time field {time_field!r} is not finite: {got!r}")
        return in_range(int(got), f"event time field {time_field!r}")
    raise RecordError("transform", f"event time field {time_field!r} is not a timestamp: {got!r}")


def in_range(ts: int, what: str) -> int:
    """`ts` when it is within the years 1-9999, else a RecordError naming `what`."""
    if not EARLIEST_MS <= ts <= LATEST_MS:
        raise _time_error(f"{what} is {ts} ms, outside the years 1-9999")
    return ts


def check_future(ts: int, now_ms: int, max_future_ms: int) -> RecordError | None:
    """Why `ts` is too far ahead of the wall clock to be windowed, or None (0: no limit).

    One such record would move its partition's watermark for good, making every later
    record late; it goes to the DLQ instead.
    """
    if max_future_ms <= 0 or ts <= now_ms + max_future_ms:
        return None
    return _time_error(
        f"event time {ts} is {ts - now_ms} ms ahead of the wall clock {now_ms} "
        f"(RILL_WINDOW_MAX_FUTURE_MS={max_future_ms})"
    )


@dataclass(slots=True)
class PartitionClock:
    """A partition's watermark state, as the worker caches it between batches."""

    max_ts: int = -(2**62)
    watermark: int = -(2**62)

    def observe(self, ts: int, grace_ms: int) -> bool:
        """Take one record's event time; False when it is late (below the watermark)."""
        if ts < self.watermark:
            return False
        if ts > self.max_ts:
            self.max_ts = ts
            self.watermark = max(self.watermark, ts - grace_ms)
        return True


@dataclass(slots=True)
class Delta:
    """A batch's pre-aggregate for one window (or bucket / session seed) of one key."""

    key: str
    start: int
    end: int
    comps: list[Component]


@dataclass(slots=True)
class PartitionBatch:
    """What one partition's part of a batch does to window state."""

    first_offset: int = -1
    last_offset: int = -1
    deltas: dict[tuple[str, int, int], list[Component]] = field(default_factory=dict)

    def add(
        self, ops: Sequence[Op], key: str, span: tuple[int, int], comps: list[Component]
    ) -> None:
        """Fold one record's components into its window."""
        slot = (key, span[0], span[1])
        old = self.deltas.get(slot)
        self.deltas[slot] = comps if old is None else merge(ops, old, comps)

    def as_deltas(self, spec: WindowSpec, ops: Sequence[Op]) -> list[Delta]:
        """The deltas to send; session seeds of a key are merged into mini-sessions."""
        if spec.kind != "session":
            return [Delta(k, s, e, c) for (k, s, e), c in self.deltas.items()]
        return list(
            merge_sessions((Delta(k, s, e, c) for (k, s, e), c in sorted(self.deltas.items())), ops)
        )


def merge_sessions(seeds: Iterable[Delta], ops: Sequence[Op]) -> Iterable[Delta]:
    """Merge overlapping `[first, last + gap)` spans of each key (input sorted by key, start)."""
    current: Delta | None = None
    for seed in seeds:
        if current is not None and current.key == seed.key and seed.start < current.end:
            current = Delta(
                current.key,
                current.start,
                max(current.end, seed.end),
                merge(ops, current.comps, seed.comps),
            )
            continue
        if current is not None:
            yield current
        current = Delta(seed.key, seed.start, seed.end, list(seed.comps))
    if current is not None:
        yield current


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """The window step of a pipeline.

    Attributes:
        max_future_ms: a record whose event time is further than this ahead of the wall
            clock goes to the DLQ (0: no limit).

    Raises:
        ConfigError: no aggregations, an unknown emit mode or a negative idle timeout.
    """

    spec: WindowSpec
    aggregations: tuple[Aggregation, ...]
    time_field: str | None
    emit: str
    idle_timeout_ms: int
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS

    def __post_init__(self) -> None:
        if not self.aggregations:
            raise ConfigError("a window needs aggregates, e.g. aggregates=['count', 'sum:amount']")
        if self.emit not in EMIT_MODES:
            raise ConfigError(
                f"emit={self.emit!r} is not an emit mode: use final (once, when the window "
                "closes) or update (each batch that changes it)"
            )
        if self.idle_timeout_ms < 0:
            raise ConfigError(
                f"idle_timeout_ms must be >= 0 (got {self.idle_timeout_ms}): use 0 to never "
                "advance an idle partition's watermark"
            )
        if self.max_future_ms < 0:
            raise ConfigError(
                f"max_future_ms must be >= 0 (got {self.max_future_ms}): use 0 for no limit"
            )


@dataclass(frozen=True, slots=True)
class Keyed:
    """A transformed record on its way into a window.

    `ts` is its event time where the batch already read and checked it (the aggregator
    reads it from the value otherwise).
    """

    record: InRecord
    key: str
    value: Any
    ts: int | None = None


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One window's aggregate, final (`closed`) or an update."""

    key: str
    start: int
    end: int
    values: dict[str, Any]
    final: bool

    def as_record(self) -> dict[str, Any]:
        """The output value."""
        return {"key": self.key, "window_start": self.start, "window_end": self.end, **self.values}
