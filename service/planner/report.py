"""Summary figures and the printed table of a planning run (plain strings, no I/O)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.planner.simulate import Sample


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures that decide whether a configuration is good enough."""

    max_lag: float
    max_lag_s: float
    over_slo_s: float
    replica_minutes: float
    peak_replicas: int
    scale_events: int
    final_lag: float


def summarize(samples: Sequence[Sample], tick_s: float, slo_lag_s: float) -> Summary:
    """Figures over a run: each sample stands for one tick.

    Args:
        samples: the run, one sample per tick.
        tick_s: the tick length.
        slo_lag_s: the lag-seconds objective; time above it is counted.

    Returns:
        The summary. Replica-minutes count every pod that exists, ready or starting.
    """
    events = sum(1 for a, b in itertools.pairwise(samples) if a.desired != b.desired)
    return Summary(
        max_lag=max(s.lag for s in samples),
        max_lag_s=max(s.lag_s for s in samples),
        over_slo_s=sum(tick_s for s in samples if s.lag_s > slo_lag_s),
        replica_minutes=sum(s.desired for s in samples) * tick_s / 60,
        peak_replicas=max(s.desired for s in samples),
        scale_events=events,
        final_lag=samples[-1].lag,
    )


def table(runs: Mapping[str, Sequence[Sample]], every_s: float, tick_s: float) -> str:
    """Runs side by side, one row every `every_s` seconds.

    Args:
        runs: samples per autoscaler name, all over the same ticks.
        every_s: the row step (rounded to whole ticks).
        tick_s: the tick length.

    Returns:
        The table, a header line then one line per row.
    """
    stride = max(1, round(every_s / tick_s))
    names = list(runs)
    head = f"{'t_s':>7} {'in/s':>8}"
    for name in names:
        head += f" | {name + ' des':>8} {'ready':>5} {'lag':>9} {'lag_s':>7}"
    lines = [head, "-" * len(head)]
    first = runs[names[0]]
    for i in range(0, len(first), stride):
        line = f"{first[i].t_s:>7.0f} {first[i].input_rps:>8.0f}"
        for name in names:
            s = runs[name][i]
            line += f" | {s.desired:>8} {s.ready:>5} {s.lag:>9.0f} {s.lag_s:>7.1f}"
        lines.append(line)
    return "\n".join(lines)


def summary_table(summaries: Mapping[str, Summary], slo_lag_s: float) -> str:
    """The summary figures of each run in one column per autoscaler."""
    names = list(summaries)
    rows: list[tuple[str, str]] = [
        ("max lag (records)", "{:.0f}"),
        ("max lag (s)", "{:.1f}"),
        (f"time over {slo_lag_s:g} s lag (s)", "{:.0f}"),
        ("replica-minutes", "{:.1f}"),
        ("peak replicas", "{}"),
        ("scale events", "{}"),
        ("lag at the end (records)", "{:.0f}"),
    ]
    fields = [
        "max_lag",
        "max_lag_s",
        "over_slo_s",
        "replica_minutes",
        "peak_replicas",
        "scale_events",
        "final_lag",
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':<{width}} " + " ".join(f"{n:>10}" for n in names)]
    for (label, fmt), name in zip(rows, fields, strict=True):
        values = " ".join(f"{fmt.format(getattr(summaries[n], name)):>10}" for n in names)
        lines.append(f"{label:<{width}} {values}")
    return "\n".join(lines)
