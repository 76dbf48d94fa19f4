"""Real `rill run` processes for the kwok pods of a Deployment: a kubelet for the worker.

kwok marks pods Running without running anything. This runner watches the Deployment's
pods and, for each one kwok reports Running, starts `python -m service run` with that
pod's environment (its container's `env` values, as the chart rendered them); when the
pod is deleted (or marked for deletion) it sends SIGTERM and waits the pod's
`terminationGracePeriodSeconds` before SIGKILL, as a kubelet does. Each process gets its
own metrics port (pods have their own network namespace; processes on one host do not).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.k8s.kube import ROOT, Cluster


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pod_env(pod: Mapping[str, Any]) -> dict[str, str]:
    """The worker container's environment: literal values only.

    Raises:
        ValueError: an entry taken from a Secret or ConfigMap (`valueFrom`), which this
            runner does not resolve.
    """
    container = pod["spec"]["containers"][0]
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" not in entry:
            raise ValueError(f"{entry['name']} comes from valueFrom, which the runner cannot read")
        env[entry["name"]] = entry["value"]
    return env


@dataclass
class Worker:
    """One pod's process."""

    pod: str
    process: subprocess.Popen[bytes]
    metrics_url: str
    grace_s: float
    started_at: float = field(default_factory=time.monotonic)


class PodRunner:
    """Start and stop worker processes as the Deployment's pods come and go."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        selector: str,
        logs: Path,
        on_change: Callable[[list[str]], None] | None = None,
        every_s: float = 1.0,
    ) -> None:
        """Watch pods matching `selector` in `namespace`; `on_change` gets the metrics URLs."""
        self.cluster = cluster
        self.namespace = namespace
        self.selector = selector
        self.logs = logs
        self.on_change = on_change
        self.every_s = every_s
        self.workers: dict[str, Worker] = {}
        self.events: list[tuple[float, str, str]] = []  # (monotonic time, pod, started/stopped)
        self._stopping: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.errors: list[str] = []

    def start(self) -> PodRunner:
        """Begin watching."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def running(self) -> int:
        """Worker processes alive now."""
        with self._lock:
            return sum(1 for w in self.workers.values() if w.process.poll() is None)

    def urls(self) -> list[str]:
        """The metrics URLs of the running workers."""
        with self._lock:
            return [w.metrics_url for w in self.workers.values()]

    def _loop(self) -> None:
        while not self._done.is_set():
            try:
                self._sync()
            except Exception as exc:  # noqa: BLE001 - recorded, the test asserts none happened
                self.errors.append(repr(exc))
            self._done.wait(self.every_s)

    def _sync(self) -> None:
        pods = self.cluster.get("pods", "-n", self.namespace, "-l", self.selector)["items"]
        alive = {
            p["metadata"]["name"]: p
            for p in pods
            if p.get("status", {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
        }
        changed = False
        for name, pod in alive.items():
            if name not in self.workers:
                self._start(name, pod)
                changed = True
        for name in list(self.workers):
            if name not in alive:
                self._stop(name)
                changed = True
        if changed and self.on_change is not None:
            self.on_change(self.urls())

    def _start(self, name: str, pod: Mapping[str, Any]) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RILL_")}
        env |= pod_env(pod)
        env["RILL_METRICS_PORT"] = str(port)
        with (self.logs / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "service", "run"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        with self._lock:
            self.workers[name] = Worker(name, process, f"http://127.0.0.1:{port}/metrics", grace)
        self.events.append((time.monotonic(), name, "started"))

    def _stop(self, name: str) -> None:
        with self._lock:
            worker = self.workers.pop(name)
        worker.process.send_signal(signal.SIGTERM)
        self.events.append((time.monotonic(), name, "stopped"))

        def reap() -> None:
            try:
                worker.process.wait(timeout=worker.grace_s)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
                self.errors.append(f"{name} did not drain within {worker.grace_s:.0f} s")

        thread = threading.Thread(target=reap, daemon=True)
        thread.start()
        self._stopping.append(thread)

    def stop(self) -> None:
        """Stop watching and terminate every worker (SIGTERM, then the grace period)."""
        self._done.set()
        self._thread.join(timeout=30)
        for name in list(self.workers):
            self._stop(name)
        for thread in self._stopping:
            thread.join()
