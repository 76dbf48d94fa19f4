"""One `/metrics` for the container: the children's registries, merged.

Each child sends a snapshot of its registry (`registry.collect()`) to the supervisor every
second; the supervisor exposes their merge. A sample of the same name and labels is summed
over the children (counters, histograms, and gauges such as `rill_assigned_partitions` or
a partition's lag, which one child at a time has: a child drops a partition's series when
it loses the partition), except the gauges in `GAUGE_RULES`, where the sum means nothing.
A dead child's counters and histograms are kept (`monotonic`) and added to the living
ones', so a total never goes down when a child restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeAlias

from prometheus_client.metrics_core import Metric

Snapshot: TypeAlias = Sequence[Metric]
_SampleKey: TypeAlias = tuple[str, tuple[tuple[str, str], ...]]

# Gauges for which the container's value is not the sum over children.
GAUGE_RULES: dict[str, Callable[[float, float], float]] = {
    # The loop that turned longest ago: a stall alert sees the worst child.
    "rill_last_poll_timestamp_seconds": min,
    "process_start_time_seconds": min,
    # Open / paused when any child is.
    "rill_circuit_state": max,
    "rill_paused": max,
    "process_max_fds": max,
    "python_info": max,
    # Every child reads the whole table: loaded once all have, lag the furthest behind.
    "rill_table_loaded": min,
    "rill_table_lag": max,
}
# Families whose samples only grow while a process lives.
MONOTONIC = frozenset({"counter", "histogram", "summary"})


def _add(a: float, b: float) -> float:
    return a + b


def _rule(family: Metric) -> Callable[[float, float], float]:
    if family.type == "gauge":
        return GAUGE_RULES.get(family.name, _add)
    if family.type in MONOTONIC:
        return _add
    return max  # info, stateset, unknown: the same value in every child


def merge(snapshots: Iterable[Snapshot]) -> list[Metric]:
    """The families of every snapshot, one per name, each sample merged by its rule.

    `_created` samples are dropped: a merged counter has no single creation time.
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[_SampleKey, float]] = {}
    for snapshot in snapshots:
        for family in snapshot:
            if family.name not in families:
                families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            rule, acc = _rule(family), values[family.name]
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                acc[key] = rule(acc[key], sample.value) if key in acc else sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(families.values())


def monotonic(snapshot: Snapshot) -> list[Metric]:
    """The counters and histograms of a snapshot: what a dead child leaves to the totals."""
    return [family for family in snapshot if family.type in MONOTONIC]


class MergedCollector:
    """A collector whose samples are `merge(sources())`, registered like any collector."""

    def __init__(self, sources: Callable[[], list[Snapshot]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        """The merged families."""
        yield from merge(self._sources())
