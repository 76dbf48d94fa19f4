"""A pure-Python reference model of rill's windows, written naively on purpose.

It keeps every record and recomputes each window from scratch, so it shares no code with
the incremental implementation it checks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rec:
    """One input record of the model."""

    partition: int
    offset: int
    key: str
    ts: int
    amount: float


def _aggregate(recs: Sequence[Rec]) -> dict[str, Any]:
    ordered = sorted(recs, key=lambda r: (r.ts, r.offset))
    amounts = [r.amount for r in recs]
    return {
        "count": len(recs),
        "sum_amount": math.fsum(amounts),
        "min_amount": min(amounts),
        "max_amount": max(amounts),
        "mean_amount": math.fsum(amounts) / len(amounts),
        "first_amount": ordered[0].amount,
        "last_amount": ordered[-1].amount,
    }


AGGREGATES = [
    "count",
    "sum:amount",
    "min:amount",
    "max:amount",
    "mean:amount",
    "first:amount",
    "last:amount",
]


def _windows_of_key(
    kind: str, size: int, advance: int, gap: int, recs: list[Rec]
) -> dict[tuple[int, int], list[Rec]]:
    out: dict[tuple[int, int], list[Rec]] = defaultdict(list)
    if kind == "tumbling":
        for r in recs:
            start = (r.ts // size) * size
            out[(start, start + size)].append(r)
    elif kind == "hopping":
        for r in recs:
            start = (r.ts // advance) * advance
            while start > r.ts - size:
                out[(start, start + size)].append(r)
                start -= advance
    elif kind == "sliding":
        for t in {r.ts for r in recs}:
            out[(t - size + 1, t + 1)] = [r for r in recs if t - size + 1 <= r.ts <= t]
    else:
        ordered = sorted(recs, key=lambda r: r.ts)
        group = [ordered[0]]
        for r in ordered[1:]:
            if r.ts - group[-1].ts < gap:
                group.append(r)
            else:
                out[(group[0].ts, group[-1].ts + gap)] = group
                group = [r]
        out[(group[0].ts, group[-1].ts + gap)] = group
    return out


@dataclass
class ModelResult:
    """What the model says a stream yields."""

    windows: dict[tuple[str, int, int], dict[str, Any]]
    closed: set[tuple[str, int, int]]
    late: set[tuple[int, int]]


def run_model(
    records: Sequence[Rec], kind: str, size: int = 0, advance: int = 0, gap: int = 0, grace: int = 0
) -> ModelResult:
    """Windows (all, and those closed by the end) and late records of a stream.

    Records are taken per partition in offset order; the watermark of a partition is
    its max event time so far minus grace; a record below it is late.
    """
    by_partition: dict[int, list[Rec]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition[r.partition].append(r)
    windows: dict[tuple[str, int, int], dict[str, Any]] = {}
    closed: set[tuple[str, int, int]] = set()
    late: set[tuple[int, int]] = set()
    for recs in by_partition.values():
        wm = -(2**62)
        accepted: dict[str, list[Rec]] = defaultdict(list)
        for r in recs:
            if r.ts < wm:
                late.add((r.partition, r.offset))
                continue
            accepted[r.key].append(r)
            wm = max(wm, r.ts - grace)
        for key, krecs in accepted.items():
            for (start, end), members in _windows_of_key(kind, size, advance, gap, krecs).items():
                windows[(key, start, end)] = _aggregate(members)
                if end <= wm:
                    closed.add((key, start, end))
    return ModelResult(windows, closed, late)


def same_values(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Aggregates equal, floats within rounding of a different summation order."""
    if a.keys() != b.keys():
        return False
    return all(
        math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-6)
        if isinstance(a[k], float) or isinstance(b[k], float)
        else a[k] == b[k]
        for k in a
    )


def run_count_model(records: Sequence[Rec], count: int, step: int) -> ModelResult:
    """Count windows, naively: a key's records in offset order, window j is its records
    j*step .. j*step + count - 1; full windows are closed, partial ones open.

    A window is named as rill names it: (key, first record's offset, last offset + 1);
    first/last follow offsets (count windows have no event time).
    """
    by_key: dict[tuple[int, str], list[Rec]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key[(r.partition, r.key)].append(r)
    windows: dict[tuple[str, int, int], dict[str, Any]] = {}
    closed: set[tuple[str, int, int]] = set()
    for (_, key), recs in by_key.items():
        for begin in range(0, len(recs), step):
            members = recs[begin : begin + count]
            name = (key, members[0].offset, members[-1].offset + 1)
            windows[name] = _aggregate(
                [Rec(r.partition, r.offset, r.key, 0, r.amount) for r in members]
            )
            if len(members) == count:
                closed.add(name)
    return ModelResult(windows, closed, set())
