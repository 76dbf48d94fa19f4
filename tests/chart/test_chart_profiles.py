"""Every values profile lints and validates offline; every invalid values file is refused.

Offline validation: built-in kinds against kubernetes-validate's schemas for the control
plane's Kubernetes version, the CRD kinds (KEDA, prometheus-operator) against the subset
schemas in deploy/helm/crd-schemas.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.chart.test_helm_chart import CHART, PROFILES, ROOT, documents, run_helm

KUBERNETES_VERSION = "1.32"
CRD_SCHEMAS = ROOT / "deploy" / "helm" / "crd-schemas"
PROFILE_FILES = sorted(PROFILES.glob("*-values.yaml"))
INVALID_FILES = sorted((PROFILES / "invalid").glob("*.yaml"))
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}


def validate_offline(doc: dict[str, Any]) -> None:
    """Validate one manifest: strict Kubernetes schema, or the vendored CRD subset."""
    crd = CRD_KINDS.get((doc["apiVersion"], doc["kind"]))
    if crd:
        schema = json.loads((CRD_SCHEMAS / crd).read_text())
        jsonschema.Draft7Validator(schema).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_expected_profiles_exist() -> None:
    """The install tests iterate over these profiles; their names are a contract."""
    names = {p.name for p in PROFILE_FILES}
    assert names == {
        f"{n}-values.yaml" for n in ("default", "hpa", "keda", "monitoring", "hardened", "extras")
    }
    assert len(INVALID_FILES) >= 5


@pytest.mark.parametrize("profile", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_lints_and_validates_offline(profile: Path) -> None:
    """`helm lint --strict` passes and every rendered manifest validates against its schema."""
    lint = run_helm("lint", "--strict", str(CHART), "-f", str(profile))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    done = run_helm("template", "demo", str(CHART), "--namespace", "streams", "-f", str(profile))
    assert done.returncode == 0, done.stderr
    docs = documents(done.stdout)
    assert any(d["kind"] == "Deployment" for d in docs)
    for doc in docs:
        try:
            validate_offline(doc)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_offline_validation_catches_a_wrong_field() -> None:
    """The validators refuse a misspelt field in a built-in kind and in a CRD kind."""
    done = run_helm("template", "demo", str(CHART), "-f", str(PROFILES / "keda-values.yaml"))
    docs = {d["kind"]: d for d in documents(done.stdout)}
    deployment = docs["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_offline(deployment)
    scaled = docs["ScaledObject"]
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 1000
    with pytest.raises(jsonschema.ValidationError):
        validate_offline(scaled)


def expected_refusal(path: Path) -> str:
    """The `# refused: <text>` header of an invalid values file."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# refused: "), f"{path.name} lacks its '# refused:' header"
    return first.removeprefix("# refused: ").strip()


@pytest.mark.parametrize("invalid", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_values_are_refused_by_the_schema(invalid: Path) -> None:
    """`helm lint --strict` and `helm template` refuse it through values.schema.json."""
    expected = expected_refusal(invalid)
    lint = run_helm("lint", "--strict", str(CHART), "-f", str(invalid))
    assert lint.returncode != 0
    assert expected in lint.stdout + lint.stderr
    done = run_helm("template", "demo", str(CHART), "-f", str(invalid))
    assert done.returncode != 0
    assert "don't meet the specifications of the schema" in done.stderr
    assert expected in done.stderr


def test_values_schema_is_current() -> None:
    """values.schema.json is what deploy/helm/build_schema.py writes."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "helm" / "build_schema.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_refuses_every_replica_count_above_the_partitions() -> None:
    """For each partition count in the table, maxReplicas = count passes and count + 1 fails."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema["properties"]["autoscaling"])
    base = {"enabled": True, "mode": "hpa", "minReplicas": 1, "lagThreshold": 10}
    for partitions in (1, 2, 7, 64, 255, 256):
        ok = {**base, "partitions": partitions, "maxReplicas": partitions}
        assert validator.is_valid(ok), partitions
        over = {**base, "partitions": partitions, "maxReplicas": partitions + 1}
        assert not validator.is_valid(over), partitions
