"""The stand-in external metrics adapter computes what the prometheus-adapter rule does."""

from __future__ import annotations

import pytest
import yaml

from tests.k8s.adapter import (
    EXPOSED_METRIC,
    RULE_QUERY,
    Matcher,
    lag_series,
    parse_selector,
    total_by_topic,
)
from tests.k8s.kube import CHART

EXPOSITION = """\
# HELP rill_consumer_lag Records behind the end of the partition
# TYPE rill_consumer_lag gauge
rill_consumer_lag{partition="0",topic="orders"} 700.0
rill_consumer_lag{partition="1",topic="orders"} 300.0
rill_consumer_lag{partition="0",topic="clicks"} 5.0
# HELP rill_records_in_total Records consumed
# TYPE rill_records_in_total counter
rill_records_in_total{topic="orders"} 12.0
"""


def test_lag_series_reads_only_the_lag_gauge() -> None:
    """Only `rill_consumer_lag` samples are taken from a /metrics page."""
    series = lag_series(EXPOSITION)
    assert sorted(v for _, v in series) == [5.0, 300.0, 700.0]


def test_total_sums_partitions_of_the_selected_topic() -> None:
    """sum by (topic): the selected topic's partitions add up; other topics are left out."""
    series = [({**labels, "job": "a-rill"}, v) for labels, v in lag_series(EXPOSITION)]
    assert total_by_topic(series, parse_selector("topic=orders,job=a-rill")) == {"orders": 1000.0}


def test_a_partition_reported_by_two_workers_counts_once() -> None:
    """max by (topic, partition): a hand-over's double export is not double lag."""
    series = [
        ({"topic": "orders", "partition": "0"}, 700.0),
        ({"topic": "orders", "partition": "0"}, 650.0),
        ({"topic": "orders", "partition": "1"}, 100.0),
    ]
    assert total_by_topic(series, [Matcher("topic", "orders", equal=True)]) == {"orders": 800.0}


def test_selector_terms_and_refusal_of_set_based_terms() -> None:
    """Equality selectors parse (=, ==, !=); set-based terms are refused."""
    assert parse_selector("topic=a, job==b,x!=c") == [
        Matcher("topic", "a", equal=True),
        Matcher("job", "b", equal=True),
        Matcher("x", "c", equal=False),
    ]
    with pytest.raises(ValueError, match="unsupported"):
        parse_selector("topic in (a,b)")


def test_the_stand_in_computes_the_rule_the_chart_ships() -> None:
    """The stand-in adapter implements the metricsQuery of the chart's adapter rule."""
    rule = yaml.safe_load((CHART / "files" / "prometheus-adapter-rule.yaml").read_text())
    (external,) = rule["externalRules"]
    assert external["name"]["as"] == EXPOSED_METRIC
    assert external["metricsQuery"] == RULE_QUERY
