"""KEDA itself (v2.16.1's operator and metrics server, built by `make k8s-up`) on the local
control plane, as processes on this host.

The operator watches ScaledObjects in every namespace, creates their HPAs
(`keda-hpa-<name>`), runs the Kafka scaler against the broker and serves the metric over
its gRPC metrics service; the metrics server (KEDA's "adapter") serves
`external.metrics.k8s.io` to the aggregator, asking the operator. Out of cluster, both
read the admin kubeconfig; the operator's gRPC service gets a certificate from the
cluster's CA, and the metrics server the aggregator-facing certificate cluster.sh makes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.k8s.apiservice import available, register, unregister
from tests.k8s.kube import Cluster, eventually
from tests.k8s.podrunner import free_port

_EXT = """basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
"""


def built(cluster: Cluster) -> bool:
    """Whether `make k8s-up` built KEDA's binaries."""
    return (cluster.bin / "keda-operator").exists() and (cluster.bin / "keda-adapter").exists()


def _certs(cluster: Cluster, out: Path) -> Path:
    """ca.crt, tls.crt, tls.key for the operator's gRPC service (and its client)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "ext.cnf").write_text(_EXT)
    key, csr, crt = out / "tls.key", out / "tls.csr", out / "tls.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=keda-operator",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        ],
        check=True,
        capture_output=True,
    )
    ca = cluster.pki / "ca.crt"
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(cluster.pki / "ca.key"),
            "-CAcreateserial",
            "-days",
            "30",
            "-sha256",
            "-out",
            str(crt),
            "-extfile",
            str(out / "ext.cnf"),
        ],
        check=True,
        capture_output=True,
    )
    (out / "ca.crt").write_bytes(ca.read_bytes())
    return out


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WATCH_NAMESPACE": "", "POD_NAMESPACE": "keda"}
    env["KEDA_CLUSTER_OBJECT_NAMESPACE"] = "keda"
    with log.open("ab") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@contextmanager
def running_keda(cluster: Cluster, workdir: Path) -> Iterator[None]:
    """KEDA's operator and metrics server, registered as the external metrics APIService."""
    assert built(cluster), "KEDA is not built: `make k8s-up` builds it (deploy/local/k8s)"
    certs = _certs(cluster, workdir / "keda-certs")
    kubeconfig, pki = str(cluster.kubeconfig), cluster.pki
    cluster.kubectl("create", "namespace", "keda", check=False)
    grpc, adapter_port = free_port(), free_port()
    operator = _start(
        [
            str(cluster.bin / "keda-operator"),
            "--kubeconfig",
            kubeconfig,
            "--cert-dir",
            str(certs),
            "--leader-elect=false",
            "--zap-encoder",
            "console",
            "--metrics-bind-address",
            f"127.0.0.1:{free_port()}",
            "--health-probe-bind-address",
            f"127.0.0.1:{free_port()}",
            "--metrics-service-bind-address",
            f"127.0.0.1:{grpc}",
        ],
        workdir / "keda-operator.log",
    )
    adapter = _start(
        [
            str(cluster.bin / "keda-adapter"),
            "--kubeconfig",
            kubeconfig,
            "--lister-kubeconfig",
            kubeconfig,
            "--authentication-kubeconfig",
            kubeconfig,
            "--authorization-kubeconfig",
            kubeconfig,
            "--secure-port",
            str(adapter_port),
            "--bind-address",
            "127.0.0.1",
            "--tls-cert-file",
            str(pki / "metrics-adapter.crt"),
            "--tls-private-key-file",
            str(pki / "metrics-adapter.key"),
            "--client-ca-file",
            str(pki / "ca.crt"),
            "--requestheader-client-ca-file",
            str(pki / "front-proxy-ca.crt"),
            "--requestheader-allowed-names",
            "front-proxy-client",
            "--metrics-service-address",
            f"127.0.0.1:{grpc}",
            "--metrics-service-grpc-authority",
            "localhost",
            "--cert-dir",
            str(certs),
        ],
        workdir / "keda-adapter.log",
    )
    try:
        register(cluster, adapter_port)
        eventually(
            lambda: available(cluster), within_s=120, what="KEDA's metrics server is Available"
        )
        yield
    finally:
        unregister(cluster)
        for process in (adapter, operator):
            process.send_signal(signal.SIGTERM)
        for process in (adapter, operator):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
