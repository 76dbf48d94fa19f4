"""The metric names the chart's rules, dashboard and adapter rule use are ones rill exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from service.observability.metrics import Metrics
from tests.chart.test_helm_chart import CHART, ROOT, rendered

# Labels Prometheus attaches to every scraped series (ServiceMonitor targets and compose).
TARGET_LABELS = {"job", "instance", "namespace", "service", "pod", "endpoint", "container"}
# Not rill's: Prometheus' own per-target series.
PROMETHEUS_BUILTIN = {"up"}
# Not rill's either: what the autoscaling alerts read from kube-state-metrics (v2) and
# KEDA's operator (v2.16, pkg/metricscollector/prommetrics.go), with their labels.
EXTERNAL_EXPORTERS = {
    "kube_horizontalpodautoscaler_status_condition": {
        "namespace",
        "horizontalpodautoscaler",
        "condition",
        "status",
    },
    "kube_deployment_spec_replicas": {"namespace", "deployment"},
    "keda_scaled_object_errors_total": {"namespace", "scaledObject"},
}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\{([^}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


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


def exported_labels() -> dict[str, set[str]]:
    """Label names per exposed sample name, from the metric objects and live samples."""
    metrics = Metrics()
    labels: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    for metric in vars(metrics).values():
        base = getattr(metric, "_name", None)
        names = set(getattr(metric, "_labelnames", ()) or ())
        if not base:
            continue
        for suffix in ("", "_total", "_created", "_bucket", "_count", "_sum"):
            labels.setdefault(base + suffix, set()).update(names)
        labels.setdefault(base + "_bucket", set()).add("le")
    return labels


def promql_references(expr: str) -> tuple[set[str], set[str], dict[str, set[str]]]:
    """Metric names, grouping labels and per-metric matcher labels used by an expression."""
    text = re.sub(r'"[^"]*"', '""', expr)  # label values and Grafana variables
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    matchers: dict[str, set[str]] = {}
    for name, body in _SELECTOR.findall(text):
        found = {m.split("=")[0].rstrip("!~").strip() for m in body.split(",") if m.strip()}
        if name:
            matchers.setdefault(name, set()).update(found)
    grouping = {
        label.strip() for group in _GROUPING.findall(text) for label in group.split(",")
    } - {""}
    text = _GROUPING.sub(" ", _SELECTOR.sub(r"\1 ", text))
    names = {
        m.group(0)
        for m in _IDENT.finditer(text)
        if not text[m.end() :].lstrip().startswith("(")
        and m.group(0).lower() not in PROMQL_WORDS
        and not text[: m.start()].endswith("$")
    }
    return names, grouping, matchers


def rule_expressions() -> list[str]:
    """Every alert expression of the PrometheusRule (autoscaling on, so all alerts render)."""
    docs = rendered("autoscaling.enabled=true", profile="monitoring")
    groups = docs["PrometheusRule"]["spec"]["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    """The shipped Grafana dashboard."""
    loaded: dict[str, Any] = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    return loaded


def dashboard_expressions() -> list[str]:
    """Every query of the dashboard, its panels and its template variables."""
    board = dashboard()
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(re.sub(r"label_values\((.*),\s*\w+\)$", r"\1", var["definition"]))
    return exprs


def adapter_expressions() -> list[str]:
    """The adapter rule's series query, and its metrics query with the series filled in."""
    rules = yaml.safe_load((CHART / "files" / "prometheus-adapter-rule.yaml").read_text())
    exprs = []
    for rule in rules["externalRules"]:
        series = rule["seriesQuery"].split("{")[0]
        exprs.append(rule["seriesQuery"])
        query = rule["metricsQuery"].replace("<<.Series>>", series)
        exprs.append(query.replace("<<.LabelMatchers>>", 'topic="orders",job="rill"'))
    return exprs


ALL_EXPRESSIONS = [
    *[("rule", e) for e in rule_expressions()],
    *[("dashboard", e) for e in dashboard_expressions()],
    *[("adapter", e) for e in adapter_expressions()],
]


@pytest.mark.parametrize(("source", "expr"), ALL_EXPRESSIONS, ids=lambda v: str(v)[:40])
def test_expressions_use_metrics_and_labels_rill_exports(source: str, expr: str) -> None:
    """Every metric of an alert, panel or adapter query is in a live registry, with its labels."""
    exported = exported_labels() | EXTERNAL_EXPORTERS
    names, grouping, matchers = promql_references(expr)
    assert names, f"{source}: no metric found in {expr!r}"
    unknown = names - set(exported) - PROMETHEUS_BUILTIN
    assert not unknown, f"{source}: {sorted(unknown)} not exported by rill ({expr!r})"
    for name, used in matchers.items():
        allowed = exported.get(name, set()) | TARGET_LABELS
        assert used <= allowed, f"{source}: {name} has no label {sorted(used - allowed)}"
    allowed = set().union(*(exported.get(n, set()) for n in names)) | TARGET_LABELS
    assert grouping <= allowed, f"{source}: grouping by {sorted(grouping - allowed)} in {expr!r}"


def test_the_reference_extractor_sees_through_promql() -> None:
    """The extractor finds metrics, not functions, keywords, label values or variables."""
    names, grouping, matchers = promql_references(
        'sum by (topic) (rate(rill_records_in_total{job=~"$job"}[$__rate_interval])) '
        "and on (job) time() - rill_last_poll_timestamp_seconds > 60"
    )
    assert names == {"rill_records_in_total", "rill_last_poll_timestamp_seconds"}
    assert grouping == {"topic", "job"}
    assert matchers == {"rill_records_in_total": {"job"}}


def test_dashboard_has_the_promised_panels() -> None:
    """Throughput, lag in records and seconds, latency heatmap, DLQ, breaker, replicas."""
    board = dashboard()
    titles = {p["title"]: p for p in board["panels"]}
    for title in (
        "Throughput (records/s)",
        "Lag per partition (records)",
        "Lag per partition (seconds)",
        "DLQ by reason (records/s)",
        "Circuit breaker state",
        "Replicas and partitions",
        "Resident memory",
    ):
        assert title in titles, title
    heatmap = [p for p in board["panels"] if p["type"] == "heatmap"]
    assert heatmap[0]["targets"][0]["format"] == "heatmap"
    assert "rill_end_to_end_seconds_bucket" in heatmap[0]["targets"][0]["expr"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"


def test_adapter_values_snippet_matches_the_shipped_rule() -> None:
    """deploy/helm/prometheus-adapter-values.yaml carries the same rule as the chart's ConfigMap."""
    rule = yaml.safe_load((CHART / "files" / "prometheus-adapter-rule.yaml").read_text())
    snippet = yaml.safe_load(
        (ROOT / "deploy" / "helm" / "prometheus-adapter-values.yaml").read_text()
    )
    assert snippet["rules"]["external"] == rule["externalRules"]
    assert rule["externalRules"][0]["name"]["as"] == "rill_consumer_lag_total"


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
