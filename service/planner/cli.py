"""`rill plan`: its flags, the files it reads, and what it prints."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from service.errors import ConfigError
from service.planner import profile as shapes
from service.planner.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Behavior,
    HpaSpec,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
)
from service.planner.keda import KafkaTrigger, ScaledObjectSpec
from service.planner.report import summarize, summary_table, table
from service.planner.simulate import HpaAutoscaler, KedaAutoscaler, Sample, simulate
from service.planner.system import GroupParams

BENCH_GLOB = "bench/results/throughput-*.json"
BENCH_KEY = "rill_windowed_records_per_s"

DESCRIPTION = """\
Simulate the Kubernetes HPA (External metric: total consumer lag, AverageValue target)
and KEDA's Kafka scaler on a traffic profile, and print replicas and lag over time for
both, side by side, with summary figures. Pure arithmetic: no cluster, no broker.

Per-replica throughput: --per-replica-rps, else the newest bench/results/throughput-*.json
written by `make bench` (a JSON object; --bench-key names the records/s figure of one
worker). See docs/planning.md for the model and its assumptions."""


def _policy(text: str) -> ScalingPolicy:
    try:
        kind, value, period = text.split(":")
        if kind not in ("Pods", "Percent"):
            raise ValueError(kind)
        return ScalingPolicy(cast(PolicyType, kind), int(value), int(period))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"a policy is Pods:VALUE:PERIOD_S or Percent:VALUE:PERIOD_S, not {text!r}"
        ) from exc


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare every flag of `rill plan` on `p`."""
    src = p.add_argument_group("traffic profile")
    src.add_argument(
        "--profile",
        choices=["step", "spike", "diurnal"],
        default="step",
        help="built-in shape (default step); ignored with --csv",
    )
    src.add_argument("--csv", type=Path, help="profile file with the header t_s,records_per_s")
    src.add_argument("--base", type=float, default=500.0, help="records/s outside the peak")
    src.add_argument("--peak", type=float, default=3000.0, help="records/s at the peak")
    src.add_argument("--start", type=float, default=60.0, help="step/spike: peak starts (s)")
    src.add_argument("--end", type=float, help="step: back to --base at this time (s)")
    src.add_argument("--width", type=float, default=120.0, help="spike: peak length (s)")
    src.add_argument("--period", type=float, default=3600.0, help="diurnal: cycle length (s)")
    src.add_argument(
        "--duration",
        type=float,
        help="seconds to simulate (default: 900 for step/spike, one period, the CSV's end)",
    )
    cap = p.add_argument_group("workers")
    cap.add_argument("--per-replica-rps", type=float, help="records/s one replica sustains")
    cap.add_argument("--bench-file", type=Path, help=f"bench result (default: newest {BENCH_GLOB})")
    cap.add_argument("--bench-key", default=BENCH_KEY, help=f"figure to read (default {BENCH_KEY})")
    cap.add_argument("--partitions", type=int, default=4, help="input topic partitions")
    cap.add_argument("--start-delay", type=float, default=20.0, help="pod created to Ready (s)")
    cap.add_argument(
        "--rebalance-pause", type=float, default=3.0, help="no consumption after a join/leave (s)"
    )
    cap.add_argument(
        "--inflight",
        type=float,
        default=1.0,
        help="seconds of input consumed but not yet committed (adds rate x this to the "
        "committed lag the autoscalers see; 0: an ideal consumer)",
    )
    cap.add_argument("--initial-replicas", type=int, help="Ready at t=0 (default: each min)")
    cap.add_argument("--initial-lag", type=float, default=0.0, help="records waiting at t=0")
    hpa = p.add_argument_group("HPA (both modes)")
    hpa.add_argument("--min-replicas", type=int, default=1, help="minReplicas (default 1)")
    hpa.add_argument("--max-replicas", type=int, default=4, help="maxReplicas, both modes")
    hpa.add_argument(
        "--target-lag", type=float, default=1000.0, help="lag per replica (AverageValue target)"
    )
    hpa.add_argument(
        "--target-type",
        choices=["AverageValue", "Value"],
        default="AverageValue",
        help="HPA mode only; Value: --target-lag is the total and replicas scale by it",
    )
    hpa.add_argument("--tolerance", type=float, default=0.1, help="no change within +-this ratio")
    hpa.add_argument("--sync-period", type=float, default=15.0, help="controller sync (s)")
    hpa.add_argument(
        "--metric-delay",
        type=float,
        default=15.0,
        help="HPA mode: age of the scraped lag metric (s; the scrape interval)",
    )
    hpa.add_argument("--scale-up-window", type=int, default=0, help="stabilization (s)")
    hpa.add_argument("--scale-down-window", type=int, default=300, help="stabilization (s)")
    hpa.add_argument(
        "--scale-up-policy",
        type=_policy,
        action="append",
        help="TYPE:VALUE:PERIOD_S, repeatable (default Pods:4:15 and Percent:100:15)",
    )
    hpa.add_argument(
        "--scale-down-policy",
        type=_policy,
        action="append",
        help="TYPE:VALUE:PERIOD_S, repeatable (default Percent:100:15)",
    )
    for direction in ("up", "down"):
        hpa.add_argument(
            f"--scale-{direction}-select",
            choices=["Max", "Min", "Disabled"],
            default="Max",
            help=f"selectPolicy for scale-{direction}",
        )
    hpa.add_argument(
        "--no-behavior",
        action="store_true",
        help="an HPA without spec.behavior (at most x2 or +4 per sync; down window as above)",
    )
    keda = p.add_argument_group("KEDA")
    keda.add_argument(
        "--keda-min-replicas", type=int, help="minReplicaCount (default --min-replicas)"
    )
    keda.add_argument("--lag-threshold", type=int, help="lagThreshold (default --target-lag)")
    keda.add_argument("--activation-lag", type=int, default=10, help="activationLagThreshold")
    keda.add_argument("--polling-interval", type=float, default=30.0, help="pollingInterval (s)")
    keda.add_argument("--cooldown", type=float, default=300.0, help="cooldownPeriod (s)")
    keda.add_argument(
        "--allow-idle-consumers",
        action="store_true",
        help="no cap of lag at partitions x threshold",
    )
    keda.add_argument(
        "--limit-to-partitions-with-lag",
        action="store_true",
        help="cap at partitions that have lag x threshold",
    )
    out = p.add_argument_group("output")
    out.add_argument("--every", type=float, default=30.0, help="table row step (s)")
    out.add_argument("--tick", type=float, default=1.0, help="simulation step (s)")
    out.add_argument("--slo-lag-seconds", type=float, default=60.0, help="lag-seconds objective")
    out.add_argument("--png", type=Path, help="also plot to this PNG (needs rill[plan])")


def parser() -> argparse.ArgumentParser:
    """A standalone parser for `rill plan` (the main CLI adds the same flags)."""
    p = argparse.ArgumentParser(
        prog="rill plan",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return p


def _profile(args: argparse.Namespace) -> shapes.Profile:
    if args.csv is not None:
        try:
            text = args.csv.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the profile {args.csv}: {exc}") from exc
        return shapes.parse_csv(text, args.duration)
    if args.profile == "diurnal":
        return shapes.diurnal(args.base, args.peak, args.period, args.duration or args.period)
    duration = args.duration or 900.0
    if args.profile == "spike":
        return shapes.step(args.base, args.peak, args.start, args.start + args.width, duration)
    return shapes.step(args.base, args.peak, args.start, args.end, duration)


def read_bench(path: Path, key: str) -> float:
    """The records/s figure `key` of a `make bench` result file."""
    try:
        report: Any = json.loads(path.read_text())
        value = float(report[key])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"no number {key!r} in the bench result {path}: {exc}") from exc
    if value <= 0:
        raise ConfigError(f"{key} in {path} is {value}, not a throughput")
    return value


def _throughput(args: argparse.Namespace) -> tuple[float, str]:
    if args.per_replica_rps is not None:
        return args.per_replica_rps, "--per-replica-rps"
    path = args.bench_file
    if path is None:
        found = sorted(Path().glob(BENCH_GLOB))
        if not found:
            raise ConfigError("give --per-replica-rps, or run `make bench` to write " + BENCH_GLOB)
        path = found[-1]
    return read_bench(path, args.bench_key), f"{path} {args.bench_key}"


def _rules(
    window: int, policies: list[ScalingPolicy] | None, select: str, default: ScalingRules
) -> ScalingRules:
    chosen = tuple(policies) if policies else default.policies
    return ScalingRules(window, chosen, cast(SelectPolicy, select))


def _check(args: argparse.Namespace) -> None:
    positive = {
        "--partitions": args.partitions,
        "--max-replicas": args.max_replicas,
        "--target-lag": args.target_lag,
        "--tick": args.tick,
        "--sync-period": args.sync_period,
        "--polling-interval": args.polling_interval,
    }
    for flag, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{flag} must be positive")
    if not 1 <= args.min_replicas <= args.max_replicas:
        raise ConfigError("the HPA needs 1 <= --min-replicas <= --max-replicas")
    keda_min = args.keda_min_replicas
    if keda_min is not None and not 0 <= keda_min <= args.max_replicas:
        raise ConfigError("--keda-min-replicas must be within 0..--max-replicas")


def build(args: argparse.Namespace) -> tuple[dict[str, list[Sample]], str]:
    """Run both autoscalers as the flags say; returns the runs and a one-line setup note."""
    _check(args)
    rps, source = _throughput(args)
    profile = _profile(args)
    behavior = None
    if not args.no_behavior:
        behavior = Behavior(
            _rules(
                args.scale_up_window, args.scale_up_policy, args.scale_up_select, DEFAULT_SCALE_UP
            ),
            _rules(
                args.scale_down_window,
                args.scale_down_policy,
                args.scale_down_select,
                DEFAULT_SCALE_DOWN,
            ),
        )
    spec = HpaSpec(
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        target=args.target_lag,
        target_type=args.target_type,
        tolerance=args.tolerance,
        behavior=behavior,
        downscale_stabilization_s=args.scale_down_window,
    )
    keda_min = args.min_replicas if args.keda_min_replicas is None else args.keda_min_replicas
    scaled_object = ScaledObjectSpec(
        keda_min, args.max_replicas, args.polling_interval, args.cooldown
    )
    trigger = KafkaTrigger(
        lag_threshold=args.lag_threshold or round(args.target_lag),
        activation_lag_threshold=args.activation_lag,
        allow_idle_consumers=args.allow_idle_consumers,
        limit_to_partitions_with_lag=args.limit_to_partitions_with_lag,
    )
    params = GroupParams(args.partitions, rps, args.start_delay, args.rebalance_pause)
    common: dict[str, Any] = {
        "initial_lag": args.initial_lag,
        "tick_s": args.tick,
        "inflight_s": args.inflight,
    }
    hpa_runs = simulate(
        profile,
        params,
        HpaAutoscaler(spec, args.sync_period),
        initial_replicas=args.initial_replicas or args.min_replicas,
        metric_delay_s=args.metric_delay,
        **common,
    )
    keda_runs = simulate(
        profile,
        params,
        KedaAutoscaler(scaled_object, trigger, spec, args.sync_period),
        initial_replicas=keda_min if args.initial_replicas is None else args.initial_replicas,
        **common,
    )
    note = (
        f"per-replica throughput {rps:.0f} records/s ({source}); {args.partitions} partitions; "
        f"peak input {profile.peak:.0f} records/s needs "
        f"{-(-profile.peak // rps):.0f} replicas"
    )
    if args.max_replicas > args.partitions:
        note += f"; note: replicas beyond {args.partitions} partitions sit idle"
    return {"hpa": hpa_runs, "keda": keda_runs}, note


def _out(text: str) -> None:
    sys.stdout.write(text)


def run(args: argparse.Namespace) -> int:
    """Simulate, print the table and the summary, and plot when asked."""
    try:
        runs, note = build(args)
        summaries = {n: summarize(s, args.tick, args.slo_lag_seconds) for n, s in runs.items()}
        _out(f"{note}\n{table(runs, args.every, args.tick)}\n\n")
        _out(summary_table(summaries, args.slo_lag_seconds) + "\n")
        if args.png is not None:
            from service.planner.plot import write_png  # noqa: PLC0415 - matplotlib is optional

            write_png(runs, args.png, note.split(";")[0], args.slo_lag_seconds)
            _out(f"plot written to {args.png}\n")
    except ConfigError as exc:
        sys.stderr.write(f"rill plan: {exc}\n")
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`rill plan` on its own (also `python -m service.planner`)."""
    return run(parser().parse_args(argv))
