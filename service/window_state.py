"""Window-state values: what the aggregator hands a store and what the store answers.

Plain values below every layer (like `records.py`): `processing/` builds and reads them,
`state/` stores them, `runtime/` carries them between the two. Nothing here does I/O.

A component is one number or text an aggregate keeps per window; `Op` is how two of
them merge (the rules are `processing/aggregates.py`'s and the Lua scripts'). First/last
components are text that sorts by (event time, offset): `pack_ordered`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import orjson

from service.records import DlqEntry, OutRecord

Op: TypeAlias = Literal["add", "min", "max", "first", "last", "set"]
Component: TypeAlias = int | float | str
ApplyStatus: TypeAlias = Literal["ok", "fenced", "stale", "lost"]

NO_TIME: Final = -(2**62)
ORDERED_TIME_CHARS: Final = 16
ORDER_PREFIX_CHARS: Final = 32


def ordered_time(ts: int) -> str:
    """A time in ms as 16 characters that sort as text in time order (the scripts' `ord`).

    Args:
        ts: above -10**15 and below 10**16 (a negative one is `-` and ts + 10**15 in 15
            digits, which sorts below every non-negative one and in time order).
    """
    return f"{ts:016d}" if ts >= 0 else f"-{ts + 10**15:015d}"


def pack_ordered(ts: int, offset: int, value: Any) -> str:
    """A first/last component: sorts as text by (event time, offset), carries the value.

    Args:
        ts: event time in ms, above -10**15 (see `ordered_time`).
        offset: the record's offset.
        value: any JSON-serializable value (others are written with `str`).
    """
    try:
        text = orjson.dumps(value, default=str).decode()
    except TypeError:  # an integer beyond 64 bits (or a non-text dict key): json writes it
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    return ordered_time(ts) + f"{offset:016d}" + text


def unpack_ordered(text: str) -> Any:
    """The value of a `pack_ordered` component."""
    return orjson.loads(text[ORDER_PREFIX_CHARS:])


@dataclass(slots=True)
class Delta:
    """A batch's pre-aggregate for one window (or bucket / session seed) of one key."""

    key: str
    start: int
    end: int
    comps: list[Component]


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One window as the script returns it: closed (`final`) or an update."""

    final: bool
    key: str
    start: int
    end: int
    comps: list[Component]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """What one applied batch (or tick) left to deliver: window rows and DLQ entries."""

    seq: int
    rows: list[WindowRow]
    dlq: list[DlqEntry]
    # A stateless pipeline's outputs (one that de-duplicates keeps them in the outbox).
    outputs: list[OutRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Claim:
    """A partition's state as its new owner finds it."""

    epoch: int
    applied: int
    max_ts: int
    watermark: int
    outbox: list[OutboxEntry]
    seq: int = 0
    # group_by: per input partition, the highest source position applied here.
    marks: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApplyCall:
    """One partition's part of a batch (or of an idle tick: no offsets, no deltas)."""

    epoch: int
    first_offset: int
    last_offset: int
    max_ts: int
    watermark: int
    ack_seq: int
    deltas: Sequence[Delta]
    dlq: Sequence[DlqEntry] = ()
    # The outbox sequence the caller last saw (its claim's, then each reply's): a replay
    # of a call that ran finds Redis past it and answers `stale`; -1 checks nothing.
    seq: int = -1
    # De-duplication: the ids kept, with their expiry time, recorded in the `seen` set;
    # ids expiring at or below `trim_ms` are forgotten first.
    seen: Mapping[str, int] = field(default_factory=dict)
    trim_ms: int = NO_TIME
    # A stateless pipeline's outputs of the call's records, kept in the outbox.
    outputs: Sequence[OutRecord] = ()
    # group_by: per input partition, the highest source position this call applies.
    marks: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApplyReply:
    """What the apply script did for one partition."""

    status: ApplyStatus
    seq: int = 0
    watermark: int = NO_TIME
    applied: int = -1
    rows: list[WindowRow] = field(default_factory=list)
    open_windows: int = 0
