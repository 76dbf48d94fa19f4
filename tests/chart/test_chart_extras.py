"""What a platform team adds around the worker renders where Kubernetes expects it.

The `extras` profile (ci/extras-values.yaml) sets every one of these values; each test
reads the rendered manifests (offline schema validation of the same rendering is in
test_chart_profiles.py, installation in tests/k8s).
"""

from __future__ import annotations

import json
from typing import Any

from tests.chart.test_helm_chart import CHART, container_env, pod_spec, render, rendered

DIGEST = "sha256:" + "0123456789abcdef" * 4


def extras(*sets: str) -> dict[str, dict[str, Any]]:
    """The extras profile, rendered."""
    return rendered(*sets, profile="extras")


def test_name_overrides_rename_objects_and_the_name_label() -> None:
    """nameOverride: <release>-<name> and app.kubernetes.io/name; fullnameOverride wins."""
    docs = extras()
    assert docs["Deployment"]["metadata"]["name"] == "demo-stream"
    selector = docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "stream", "app.kubernetes.io/instance": "demo"}
    assert docs["Service"]["spec"]["selector"] == selector
    assert docs["ScaledObject"]["spec"]["scaleTargetRef"]["name"] == "demo-stream"
    full = rendered("fullnameOverride=orders-agg")
    assert {d["metadata"]["name"] for k, d in full.items() if not k.startswith("ConfigMap")} == {
        "orders-agg"
    }
    assert rendered()["Deployment"]["metadata"]["name"] == "demo-rill", "default unchanged"


def test_digest_pins_the_image() -> None:
    """image.digest renders repository@digest and wins over the tag."""
    image = pod_spec(extras("image.tag=9.9"))["containers"][0]["image"]
    assert image == f"registry.example.com/data/rill@{DIGEST}"
    refused = render("image.digest=latest")
    assert refused.returncode != 0
    assert "image.digest" in refused.stderr


def test_extra_env_keeps_value_from() -> None:
    """extraEnv entries reach the container as written (secretKeyRef, fieldRef)."""
    env = container_env(extras())
    assert env["RILL_SCHEMA_REGISTRY_PASSWORD"] == {
        "secretKeyRef": {"name": "registry", "key": "password"}
    }
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["RILL_INPUT_TOPIC"] == "orders", "the chart's own variables stay"


def test_init_containers_sidecars_and_volumes() -> None:
    """initContainers and sidecars beside the worker; extra volumes and the worker's mounts."""
    spec = pod_spec(extras())
    assert [c["name"] for c in spec["initContainers"]] == ["wait-for-kafka"]
    assert [c["name"] for c in spec["containers"]] == ["rill", "log-shipper"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["ca-bundle"] == {"name": "ca-bundle", "secret": {"secretName": "corporate-ca"}}
    assert "shipper-config" in volumes
    assert "tmp" in volumes
    mounts = spec["containers"][0]["volumeMounts"]
    assert {"name": "ca-bundle", "mountPath": "/etc/ssl/corporate", "readOnly": True} in mounts
    assert "initContainers" not in pod_spec(rendered())


def test_probe_timeouts_are_set() -> None:
    """Each probe carries its timeoutSeconds (defaults 1/2/2 s, here 3/5/3 s)."""
    worker = pod_spec(extras())["containers"][0]
    timeouts = [
        worker[p]["timeoutSeconds"] for p in ("startupProbe", "livenessProbe", "readinessProbe")
    ]
    assert timeouts == [3, 5, 3]
    default = pod_spec(rendered())["containers"][0]
    assert [
        default[p]["timeoutSeconds"] for p in ("startupProbe", "livenessProbe", "readinessProbe")
    ] == [1, 2, 2]


def test_network_policy_opens_metrics_and_restricts_egress() -> None:
    """Ingress only to the metrics port from metricsFrom; egress to the listed rules plus DNS."""
    policy = extras()["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "demo"
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [
        {
            "ports": [{"port": 9400, "protocol": "TCP"}],
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
        }
    ]
    dns, kafka_redis = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert kafka_redis["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    open_egress = rendered("networkPolicy.enabled=true")["NetworkPolicy"]["spec"]
    assert open_egress["policyTypes"] == ["Ingress"], "no egress rules: egress stays open"
    assert "NetworkPolicy" not in rendered()


def test_pod_monitor_with_relabelings_and_its_job_in_the_alerts() -> None:
    """PodMonitor: selector, namespaceSelector, relabelings; alerts select its job label."""
    docs = extras()
    monitor = docs["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"]["app.kubernetes.io/name"] == "stream"
    assert monitor["namespaceSelector"] == {"matchNames": ["streams"]}
    endpoint = monitor["podMetricsEndpoints"][0]
    assert endpoint["relabelings"][0]["targetLabel"] == "node"
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    assert "ServiceMonitor" not in docs
    exprs = [r["expr"] for g in docs["PrometheusRule"]["spec"]["groups"] for r in g["rules"]]
    assert all('job="streams/demo-stream"' in e for e in exprs if "rill_" in e)


def test_service_monitor_relabelings_and_namespace_selector() -> None:
    """ServiceMonitor takes relabelings, metricRelabelings, namespaceSelector, scrapeTimeout."""
    docs = rendered(
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.serviceMonitor.scrapeTimeout=10s",
        "monitoring.serviceMonitor.namespaceSelector.any=true",
        "monitoring.serviceMonitor.relabelings[0].targetLabel=team",
        "monitoring.serviceMonitor.relabelings[0].replacement=data",
        "monitoring.serviceMonitor.metricRelabelings[0].action=drop",
        "monitoring.serviceMonitor.metricRelabelings[0].regex=python_gc_.*",
        "monitoring.serviceMonitor.metricRelabelings[0].sourceLabels[0]=__name__",
    )
    spec = docs["ServiceMonitor"]["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    endpoint = spec["endpoints"][0]
    assert endpoint["scrapeTimeout"] == "10s"
    assert endpoint["relabelings"] == [{"targetLabel": "team", "replacement": "data"}]
    assert endpoint["metricRelabelings"][0]["sourceLabels"] == ["__name__"]
    typo = render(
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.serviceMonitor.relabelings[0].target_label=x",
    )
    assert typo.returncode != 0
    assert "target_label" in typo.stderr


def test_keda_is_the_default_autoscaling_mode() -> None:
    """autoscaling.enabled alone gives a ScaledObject, no HPA and no adapter rule."""
    docs = rendered("autoscaling.enabled=true")
    assert "ScaledObject" in docs
    assert "HorizontalPodAutoscaler" not in docs
    assert "ConfigMap/demo-rill-adapter-rule" not in docs
    trigger = docs["ScaledObject"]["spec"]["triggers"][0]["metadata"]
    assert trigger["topic"] == "orders"
    assert trigger["lagThreshold"] == "1000"


def test_behavior_schema_refuses_unknown_fields_and_bounds() -> None:
    """behavior.* is closed: a typo, an unknown policy type, a window over an hour all fail."""
    for bad in (
        "autoscaling.behavior.scaleUp.stabilisationWindowSeconds=5",
        "autoscaling.behavior.scaleDown.stabilizationWindowSeconds=3601",
        "autoscaling.behavior.scaleDown.selectPolicy=Maximum",
        "autoscaling.behavior.scaleUp.policies[0].periodSeconds=1801",
    ):
        done = render("autoscaling.enabled=true", bad)
        assert done.returncode != 0, bad
        assert "don't meet the specifications of the schema" in done.stderr, bad
    good = rendered("autoscaling.enabled=true", "autoscaling.behavior.scaleDown.selectPolicy=Min")
    advanced = good["ScaledObject"]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert advanced["behavior"]["scaleDown"]["selectPolicy"] == "Min"


def test_dashboard_has_a_namespace_variable_used_by_every_query() -> None:
    """Two releases of one name in two namespaces stay apart: every query filters $namespace."""
    board = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    names = [v["name"] for v in board["templating"]["list"]]
    assert names.index("namespace") < names.index("job")
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs
    assert all('namespace=~"$namespace"' in e for e in exprs)


def test_group_by_scales_on_the_repartition_topics_lag_too() -> None:
    """With group_by (declared, by env, or flagged for a Python pipeline) KEDA has a Kafka
    trigger and the HPA an External metric for `<groupId>-repartition` besides the input."""
    for keda_set in (
        "pipeline.group_by=customer_id",
        "env.RILL_GROUP_BY=customer_id",
        "autoscaling.repartitionTopic=true",
    ):
        docs = rendered("autoscaling.enabled=true", keda_set)
        triggers = docs["ScaledObject"]["spec"]["triggers"]
        assert [t["metadata"]["topic"] for t in triggers] == ["orders", "rill-repartition"]
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {"rill"}
    hpa = rendered("env.RILL_GROUP_BY=customer_id", "kafka.groupId=shop", profile="hpa")
    metrics = hpa["HorizontalPodAutoscaler"]["spec"]["metrics"]
    topics = [m["external"]["metric"]["selector"]["matchLabels"]["topic"] for m in metrics]
    assert topics == ["orders", "shop-repartition"]
    plain = rendered("autoscaling.enabled=true")
    assert len(plain["ScaledObject"]["spec"]["triggers"]) == 1, "no group_by: the input alone"
