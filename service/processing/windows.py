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
- count_tumbling(count) / count_hopping(count, advance): windows of `count` records of a
  key, in the partition's offset order, a new one every `advance` records (tumbling:
  every `count`). No event time: they close when full (`count_windows.py`).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from service.errors import ConfigError, EventTimeError, RecordError
from service.processing.aggregates import Aggregation, Fold
from service.processing.count_windows import HIDDEN
from service.window_state import Component, Delta

WindowKind: TypeAlias = Literal[
    "tumbling", "hopping", "sliding", "session", "count_tumbling", "count_hopping"
]
WINDOW_KINDS: tuple[WindowKind, ...] = (
    "tumbling",
    "hopping",
    "sliding",
    "session",
    "count_tumbling",
    "count_hopping",
)
COUNT_KINDS: tuple[WindowKind, ...] = ("count_tumbling", "count_hopping")
EMIT_MODES = ("final", "update")
# Event times a datetime can hold (0001-01-01 to 9999-12-31, UTC): the range every
# encoding of a time (first/last ordering, Avro timestamp-millis, ISO text) represents.
EARLIEST_MS = -62_135_596_800_000
LATEST_MS = 253_402_300_799_999
DEFAULT_MAX_FUTURE_MS = 3_600_000


def _arg(name: str) -> str:
    return name


def check_window(
    kind: str,
    size_ms: int,
    advance_ms: int,
    gap_ms: int,
    grace_ms: int,
    name: Callable[[str], str] = _arg,
    count: int = 0,
    count_advance: int = 0,
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
        count: records per window (count_tumbling, count_hopping).
        count_advance: records between the starts of two windows (count_hopping).

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
    if kind in COUNT_KINDS and count <= 0:
        raise ConfigError(
            f"a {kind} window needs {name('count')} > 0 (got {count}): set the number of "
            "records per window"
        )
    if kind == "count_hopping" and not 0 < count_advance <= count:
        raise ConfigError(
            f"a count_hopping window needs 0 < {name('count_advance')} <= {name('count')} "
            f"(got {count_advance} and {count}): set how many records apart windows start, "
            "e.g. half the count"
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
    count: int = 0
    count_advance: int = 0

    def __post_init__(self) -> None:
        check_window(
            self.kind,
            self.size_ms,
            self.advance_ms,
            self.gap_ms,
            self.grace_ms,
            count=self.count,
            count_advance=self.count_advance,
        )

    @property
    def counted(self) -> bool:
        """Count windows: assigned by `count_windows.CountWindows`, never by time."""
        return self.kind in COUNT_KINDS

    @property
    def step(self) -> int:
        """Records between the starts of two count windows (tumbling: the count)."""
        return self.count_advance if self.kind == "count_hopping" else self.count

    def assign(self, ts: int) -> list[tuple[int, int]]:
        """The `[start, end)` windows (or sliding buckets / session seeds) of event time ts.

        Count windows are not assigned by time (`count_windows.CountWindows`).
        """
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
    if kind is dt.datetime and got.tzinfo is dt.UTC:
        # fastavro's timestamp-millis; every UTC datetime is within the years 1-9999.
        ms: int = (got - _EPOCH) // _ONE_MS
        return ms
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
class PartitionBatch:
    """What one partition's part of a batch does to window state."""

    first_offset: int = -1
    last_offset: int = -1
    deltas: dict[tuple[str, int, int], list[Component]] = field(default_factory=dict)

    def add(self, fold: Fold, key: str, span: tuple[int, int], comps: list[Component]) -> None:
        """Fold one record's components into its window (`fold`: the aggregates' merge)."""
        slot = (key, span[0], span[1])
        old = self.deltas.get(slot)
        self.deltas[slot] = comps if old is None else fold(old, comps)

    def as_deltas(self, spec: WindowSpec, fold: Fold) -> list[Delta]:
        """The deltas to send; session seeds of a key are merged into mini-sessions."""
        if spec.kind != "session":
            return [Delta(k, s, e, c) for (k, s, e), c in self.deltas.items()]
        return list(
            merge_sessions(
                (Delta(k, s, e, c) for (k, s, e), c in sorted(self.deltas.items())), fold
            )
        )


def merge_sessions(seeds: Iterable[Delta], fold: Fold) -> Iterable[Delta]:
    """Merge overlapping `[first, last + gap)` spans of each key (input sorted by key, start)."""
    current: Delta | None = None
    for seed in seeds:
        if current is not None and current.key == seed.key and seed.start < current.end:
            current = Delta(
                current.key,
                current.start,
                max(current.end, seed.end),
                fold(current.comps, seed.comps),
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
        taken = {agg.name for agg in HIDDEN} & {agg.name for agg in self.aggregations}
        if self.spec.counted and taken:
            raise ConfigError(
                f"aggregate name {sorted(taken)[0]!r} is rill's own in a count window: "
                "name it otherwise (`... as name`)"
            )

    @property
    def stored(self) -> tuple[Aggregation, ...]:
        """The aggregates whose components the store keeps: the user's, and for count
        windows the last offset and the record count after them (`count_windows.HIDDEN`)."""
        return (*self.aggregations, *HIDDEN) if self.spec.counted else self.aggregations


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
