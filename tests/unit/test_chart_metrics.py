"""The metric names the chart's rules, dashboard and adapter rule use are ones rill exports."""

from __future__ import annotations

from service.observability.metrics import Metrics


def exported_names() -> set[str]:
    """Every sample name a fresh `Metrics()` registry can expose (suffixes included)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_process_and_runtime_metrics_are_exported() -> None:
    """/metrics carries CPU, RSS, open fds, GC and the Python version beside rill's own."""
    names = exported_names()
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "python_gc_collections_total",
        "python_gc_objects_collected_total",
        "python_info",
    ):
        assert name in names, name


def test_process_metrics_measure_this_process() -> None:
    """The RSS and open-fd samples are this process's own, read live at scrape time."""
    registry = Metrics().registry
    rss = registry.get_sample_value("process_resident_memory_bytes")
    fds = registry.get_sample_value("process_open_fds")
    assert (rss or 0) > 1_000_000
    assert (fds or 0) >= 3
