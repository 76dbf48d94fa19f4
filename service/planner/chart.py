"""The Helm chart's autoscaling values, as `rill plan` reads them (`--values`).

`CHART_AUTOSCALING` is the chart's own `autoscaling` block (deploy/helm/rill/values.yaml;
a unit test keeps the two equal), so without `--values` the plan runs on what
`helm install` would deploy. A values file is merged over it the way Helm merges one
(maps key by key, lists and scalars replaced).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from service.errors import ConfigError
from service.planner.hpa import PolicyType, ScalingPolicy, ScalingRules, SelectPolicy
from service.planner.keda import OffsetResetPolicy

CHART_AUTOSCALING: dict[str, Any] = {
    "enabled": False,
    "mode": "keda",
    "minReplicas": 1,
    "maxReplicas": 4,
    "partitions": 4,
    "lagThreshold": 1000,
    # group_by's repartition topic as a second lag source (the plan models one topic).
    "repartitionTopic": False,
    "behavior": {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": 2, "periodSeconds": 30},
                {"type": "Percent", "value": 100, "periodSeconds": 30},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        },
    },
    "hpa": {"externalMetric": "rill_consumer_lag_total", "metricLabels": {}},
    "keda": {
        "activationLagThreshold": 10,
        "pollingInterval": 15,
        "cooldownPeriod": 300,
        "offsetResetPolicy": "earliest",
    },
}
# The chart's `processes`: group members (worker processes) per pod.
CHART_PROCESSES = 1
# The API server's defaults for a direction `behavior` leaves out (autoscaling/v2).
_API_DEFAULTS: dict[str, dict[str, Any]] = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    },
}


@dataclass(frozen=True, slots=True)
class ChartAutoscaling:
    """The chart values that decide scaling, with the chart's defaults filled in."""

    mode: str
    min_replicas: int
    max_replicas: int
    partitions: int
    lag_threshold: int
    scale_up: ScalingRules
    scale_down: ScalingRules
    activation_lag_threshold: int
    polling_interval_s: float
    cooldown_s: float
    offset_reset_policy: OffsetResetPolicy


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_values(path: Path) -> dict[str, Any]:
    """A Helm values file's content (a YAML mapping)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the values file {path}: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"the values file {path} is not a YAML mapping")
    return cast(dict[str, Any], loaded)


def _rules(block: Mapping[str, Any], direction: str) -> ScalingRules:
    given = block.get(direction) or {}
    rules = merge(_API_DEFAULTS[direction], given) if given else _API_DEFAULTS[direction]
    where = f"autoscaling.behavior.{direction}"
    try:
        policies = tuple(
            ScalingPolicy(cast(PolicyType, p["type"]), int(p["value"]), int(p["periodSeconds"]))
            for p in rules["policies"]
        )
        return ScalingRules(
            int(rules["stabilizationWindowSeconds"]),
            policies,
            cast(SelectPolicy, rules["selectPolicy"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where} in the values file is malformed: {exc!r}") from exc


def autoscaling(values: Mapping[str, Any] | None = None) -> ChartAutoscaling:
    """The autoscaling settings of the chart, with `values` (a values file) over them."""
    section = (values or {}).get("autoscaling") or {}
    if not isinstance(section, Mapping):
        raise ConfigError("autoscaling in the values file is not a mapping")
    a = merge(CHART_AUTOSCALING, section)
    behavior = a.get("behavior") or {}
    keda = a["keda"]
    try:
        return ChartAutoscaling(
            mode=str(a["mode"]),
            min_replicas=int(a["minReplicas"]),
            max_replicas=int(a["maxReplicas"]),
            partitions=int(a["partitions"]),
            lag_threshold=int(a["lagThreshold"]),
            scale_up=_rules(behavior, "scaleUp"),
            scale_down=_rules(behavior, "scaleDown"),
            activation_lag_threshold=int(keda["activationLagThreshold"]),
            polling_interval_s=float(keda["pollingInterval"]),
            cooldown_s=float(keda["cooldownPeriod"]),
            offset_reset_policy=cast(OffsetResetPolicy, str(keda["offsetResetPolicy"])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"autoscaling in the values file is malformed: {exc!r}") from exc


def processes(values: Mapping[str, Any] | None = None) -> int:
    """The chart's `processes` (group members per pod), with `values` over it."""
    given = (values or {}).get("processes", CHART_PROCESSES)
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise ConfigError(f"processes in the values file must be an integer >= 1, not {given!r}")
    return given
