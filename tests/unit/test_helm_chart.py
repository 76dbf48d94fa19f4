"""The Helm chart renders, and refuses more replicas than input partitions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "rill"


def _helm() -> str:
    local = ROOT / ".rill" / "bin" / "helm"
    found = shutil.which("helm") or (str(local) if local.exists() else None)
    assert found, "helm is missing: `make tools` builds it into .rill/bin"
    return found


def render(*sets: str) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with --set values."""
    args = [_helm(), "template", "demo", str(CHART)]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, check=False)


def kinds(text: str) -> dict[str, dict[str, Any]]:
    """Rendered documents by kind."""
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


def test_default_renders_a_deployment_with_probes() -> None:
    """Defaults: a Deployment with liveness/readiness on the metrics port, and a Service."""
    done = render()
    assert done.returncode == 0, done.stderr
    docs = kinds(done.stdout)
    assert set(docs) == {"Deployment", "Service"}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"name": "RILL_METRICS_PORT", "value": "9400"} in container["env"]


def test_hpa_and_keda_scale_on_lag() -> None:
    """autoscaling renders an HPA on the lag metric, or a KEDA Kafka ScaledObject."""
    hpa = kinds(render("autoscaling.enabled=true").stdout)["HorizontalPodAutoscaler"]
    assert hpa["spec"]["maxReplicas"] == 4
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "rill_consumer_lag_total"
    keda = kinds(render("autoscaling.enabled=true", "autoscaling.mode=keda").stdout)
    trigger = keda["ScaledObject"]["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == "orders"
    assert "replicas" not in keda["Deployment"]["spec"], "the autoscaler owns the count"


@pytest.mark.parametrize("mode", ["hpa", "keda"])
def test_more_replicas_than_partitions_is_refused(mode: str) -> None:
    """maxReplicas above the partition count fails to render, naming both values."""
    done = render(
        "autoscaling.enabled=true",
        f"autoscaling.mode={mode}",
        "autoscaling.maxReplicas=8",
        "autoscaling.partitions=4",
    )
    assert done.returncode != 0
    assert "maxReplicas (8) must not exceed autoscaling.partitions (4)" in done.stderr
