"""Every values profile installs into a real control plane; invalid values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.k8s.kube import CHART, Cluster

# The profiles the chart must ship (default, hpa, keda, monitoring on, hardened, and the
# platform extras); any further ci/*-values.yaml is installed too.
EXPECTED = ("default", "hpa", "keda", "monitoring", "hardened", "extras")
PROFILES = sorted(
    set(EXPECTED)
    | {p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")}
)
INVALID = sorted((CHART / "ci" / "invalid").glob("*.yaml"))
SCHEMA_REFUSAL = "values don't meet the specifications of the schema"


def _installed_objects(cluster: Cluster, release: str, namespace: str) -> list[tuple[str, str]]:
    """(kind, name) of every object of the release's manifest that the cluster does not hold."""
    manifest = cluster.helm("get", "manifest", release, "-n", namespace)
    assert manifest.returncode == 0, manifest.stderr
    missing = []
    for doc in yaml.safe_load_all(manifest.stdout):
        if not doc:
            continue
        kind, name = doc["kind"], doc["metadata"]["name"]
        resource = f"{kind}.{doc['apiVersion'].split('/')[0]}" if "/" in doc["apiVersion"] else kind
        found = cluster.kubectl("get", resource, name, "-n", namespace, check=False)
        if found.returncode != 0:
            missing.append((kind, name))
    return missing


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_installs_and_becomes_ready(cluster: Cluster, profile: str, unique: str) -> None:
    """`helm install --wait` of each values profile succeeds and creates every object."""
    values = CHART / "ci" / f"{profile}-values.yaml"
    assert values.exists(), f"the chart ships no {values.relative_to(CHART)}"
    namespace, release = f"profile-{profile}-{unique}", "rill"
    done = cluster.install(release, namespace, [values])
    try:
        assert done.returncode == 0, done.stderr
        assert _installed_objects(cluster, release, namespace) == []
        # By release: the extras profile renames the app (nameOverride).
        deployment = cluster.get(
            "deployment", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}"
        )
        (item,) = deployment["items"]
        assert item["status"].get("readyReplicas", 0) >= 1, item["status"]
    finally:
        cluster.uninstall(release, namespace)


@pytest.mark.parametrize("values", INVALID or [CHART / "ci" / "invalid"], ids=lambda p: p.name)
def test_invalid_values_are_refused_by_the_schema(
    cluster: Cluster, values: Path, unique: str
) -> None:
    """`helm install` of each ci/invalid/*.yaml fails on values.schema.json, creating nothing."""
    assert values.is_file(), f"no invalid values files under {values.relative_to(CHART)}"
    namespace = f"invalid-{unique}"
    done = cluster.install("rill", namespace, [values])
    try:
        assert done.returncode != 0, f"{values.name} was installed"
        assert SCHEMA_REFUSAL in done.stderr, done.stderr
        # The file's first line may name what is refused: `# refused: autoscaling.mode`.
        first = values.read_text().splitlines()[0]
        if first.startswith("# refused:"):
            assert first.split(":", 1)[1].strip().split(".")[-1] in done.stderr, done.stderr
        releases = cluster.helm("list", "-a", "-q", "-n", namespace)
        assert releases.stdout.strip() == ""
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
