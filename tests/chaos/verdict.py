"""What a scenario's sink and DLQ say against the reference model, as one table row.

Pure: the scenario reads the topics, the model says what they must hold, and this
counts the differences.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.window_model import ModelResult, same_values

# `make soak` writes its repeated runs elsewhere, leaving the CI table as it is.
RESULTS = Path(os.environ.get("RILL_CHAOS_RESULTS") or Path(__file__).with_name("results.md"))
Window = tuple[str, int, int]
Source = tuple[int, int]


@dataclass
class Row:
    """One scenario x mode: the counts of the results table."""

    scenario: str
    mode: str
    records_in: int = 0
    faults: str = ""
    sink_duplicates: int = 0
    dlq_duplicates: int = 0
    records_lost: int = 0
    dlq_lost: int = 0
    dlq_unexpected: int = 0
    windows_wrong: int = 0
    windows_missing: int = 0
    worker_exits: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    missing_allowed: bool = False
    windows: int | None = None  # windows of the input (live rows)
    late: dict[str, int] | None = None  # records DLQ'd as late, by cause (live rows)
    held: int = 0  # windows of partitions held after a state loss (missing allowed)
    evidence: list[str] = field(default_factory=list)  # what a failed run leaves in its logs

    @property
    def failures(self) -> list[str]:
        """Why this row fails the run (empty when it passes)."""
        out = list(self.problems)
        if self.records_lost:
            out.append(f"{self.records_lost} records lost")
        if self.windows_wrong:
            out.append(f"{self.windows_wrong} windows with wrong values")
        if self.windows_missing and not self.missing_allowed:
            out.append(f"{self.windows_missing} windows missing")
        if self.dlq_unexpected:
            out.append(f"{self.dlq_unexpected} records in the DLQ that belong in windows")
        if self.mode == "exactly_once" and (self.sink_duplicates or self.dlq_duplicates):
            out.append(
                f"exactly-once duplicates: {self.sink_duplicates} in the sink, "
                f"{self.dlq_duplicates} in the DLQ"
            )
        return out


def judge(
    row: Row,
    model: ModelResult,
    emissions: Iterable[tuple[Window, dict[str, Any]]],
    dlq_sources: Sequence[Source],
    expected_dlq: set[Source],
    committed: dict[int, int] | None = None,
    held: set[Window] | None = None,
) -> Row:
    """Fill `row`'s counts from the sink's emissions and the DLQ's source offsets.

    With `committed` (a scenario that holds partitions by design), a DLQ entry at or past
    its partition's committed offset is held, not lost, and so is a missing window in
    `held` (one with a record at or past the committed offset).
    """
    due = expected_dlq
    if committed is not None:
        due = {(p, o) for p, o in expected_dlq if o < committed.get(p, 0)}
    seen: dict[Window, list[dict[str, Any]]] = {}
    for window, values in emissions:
        seen.setdefault(window, []).append(values)
    row.sink_duplicates = sum(len(v) - 1 for v in seen.values())
    wrong = 0
    lost = 0
    for window, emitted in seen.items():
        want = model.windows.get(window)
        if want is None or not all(same_values(v, want) for v in emitted):
            wrong += 1
        if want is not None:
            lost += max(0, int(want["count"]) - min(int(v.get("count", 0)) for v in emitted))
    missing = model.closed - set(seen)
    lost += sum(int(model.windows[w]["count"]) for w in missing - (held or set()))
    counted = Counter(dlq_sources)
    row.dlq_duplicates = sum(n - 1 for n in counted.values())
    row.dlq_lost = len(due - set(counted))
    row.dlq_unexpected = len(set(counted) - expected_dlq)
    row.windows_wrong = wrong
    row.windows_missing = len(missing)
    row.records_lost = lost + row.dlq_lost
    return row


def judge_dedupe(
    row: Row,
    ids: set[str],
    dups: set[Source],
    bad: set[Source],
    sink: Counter[str],
    dup_entries: Sequence[Source],
    other_entries: Sequence[Source],
) -> Row:
    """Fill a dedupe row: every distinct id in the sink, exactly the input's duplicates
    (by position) in the DLQ with stage `duplicate`, the poison records with theirs.

    `lost` counts ids missing from the sink and DLQ entries missing; `DLQ unexpected`
    counts records dropped as duplicates that are not (or DLQ'd under another stage);
    duplicates (extra copies) fail exactly-once rows only.
    """
    row.sink_duplicates = sum(n - 1 for n in sink.values())
    got_dups, got_other = Counter(dup_entries), Counter(other_entries)
    row.dlq_duplicates = sum(n - 1 for n in got_dups.values()) + sum(
        n - 1 for n in got_other.values()
    )
    row.dlq_lost = len(dups - set(got_dups)) + len(bad - set(got_other))
    row.dlq_unexpected = len(set(got_dups) - dups) + len(set(got_other) - bad)
    row.records_lost = len(ids - set(sink)) + row.dlq_lost
    if set(sink) - ids:
        row.problems.append(f"{len(set(sink) - ids)} ids in the sink that no input holds")
    row.evidence.append(f"{len(ids)} ids, {len(dups)} duplicates, {len(bad)} poison")
    return row


HEADER = (
    "| scenario | mode | records in | faults | lost | sink dup | DLQ dup | DLQ lost "
    "| DLQ unexpected | windows wrong | windows missing | windows | late DLQ | worker exits "
    "| s | verdict |"
)


def _late(late: dict[str, int] | None) -> str:
    if late is None:
        return "-"
    causes = ", ".join(f"{k} {v}" for k, v in late.items() if v)
    return f"{sum(late.values())}" + (f" ({causes})" if causes else "")


def markdown(rows: Sequence[Row]) -> str:
    """The results table."""
    lines = [HEADER, "|" + "---|" * 16]
    for r in rows:
        verdict = "pass" if not r.failures else "FAIL: " + "; ".join(r.failures)
        missing = f"{r.windows_missing}" + (f" ({r.held} held)" if r.held else "")
        windows = "-" if r.windows is None else f"{r.windows:,}"
        lines.append(
            f"| {r.scenario} | {r.mode} | {r.records_in:,} | {r.faults} | {r.records_lost} "
            f"| {r.sink_duplicates} | {r.dlq_duplicates} | {r.dlq_lost} | {r.dlq_unexpected} "
            f"| {r.windows_wrong} | {missing} | {windows} | {_late(r.late)} | {r.worker_exits} "
            f"| {r.seconds:.0f} | {verdict.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def document(rows: Sequence[Row]) -> str:
    """results.md: what the table is, then the table."""
    return (
        "# Chaos suite results\n\n"
        "Written by `make chaos` (tests/chaos): each scenario in both modes, two or more\n"
        "worker processes, the sink (read_committed) and the DLQ checked against the\n"
        "reference model (tests/support/window_model.py) and the expected DLQ set (poison,\n"
        "late and bad-input records). `lost`: input records missing from the windows\n"
        "(counts below the model, or windows missing) or from the DLQ. `DLQ unexpected`:\n"
        "records in the DLQ that belong in a window.\n\n"
        "`dedupe` rows: a stateless de-duplicating pipeline (tests/chaos/dedupe.py) on JSON\n"
        "events keyed by id, a fifth of them sent again once or twice (soon after, or\n"
        "thousands of records later), and poison. The input's duplicates are the later\n"
        "copies of an id in its partition, by position. `lost`: ids missing from the sink,\n"
        "or duplicates / poison missing from the DLQ; `DLQ unexpected`: records dropped as\n"
        "duplicates that are not (or DLQ'd under another stage); `sink dup` / `DLQ dup`:\n"
        "extra copies (at-least-once redelivery; a failure in exactly-once).\n\n"
        "`live-*` rows (tests/chaos/test_live.py): live traffic, event time = wall clock at\n"
        "produce time, bursts with lulls longer than the idle timeout so that idle ticks\n"
        "close the windows; every window of the input must be emitted and equal the model\n"
        "computed over the records not DLQ'd as late. `windows`: windows of the input.\n"
        "`late DLQ`: records the workers called late, by cause (model: late by the model's\n"
        "watermark; lull: first records after a lull, an idle tick moved the watermark\n"
        "before they were read; delayed: reached the broker later than the grace; fault:\n"
        "produced around a fault); an unexplained one fails the row. `[b0 l1 ...]`: where\n"
        "each fault landed (burst / lull, cycle). `(n held)`: windows missing on partitions\n"
        "the workers hold after a detected state loss (RILL_STATE_LOSS=fail). `worker\n"
        "exits` there also counts hangs: a worker whose /healthz fails 3 checks 10 s apart\n"
        "is SIGKILLed and restarted, as the chart's livenessProbe would.\n\n" + markdown(rows)
    )
