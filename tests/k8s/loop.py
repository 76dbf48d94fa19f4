"""The closed loop: the chart in the local control plane, real workers for its pods, a ramp.

`run_loop` installs the chart (mode keda or hpa) on a fresh topic, serves the External
metric (mode keda: KEDA's own operator and metrics server, tests/k8s/keda_real.py;
keda-standin: the KEDA stand-in from the broker's offsets; hpa: the prometheus-adapter
stand-in from the workers' /metrics), lets `PodRunner` give every pod kwok reports Running a real
`rill run` process (exactly-once, a deliberately slow pipeline), produces a ramp (up,
hold, stop), and samples replicas and the group's lag from the broker until the
Deployment is back at minReplicas. Then it reads the output topic (read_committed) and
runs `rill plan` on the same values and profile. Used by tests/k8s/test_closed_loop.py
and `make autoscale-demo`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from service.kafka.admin import ensure_topics
from service.planner.cli import build, parser
from tests.k8s.adapter import StandInAdapter
from tests.k8s.apiservice import available, register, unregister
from tests.k8s.apps import SLOW_RECORD_S
from tests.k8s.keda_real import running_keda
from tests.k8s.keda_standin import KedaStandIn, read_offsets
from tests.k8s.kube import Cluster, eventually
from tests.k8s.podrunner import PodRunner

RELEASE = "loop"


@dataclass(frozen=True)
class LoopConfig:
    """The run: autoscaling mode, topic shape, thresholds and the input ramp."""

    mode: str = "keda"
    partitions: int = 4
    max_replicas: int = 4
    lag_threshold: int = 100
    # (seconds, records/s): warm-up, ramp, hold, stop.
    phases: tuple[tuple[float, float], ...] = ((20, 20), (60, 140), (10, 0))
    scale_down_window_s: int = 30
    settle_s: float = 150  # after the ramp: drain, stabilization window, scale-down


@dataclass(frozen=True)
class Sample:
    """One sampling instant (t from the start of the ramp)."""

    t_s: float
    input_rps: float
    replicas: int
    workers: int
    lag: int
    consumed: int


@dataclass
class LoopResult:
    """What was measured, and what `rill plan` predicted on the same values and profile."""

    config: LoopConfig
    samples: list[Sample]
    produced: int
    output_counts: Counter[int]
    per_replica_rps: float
    planned: list[tuple[float, int]]
    plan_note: str
    runner_errors: list[str]
    events: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def peak_replicas(self) -> int:
        """The most replicas the Deployment asked for."""
        return max(s.replicas for s in self.samples)

    @property
    def planned_peak(self) -> int:
        """The most replicas `rill plan` predicted."""
        return max(r for _, r in self.planned)

    def agreement(self, within: int = 1) -> float:
        """The share of samples where the plan's replicas are within `within` of the measured."""
        planned = dict(self.planned)
        ticks = sorted(planned)
        close = 0
        for s in self.samples:
            # The plan's state at the sample's time: its last tick at or before it.
            tick = max((t for t in ticks if t <= s.t_s), default=ticks[0])
            close += abs(planned[tick] - s.replicas) <= within
        return close / len(self.samples)


def values(cfg: LoopConfig, topic: str, bootstrap: str, redis_url: str) -> dict[str, Any]:
    """The chart values of the run (also what `rill plan --values` reads)."""
    return {
        "kafka": {
            "bootstrapServers": bootstrap,
            "topic": topic,
            "groupId": f"{topic}-g",
            "outputTopic": f"{topic}-out",
            "dlqTopic": f"{topic}-dlq",
        },
        "redis": {"url": redis_url},
        "processing": {
            "guarantee": "exactly_once",
            "deliveryTimeoutSeconds": 10,
            "transactionTimeoutMs": 10000,
        },
        "env": {
            "RILL_APP": "tests.k8s.apps:slow",
            "RILL_INPUT_FORMAT": "json",
            "RILL_INPUT_WIRE": "plain",
            "RILL_OUTPUT_FORMAT": "json",
            "RILL_OUTPUT_WIRE": "plain",
            "RILL_WINDOW_TYPE": "none",
            "RILL_BATCH_SIZE": "20",
            "RILL_STATS_INTERVAL_MS": "1000",
            "RILL_LOG_LEVEL": "warning",
        },
        "autoscaling": {
            "enabled": True,
            "mode": "hpa" if cfg.mode == "hpa" else "keda",
            "minReplicas": 1,
            "maxReplicas": cfg.max_replicas,
            "partitions": cfg.partitions,
            "lagThreshold": cfg.lag_threshold,
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": cfg.scale_down_window_s,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
                },
            },
            "keda": {"pollingInterval": 5, "activationLagThreshold": 10},
        },
        "monitoring": {"serviceMonitor": {"enabled": cfg.mode == "hpa"}},
    }


def rate_at(phases: Sequence[tuple[float, float]], t: float) -> float:
    """The input rate of the ramp at t seconds."""
    start = 0.0
    for length, rate in phases:
        if t < start + length:
            return rate
        start += length
    return 0.0


def produce(bootstrap: str, topic: str, phases: Sequence[tuple[float, float]]) -> int:
    """Produce {"id": n} records at the ramp's rates; returns how many."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sent, started = 0, time.monotonic()
    total = sum(length for length, _ in phases)
    due = 0.0
    while (now := time.monotonic() - started) < total:
        due += rate_at(phases, now) * 0.05
        while sent < int(due):
            producer.produce(topic, json.dumps({"id": sent}).encode(), str(sent).encode())
            sent += 1
        producer.poll(0)
        time.sleep(0.05)
    assert producer.flush(60) == 0
    return sent


def output_ids(bootstrap: str, topic: str, group: str) -> Counter[int]:
    """Every `id` in the output topic, read_committed, with how often it appears."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p) for p in meta.partitions]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    seen: Counter[int] = Counter()
    done: set[int] = {p for p, end in ends.items() if end == 0}
    deadline = time.monotonic() + 120
    while len(done) < len(ends) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            # Past the last committed record only markers and aborted records remain.
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            done |= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
            continue
        value, offset, partition = msg.value(), msg.offset(), msg.partition()
        if msg.error() or value is None or offset is None or partition is None:
            continue
        seen[int(json.loads(value)["id"])] += 1
        if offset + 1 >= ends[partition]:
            done.add(partition)
    consumer.close()
    return seen


@contextmanager
def metrics_server(
    cluster: Cluster, mode: str, bootstrap: str, workdir: Path
) -> Iterator[StandInAdapter | KedaStandIn | None]:
    """What serves the External metric in this mode, registered as the APIService."""
    if mode == "keda":
        with running_keda(cluster, workdir):
            yield None
        return
    cert, key = cluster.pki / "metrics-adapter.crt", cluster.pki / "metrics-adapter.key"
    server: StandInAdapter | KedaStandIn
    if mode == "keda-standin":
        server = KedaStandIn(cert, key, bootstrap=bootstrap)
    else:
        server = StandInAdapter(cert, key)
    server.start()
    register(cluster, server.port)
    try:
        eventually(lambda: available(cluster), within_s=90, what="the APIService is Available")
        yield server
    finally:
        unregister(cluster)
        server.stop()


def measured_rate(samples: Sequence[Sample], window_s: float = 10.0) -> float:
    """Records/s one worker sustained at the peak worker count, while lag was waiting.

    The longest stretch of samples with the most workers running and records waiting
    (rebalances and the host's shared CPU included), its records consumed over its span
    and worker count. Without such a stretch of `window_s`, 0.
    """
    peak = max((s.workers for s in samples), default=0)
    busy = [s.workers == peak and s.lag > 0 for s in samples]
    best: tuple[float, float] = (0.0, 0.0)  # (span, rate)
    i = 0
    while i < len(samples):
        j = i
        while j + 1 < len(samples) and busy[i] and busy[j + 1]:
            j += 1
        span = samples[j].t_s - samples[i].t_s
        if busy[i] and span >= window_s and span > best[0]:
            best = (span, (samples[j].consumed - samples[i].consumed) / span / peak)
        i = j + 1
    return best[1]


def plan(
    cfg: LoopConfig, values_file: Path, rps: float, duration_s: float, workdir: Path
) -> tuple[list[tuple[float, int]], str]:
    """`rill plan` on the run's values and ramp; its replicas per second for the mode."""
    profile = workdir / "ramp.csv"
    rows, start = ["t_s,records_per_s"], 0.0
    for length, rate in cfg.phases:
        rows += [f"{start:g},{rate:g}", f"{start + length - 0.001:g},{rate:g}"]
        start += length
    rows.append(f"{start:g},0")
    profile.write_text("\n".join(rows) + "\n")
    args = parser().parse_args(
        [
            "--values",
            str(values_file),
            "--csv",
            str(profile),
            "--duration",
            f"{duration_s:.0f}",
            "--per-replica-rps",
            f"{rps:.2f}",
            "--sync-period",
            "5",  # cluster.sh: --horizontal-pod-autoscaler-sync-period 5s
            "--metric-delay",
            "0",  # both stand-ins compute the metric when the HPA asks
            "--start-delay",
            "5",
            "--inflight",
            "0.5",
        ]
    )
    runs, note = build(args)
    return [(s.t_s, s.desired) for s in runs["hpa" if cfg.mode == "hpa" else "keda"]], note


def run_loop(
    cluster: Cluster, bootstrap: str, redis_url: str, cfg: LoopConfig, workdir: Path, tag: str
) -> LoopResult:
    """Install, run the ramp with real workers, sample, check; see the module docstring."""
    topic = f"loop-{tag}"
    namespace = f"loop-{tag}"
    conf = {"bootstrap.servers": bootstrap}
    ensure_topics(conf, [topic, f"{topic}-out", f"{topic}-dlq"], cfg.partitions)
    chart_values = values(cfg, topic, bootstrap, redis_url)
    values_file = workdir / "values.yaml"
    values_file.write_text(yaml.safe_dump(chart_values, sort_keys=False))
    name = f"{RELEASE}-rill"
    samples: list[Sample] = []
    with metrics_server(cluster, cfg.mode, bootstrap, workdir) as server:
        done = cluster.install(RELEASE, namespace, [values_file])
        assert done.returncode == 0, done.stderr
        runner: PodRunner | None = None
        try:
            if isinstance(server, KedaStandIn):
                server.adopt(cluster, namespace, name)
            job = name  # the ServiceMonitor's job: the Service's name

            def targets(urls: list[str]) -> None:
                if server is not None and not isinstance(server, KedaStandIn):
                    server.set_targets(namespace, job, urls)

            runner = PodRunner(
                cluster,
                namespace,
                f"app.kubernetes.io/instance={RELEASE}",
                workdir / "workers",
                on_change=targets,
            ).start()
            eventually(lambda: runner.running() or None, within_s=60, what="a worker runs")
            produced = _ramp_and_sample(
                cluster, bootstrap, topic, namespace, name, cfg, runner, samples
            )
        finally:
            if runner is not None:
                runner.stop()
            cluster.uninstall(RELEASE, namespace)
    counts = output_ids(bootstrap, f"{topic}-out", f"{topic}-check")
    rps = measured_rate(samples)
    duration = samples[-1].t_s if samples else 0.0
    planned, note = plan(cfg, values_file, rps or 1 / SLOW_RECORD_S, duration, workdir)
    result = LoopResult(
        cfg,
        samples,
        produced,
        counts,
        rps,
        planned,
        note,
        runner.errors if runner else [],
        runner.events if runner else [],
    )
    return result


def _ramp_and_sample(
    cluster: Cluster,
    bootstrap: str,
    topic: str,
    namespace: str,
    name: str,
    cfg: LoopConfig,
    runner: PodRunner,
    samples: list[Sample],
) -> int:
    group = f"{topic}-g"
    count: list[int] = []
    producer = threading.Thread(
        target=lambda: count.append(produce(bootstrap, topic, cfg.phases)), daemon=True
    )
    started = time.monotonic()
    producer.start()
    ramp_s = sum(length for length, _ in cfg.phases)
    while True:
        t = time.monotonic() - started
        offsets = read_offsets(bootstrap, group, topic)
        lag = sum(o.end - (o.committed or 0) for o in offsets)
        consumed = sum(o.committed or 0 for o in offsets)
        replicas = cluster.get("deployment", "-n", namespace, name)["spec"]["replicas"]
        samples.append(Sample(t, rate_at(cfg.phases, t), replicas, runner.running(), lag, consumed))
        if t > ramp_s and lag == 0 and replicas == 1 and samples[-2].replicas == 1:
            break
        if t > ramp_s + cfg.settle_s:
            break
        time.sleep(2.0)
    producer.join(timeout=60)
    return count[0] if count else 0
