"""kubectl and helm against the local control plane (deploy/local/k8s/cluster.sh)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "rill"
CLUSTER_SH = ROOT / "deploy" / "local" / "k8s" / "cluster.sh"
T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    """Where the tests find the cluster and its tools."""

    kubeconfig: Path
    bin: Path
    pki: Path

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl with the admin kubeconfig."""
        done = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
        return done

    def get(self, *args: str) -> dict[str, Any]:
        """`kubectl get ... -o json`, parsed."""
        parsed: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return parsed

    def apply(self, manifest: str) -> None:
        """`kubectl apply -f -` of a YAML text."""
        self.kubectl("apply", "-f", "-", stdin=manifest)

    def helm(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run helm (built by `make tools`) against the cluster; the caller checks the result."""
        helm = ROOT / ".rill" / "bin" / "helm"
        assert helm.exists(), "helm is missing: `make tools` builds it into .rill/bin"
        return subprocess.run(
            [str(helm), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s,
        )

    def install(
        self, release: str, namespace: str, values: Sequence[Path] = (), *sets: str
    ) -> subprocess.CompletedProcess[str]:
        """`helm install --wait` of the chart into its own (new) namespace."""
        args = ["install", release, str(CHART), "-n", namespace, "--create-namespace"]
        args += ["--wait", "--timeout", "180s"]
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        return self.helm(*args, timeout_s=240.0)

    def uninstall(self, release: str, namespace: str) -> None:
        """Remove a release and its namespace (without waiting for the namespace to go)."""
        self.helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "60s")
        self.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


def load(env_file: Path) -> Cluster:
    """The cluster described by the env file `cluster.sh up` writes."""
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return Cluster(Path(env["KUBECONFIG"]), Path(env["RILL_K8S_BIN"]), Path(env["RILL_K8S_PKI"]))


def eventually(
    probe: Callable[[], T | None], within_s: float, every_s: float = 2.0, what: str = ""
) -> T:
    """Poll `probe` until it returns something other than None (or fail after `within_s`).

    A bound for a hung cluster, not a timing assertion: the bounds are generous.
    """
    deadline = time.monotonic() + within_s
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        time.sleep(every_s)
