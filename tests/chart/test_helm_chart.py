"""The Helm chart renders a hardened worker, and its pieces follow the values."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "rill"
PROFILES = CHART / "ci"


def helm() -> str:
    """The helm binary: on PATH, else the one `make tools` builds into .rill/bin."""
    local = ROOT / ".rill" / "bin" / "helm"
    found = shutil.which("helm") or (str(local) if local.exists() else None)
    assert found, "helm is missing: `make tools` builds it into .rill/bin"
    return found


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm with arguments, capturing its output."""
    return subprocess.run([helm(), *args], capture_output=True, text=True, check=False)


def render(*sets: str, profile: str | None = "default") -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with a ci/ values profile and --set values.

    A set prefixed `json:` goes through --set-json (a float stays a float).
    """
    args = ["template", "demo", str(CHART), "--namespace", "streams"]
    if profile:
        args += ["-f", str(PROFILES / f"{profile}-values.yaml")]
    for s in sets:
        args += ["--set-json", s[5:]] if s.startswith("json:") else ["--set", s]
    return run_helm(*args)


def documents(text: str) -> list[dict[str, Any]]:
    """The rendered manifests."""
    return [d for d in yaml.safe_load_all(text) if d]


def kinds(text: str) -> dict[str, dict[str, Any]]:
    """Rendered documents by kind (ConfigMaps by name under `ConfigMap/<name>`)."""
    out: dict[str, dict[str, Any]] = {}
    for doc in documents(text):
        key = doc["kind"]
        if key == "ConfigMap":
            key = f"ConfigMap/{doc['metadata']['name']}"
        out[key] = doc
    return out


def rendered(*sets: str, profile: str | None = "default") -> dict[str, dict[str, Any]]:
    """Render, assert success, and index by kind."""
    done = render(*sets, profile=profile)
    assert done.returncode == 0, done.stderr
    return kinds(done.stdout)


def pod_spec(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's pod spec."""
    spec: dict[str, Any] = docs["Deployment"]["spec"]["template"]["spec"]
    return spec


def container_env(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The worker container's env, by name: the value or the valueFrom."""
    env = pod_spec(docs)["containers"][0]["env"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in env}


def test_default_profile_renders_a_hardened_worker() -> None:
    """Default profile: non-root, read-only root with /tmp, drop ALL, seccomp, three probes."""
    docs = rendered()
    assert {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"} <= set(docs)
    spec = pod_spec(docs)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    tmp = {"name": "tmp", "mountPath": "/tmp"}  # noqa: S108 - the pod's one writable path
    assert tmp in container["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in spec["volumes"])
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"]["memory"] == "256Mi"
    assert container["image"] == "rill:0.1.0", "the tag defaults to the chart's appVersion"
    env = container_env(docs)
    assert env["RILL_INPUT_TOPIC"] == "orders"
    assert env["RILL_METRICS_PORT"] == "9400"
    assert "RILL_CONFIG" not in env, "no pipeline file unless one is given"


def test_pod_disruption_budget_and_topology_spread_select_the_workers() -> None:
    """PDB (one worker at a time) and spread constraints select exactly the worker pods."""
    docs = rendered()
    labels = docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["PodDisruptionBudget"]["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": labels},
    }
    spread = pod_spec(docs)["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    assert all(c["labelSelector"]["matchLabels"] == labels for c in spread)
    assert docs["Service"]["spec"]["selector"] == labels


def test_grace_period_is_derived_from_the_timeouts() -> None:
    """Grace = delivery + (exactly-once: min(delivery, transaction)) + margin, or the override."""

    def grace(*sets: str) -> int:
        return int(pod_spec(rendered(*sets))["terminationGracePeriodSeconds"])

    assert grace() == 60 + 15
    assert grace("processing.guarantee=exactly_once") == 60 + 60 + 15
    assert (
        grace(
            "processing.guarantee=exactly_once",
            "processing.deliveryTimeoutSeconds=90",
            "processing.transactionTimeoutMs=20000",
        )
        == 90 + 20 + 15
    )
    assert grace("json:processing.deliveryTimeoutSeconds=12.5", "drainMarginSeconds=5") == 13 + 5
    assert grace("terminationGracePeriodSeconds=200") == 200


def test_a_grace_period_below_the_drain_time_is_refused() -> None:
    """An explicit grace period shorter than the derived drain time fails, naming both."""
    done = render("processing.guarantee=exactly_once", "terminationGracePeriodSeconds=30")
    assert done.returncode != 0
    assert "terminationGracePeriodSeconds (30) is below the drain time" in done.stderr
    assert "(135 s)" in done.stderr


def test_timeouts_reach_the_worker_as_the_grace_period_assumes() -> None:
    """The timeouts the grace period is derived from are the ones the worker runs with."""
    env = container_env(rendered("processing.guarantee=exactly_once"))
    assert env["RILL_PROCESSING_GUARANTEE"] == "exactly_once"
    assert env["RILL_DELIVERY_TIMEOUT_S"] == "60"
    assert env["RILL_TRANSACTION_TIMEOUT_MS"] == "60000"


def test_pipeline_and_schema_files_are_mounted_from_configmaps() -> None:
    """`pipeline` becomes pipeline.yaml (RILL_CONFIG); `schemas.files` a mounted ConfigMap."""
    docs = rendered(profile="monitoring")
    pipeline = yaml.safe_load(docs["ConfigMap/demo-rill-pipeline"]["data"]["pipeline.yaml"])
    profile = yaml.safe_load((PROFILES / "monitoring-values.yaml").read_text())
    assert pipeline == profile["pipeline"]
    schema_text = docs["ConfigMap/demo-rill-schemas"]["data"]["payment.avsc"]
    assert '"name": "Payment"' in schema_text
    spec = pod_spec(docs)
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["pipeline"]["mountPath"] == "/etc/rill/config"
    assert mounts["schemas"] == {
        "name": "schemas",
        "mountPath": "/etc/rill/schemas",
        "readOnly": True,
    }
    assert container_env(docs)["RILL_CONFIG"] == "/etc/rill/config/pipeline.yaml"
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    changed = rendered("pipeline.window_size_ms=30000", profile="monitoring")
    after = changed["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] != after["checksum/config"], "a new pipeline rolls pods"


def test_existing_schema_configmap_or_secret_is_mounted_as_is() -> None:
    """schemas.existingConfigMap / existingSecret mount the named object, no ConfigMap made."""
    docs = rendered(profile="hardened")
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["schemas"]["configMap"] == {"name": "rill-schemas"}
    assert "ConfigMap/demo-rill-schemas" not in docs
    secret = rendered("schemas.existingSecret=proto-set")
    assert {v["name"]: v for v in pod_spec(secret)["volumes"]}["schemas"]["secret"] == {
        "secretName": "proto-set"
    }
    both = render("schemas.existingSecret=a", "schemas.existingConfigMap=b")
    assert both.returncode != 0
    assert "not both" in both.stderr


def test_credentials_come_only_from_secret_references() -> None:
    """Hardened profile: SASL and Redis URL are secretKeyRefs; TLS files are mounted Secrets."""
    docs = rendered(profile="hardened")
    env = container_env(docs)
    assert env["RILL_KAFKA_SASL_PASSWORD"] == {
        "secretKeyRef": {"name": "rill-kafka-user", "key": "password"}
    }
    assert env["RILL_KAFKA_SASL_USERNAME"] == {
        "secretKeyRef": {"name": "rill-kafka-user", "key": "user"}
    }
    assert env["RILL_REDIS_URL"] == {"secretKeyRef": {"name": "rill-redis", "key": "url"}}
    assert env["RILL_KAFKA_SSL_CA_LOCATION"] == "/etc/rill/kafka-tls/ca.crt"
    assert env["RILL_KAFKA_SSL_CERTIFICATE_LOCATION"] == "/etc/rill/kafka-tls/tls.crt"
    assert env["RILL_KAFKA_SSL_KEY_LOCATION"] == "/etc/rill/kafka-tls/tls.key"
    assert env["RILL_REDIS_SSL_CA_CERTS"] == "/etc/rill/redis-tls/ca.crt"
    assert env["RILL_BATCH_SIZE"] == "500", "extra env values are strings"
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["kafka-tls"]["secret"]["secretName"] == "rill-kafka-tls"
    assert not [d for d in docs.values() if d["kind"] == "Secret"], "the chart makes no Secret"


def test_hpa_scales_on_the_adapter_metric_with_the_values_behaviour() -> None:
    """HPA profile: External metric by topic and job, behaviour from values, the adapter rule."""
    docs = rendered(profile="hpa")
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    metric = hpa["metrics"][0]["external"]
    assert metric["metric"]["name"] == "rill_consumer_lag_total"
    assert metric["metric"]["selector"]["matchLabels"] == {"topic": "orders", "job": "demo-rill"}, (
        "the hpa profile scrapes with a ServiceMonitor: job is the Service's name"
    )
    assert metric["target"] == {"type": "AverageValue", "averageValue": "500"}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert hpa["behavior"]["scaleUp"]["policies"][0] == {
        "type": "Pods",
        "value": 2,
        "periodSeconds": 30,
    }
    assert "replicas" not in docs["Deployment"]["spec"], "the autoscaler owns the count"
    rule = yaml.safe_load(docs["ConfigMap/demo-rill-adapter-rule"]["data"]["config.yaml"])
    assert rule["externalRules"][0]["name"]["as"] == "rill_consumer_lag_total"
    tuned = rendered("autoscaling.behavior.scaleDown.stabilizationWindowSeconds=42", profile="hpa")
    scale_down = tuned["HorizontalPodAutoscaler"]["spec"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] == 42


def test_hpa_selector_follows_the_scrape_mode() -> None:
    """The HPA selects the job its scrape gives: Service name, namespace/PodMonitor, or none."""

    def selector(*sets: str) -> dict[str, str]:
        docs = rendered(
            "kafka.topic=orders",
            "autoscaling.enabled=true",
            "autoscaling.mode=hpa",
            "monitoring.serviceMonitor.enabled=false",
            *sets,
            profile=None,
        )
        labels: dict[str, str] = docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["external"][
            "metric"
        ]["selector"]["matchLabels"]
        return labels

    assert selector("monitoring.serviceMonitor.enabled=true") == {
        "topic": "orders",
        "job": "demo-rill",
    }
    assert selector("monitoring.podMonitor.enabled=true") == {
        "topic": "orders",
        "job": "streams/demo-rill",
    }
    assert selector() == {"topic": "orders"}, "annotation scraping: no job nobody sets"
    assert selector("monitoring.annotationScrape.labels.job=kubernetes-pods") == {
        "topic": "orders",
        "job": "kubernetes-pods",
    }
    both = render(
        "kafka.topic=orders",
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.podMonitor.enabled=true",
        profile=None,
    )
    assert both.returncode != 0
    assert "serviceMonitor or podMonitor, not both" in both.stderr


def test_keda_authenticates_like_the_workers() -> None:
    """KEDA profile: the Kafka trigger uses SASL/TLS from the workers' Secrets."""
    docs = rendered(profile="keda")
    scaled = docs["ScaledObject"]["spec"]
    trigger = scaled["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    assert trigger["metadata"]["tls"] == "enable"
    assert trigger["metadata"]["consumerGroup"] == "rill"
    assert trigger["metadata"]["activationLagThreshold"] == "12"
    assert trigger["authenticationRef"] == {"name": "demo-rill-kafka"}
    refs = {r["parameter"]: r for r in docs["TriggerAuthentication"]["spec"]["secretTargetRef"]}
    assert set(refs) == {"username", "password", "ca"}
    assert refs["password"] == {
        "parameter": "password",
        "name": "rill-kafka-credentials",
        "key": "password",
    }
    assert refs["ca"]["name"] == "rill-kafka-ca"
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 6)
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    plain = rendered("autoscaling.enabled=true", "autoscaling.mode=keda")
    assert "TriggerAuthentication" not in plain
    assert "authenticationRef" not in plain["ScaledObject"]["spec"]["triggers"][0]


def test_more_replicas_than_partitions_is_refused_past_the_schema_table() -> None:
    """Above the schema's table of partition counts the template's own check still refuses."""
    done = render(
        "autoscaling.enabled=true",
        "autoscaling.maxReplicas=301",
        "autoscaling.partitions=300",
    )
    assert done.returncode != 0
    assert "maxReplicas (301) must not exceed autoscaling.partitions (300)" in done.stderr


def test_hpa_mode_refuses_scale_to_zero() -> None:
    """minReplicas 0 is KEDA's; in HPA mode the chart refuses it."""
    done = render("autoscaling.enabled=true", "autoscaling.mode=hpa", "autoscaling.minReplicas=0")
    assert done.returncode != 0
    assert "minReplicas must be at least 1 in mode hpa" in done.stderr
    keda = rendered("autoscaling.enabled=true", "autoscaling.minReplicas=0")
    assert keda["ScaledObject"]["spec"]["minReplicaCount"] == 0, "keda, the default mode, may"


def notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` would print it, rendered without a cluster.

    `helm template` skips NOTES.txt, so a copy of the chart gets one more template that
    includes it (templates are named by path) in a ConfigMap.
    """
    chart = tmp_path / "rill"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ include "rill/templates/NOTES.txt" . | quote }}\n'
    )
    done = run_helm("template", "demo", str(chart), "--show-only", "templates/zz-notes.yaml", *args)
    assert done.returncode == 0, done.stderr
    text: str = yaml.safe_load(done.stdout)["data"]["notes"]
    return text


def test_notes_tell_how_to_watch_lag_and_scaling(tmp_path: Path) -> None:
    """NOTES.txt names the commands that show lag, the HPA/ScaledObject, and the Redis needs."""
    hpa = notes(tmp_path / "hpa", "-n", "streams", "-f", str(PROFILES / "hpa-values.yaml"))
    assert "rill status" in hpa
    assert "kubectl -n streams get hpa demo-rill -w" in hpa
    assert (
        "external.metrics.k8s.io/v1beta1/namespaces/streams/rill_consumer_lag_total"
        "?labelSelector=topic%3Dorders,job%3Ddemo-rill"
    ) in hpa
    assert "maxmemory-policy noeviction" in hpa
    keda = notes(
        tmp_path / "keda",
        "-f",
        str(PROFILES / "keda-values.yaml"),
        "--set",
        "autoscaling.keda.activationLagThreshold=2",
    )
    assert "get scaledobject demo-rill" in keda
    assert "activationLagThreshold (2) is below the partition" in keda
    fixed = notes(tmp_path / "fixed", "-f", str(PROFILES / "default-values.yaml"))
    assert "Autoscaling is off (1 replicas)" in fixed
