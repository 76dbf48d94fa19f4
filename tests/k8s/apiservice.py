"""The external metrics APIService, routed to a stand-in server on localhost.

One `v1beta1.external.metrics.k8s.io` APIService exists per cluster: prometheus-adapter
and KEDA's metrics server both register it, which is why a cluster runs one of them; the
tests register whichever stand-in they run, one at a time.
"""

from __future__ import annotations

import base64
from typing import Any

from tests.k8s.kube import Cluster

ADAPTER_SERVICE = "external-metrics-standin"  # the SAN of cluster.sh's metrics-adapter cert


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The status condition `kind` of an object (empty when absent)."""
    for found in obj.get("status", {}).get("conditions", []):
        if found["type"] == kind:
            result: dict[str, Any] = found
            return result
    return {}


def register(cluster: Cluster, port: int) -> None:
    """Route external.metrics.k8s.io to the stand-in, and let the HPA controller read it."""
    ca = base64.b64encode((cluster.pki / "ca.crt").read_bytes()).decode()
    cluster.apply(f"""
apiVersion: v1
kind: Service
metadata: {{name: {ADAPTER_SERVICE}, namespace: kube-system}}
spec: {{type: ExternalName, externalName: localhost}}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.external.metrics.k8s.io}}
spec:
  group: external.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: {ca}
  service: {{name: {ADAPTER_SERVICE}, namespace: kube-system, port: {port}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: rill-external-metrics-reader}}
rules:
  - apiGroups: [external.metrics.k8s.io]
    resources: ["*"]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: rill-hpa-external-metrics}}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: rill-external-metrics-reader
subjects:
  - {{kind: ServiceAccount, name: horizontal-pod-autoscaler, namespace: kube-system}}
""")


def unregister(cluster: Cluster) -> None:
    """Remove the APIService (the HPA then reports FailedGetExternalMetric)."""
    cluster.kubectl("delete", "apiservice", "v1beta1.external.metrics.k8s.io", "--ignore-not-found")


def available(cluster: Cluster) -> bool | None:
    """True once the aggregator reports the APIService Available (None before)."""
    found = condition(cluster.get("apiservice", "v1beta1.external.metrics.k8s.io"), "Available")
    return True if found.get("status") == "True" else None
