"""`make autoscale-demo`: the closed loop once, with its trace, plot and verdict.

    python -m tests.k8s.autoscale_demo [--mode keda|hpa] [--out DIR]

Needs the local stack and control plane (`make up k8s-up`, which the make target runs).
Writes DIR/trace.csv (replicas, workers, lag, planned replicas over time), DIR/loop.png
and DIR/values.yaml; prints the figures and whether every record came out exactly once.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

from tests.k8s.kube import CLUSTER_SH, ROOT, load
from tests.k8s.loop import LoopConfig, run_loop
from tests.k8s.loop_plot import write_plot, write_trace


def main(argv: list[str] | None = None) -> int:
    """Run the loop and report."""
    p = argparse.ArgumentParser(prog="autoscale-demo", description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["keda", "keda-standin", "hpa"], default="keda")
    p.add_argument("--out", type=Path, default=ROOT / ".rill" / "autoscale-demo")
    args = p.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("REDIS_URL")
    if not bootstrap or not redis_url:
        sys.stderr.write("set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL (source .rill/local.env)\n")
        return 2
    if not (ROOT / ".rill" / "k8s" / "env").exists():
        sys.stderr.write(f"the control plane is not up: {CLUSTER_SH} up\n")
        return 2
    cluster = load(ROOT / ".rill" / "k8s" / "env")
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = LoopConfig(mode=args.mode)
    result = run_loop(cluster, bootstrap, redis_url, cfg, args.out, uuid.uuid4().hex[:8])
    write_trace(result, args.out / "trace.csv")
    write_plot(result, args.out / "loop.png")
    doubled = sum(1 for n in result.output_counts.values() if n > 1)
    missing = sum(1 for i in range(result.produced) if result.output_counts[i] == 0)
    print(result.plan_note)
    print(
        f"mode {cfg.mode}: produced {result.produced}; output missing {missing}, "
        f"duplicated {doubled}; peak replicas {result.peak_replicas} "
        f"(rill plan {result.planned_peak}, partitions {cfg.partitions}); peak lag "
        f"{max(s.lag for s in result.samples)}; final replicas {result.samples[-1].replicas}, "
        f"lag {result.samples[-1].lag}; {result.per_replica_rps:.1f} records/s per worker"
    )
    print(f"trace {args.out / 'trace.csv'}, plot {args.out / 'loop.png'}")
    ok = missing == 0 and doubled == 0 and not result.runner_errors
    if result.runner_errors:
        print("runner errors:", result.runner_errors)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
