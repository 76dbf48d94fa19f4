"""The closed loop: replicas follow the lag, the lag follows the replicas, exactly once.

Real `rill run` processes follow the kwok pods of the chart's Deployment
(tests/k8s/podrunner.py); the real HPA controller scales it on the External metric. Mode
keda: KEDA v2.16.1's own operator and metrics server (built by `make k8s-up`,
tests/k8s/keda_real.py) create the HPA from the chart's ScaledObject and serve the Kafka
scaler's lag. Mode hpa: the prometheus-adapter stand-in (tests/k8s/adapter.py, it says
so) serves what the chart's adapter rule computes from the workers' /metrics. A ramp
drives it up, holds, and stops. `rill plan` runs on the same values and ramp; its
peak, and its count at 80 % of the sampling instants, are checked against the measured
ones within one replica.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.k8s.conftest import Endpoints
from tests.k8s.kube import Cluster
from tests.k8s.loop import LoopConfig, LoopResult, run_loop

PLAN_TOLERANCE_REPLICAS = 1
PLAN_AGREEMENT = 0.8


def _report(result: LoopResult) -> None:
    print(result.plan_note)
    print("t_s input replicas workers lag")
    for s in result.samples[:: max(1, len(result.samples) // 40)]:
        print(f"{s.t_s:5.0f} {s.input_rps:5.0f} {s.replicas:3} {s.workers:3} {s.lag:7}")
    print(
        f"peak replicas measured {result.peak_replicas}, planned {result.planned_peak}; "
        f"plan within one replica at {result.agreement():.0%} of samples; "
        f"{result.per_replica_rps:.1f} records/s per worker; produced {result.produced}"
    )


@pytest.mark.parametrize("mode", ["keda", "hpa"])
def test_loop_scales_with_lag_and_keeps_exactly_once(
    mode: str, cluster: Cluster, endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """Up with lag, lag down because of it, down after the window, every record once."""
    cfg = LoopConfig(mode=mode)
    result = run_loop(cluster, endpoints.bootstrap, endpoints.redis_url, cfg, tmp_path, unique)
    _report(result)
    samples = result.samples
    assert not result.runner_errors, result.runner_errors

    # Replicas rise with the lag, never above the partition count.
    assert result.peak_replicas > 1
    assert max(s.replicas for s in samples) <= cfg.partitions
    assert max(s.workers for s in samples) > 1, "the added pods got real workers"
    assert max(s.workers for s in samples) <= cfg.partitions

    # While the input still holds at its peak, the lag falls from its high: the added
    # workers drain it.
    hold_start = cfg.phases[0][0]
    hold_end = hold_start + cfg.phases[1][0]
    hold = [s for s in samples if hold_start <= s.t_s < hold_end]
    peak_at = max(range(len(hold)), key=lambda i: hold[i].lag)
    after_peak = hold[peak_at:]
    assert min(s.lag for s in after_peak) < hold[peak_at].lag, "lag did not fall under load"
    assert max(s.workers for s in after_peak) > 1

    # After the ramp the Deployment returns to minReplicas, no sooner than the window.
    last_up = max(s.t_s for a, s in itertools.pairwise(samples) if s.replicas > a.replicas)
    first_down = min(
        (s.t_s for a, s in itertools.pairwise(samples) if s.replicas < a.replicas),
        default=None,
    )
    assert first_down is not None, "never scaled down"
    assert first_down - last_up >= cfg.scale_down_window_s
    assert samples[-1].replicas == 1
    assert samples[-1].lag == 0

    # Exactly once across every scale event: each produced id once in the committed output.
    assert result.produced > 0
    missing = [i for i in range(result.produced) if result.output_counts[i] == 0]
    doubled = {i: n for i, n in result.output_counts.items() if n > 1}
    assert not missing, f"{len(missing)} records missing, e.g. {missing[:5]}"
    assert not doubled, f"{len(doubled)} records more than once, e.g. {list(doubled.items())[:5]}"
    assert set(result.output_counts) == set(range(result.produced))

    # rill plan on the same values and ramp, with the per-worker rate measured in this run:
    # its peak within one replica, and within one replica of the measured count at
    # PLAN_AGREEMENT of the sampling instants (transitions land a few seconds apart).
    assert abs(result.planned_peak - result.peak_replicas) <= PLAN_TOLERANCE_REPLICAS
    assert result.agreement(PLAN_TOLERANCE_REPLICAS) >= PLAN_AGREEMENT
