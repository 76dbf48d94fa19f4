"""`rill plan`: its flags, the files it reads, and what it prints."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from service.errors import ConfigError
from service.planner import chart
from service.planner import profile as shapes
from service.planner.checks import check_numbers, check_replicas, check_rules
from service.planner.hpa import (
    Behavior,
    HpaSpec,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    Tolerance,
)
from service.planner.keda import KafkaTrigger, ScaledObjectSpec
from service.planner.report import summarize, summary_table, table
from service.planner.simulate import HpaAutoscaler, KedaAutoscaler, Sample, simulate
from service.planner.system import GroupParams, replicas_needed

CHART_DEFAULT = "default: the chart's, or --values"
_T = TypeVar("_T")

BENCH_GLOB = "bench/results/throughput-*.json"
BENCH_KEY = "rill_windowed_records_per_s"

DESCRIPTION = """\
Simulate the Kubernetes HPA (External metric: total consumer lag, AverageValue target)
and KEDA's Kafka scaler on a traffic profile, and print replicas and lag over time for
both, side by side, with summary figures. Pure arithmetic: no cluster, no broker.

Per-replica throughput: --per-replica-rps, else the newest bench/results/throughput-*.json
written by `make bench` (a JSON object; --bench-key names the records/s figure of one
worker). Partitions, replica bounds, lag threshold, behavior and KEDA's settings default to
the Helm chart's values; --values reads a values file over them, and a flag overrides both.
See docs/planning.md and docs/autoscaling.md for the model and its assumptions."""


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
    cap.add_argument(
        "--per-replica-rps",
        type=float,
        help="records/s one worker process sustains (a replica runs --processes of them)",
    )
    cap.add_argument("--bench-file", type=Path, help=f"bench result (default: newest {BENCH_GLOB})")
    cap.add_argument("--bench-key", default=BENCH_KEY, help=f"figure to read (default {BENCH_KEY})")
    cap.add_argument("--partitions", type=int, help=f"input topic partitions ({CHART_DEFAULT})")
    cap.add_argument(
        "--processes",
        type=int,
        help=f"group members per replica, RILL_PROCESSES ({CHART_DEFAULT}: processes)",
    )
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
    _controller_arguments(p)


def _controller_arguments(p: argparse.ArgumentParser) -> None:
    """The chart, HPA, KEDA and output flags."""
    chart_group = p.add_argument_group("chart")
    chart_group.add_argument(
        "--values",
        type=Path,
        help="a Helm values file of the rill chart: its autoscaling block sets the defaults",
    )
    hpa = p.add_argument_group("HPA (both modes)")
    hpa.add_argument("--min-replicas", type=int, help=f"minReplicas ({CHART_DEFAULT}, at least 1)")
    hpa.add_argument("--max-replicas", type=int, help=f"maxReplicas, both modes ({CHART_DEFAULT})")
    hpa.add_argument(
        "--target-lag",
        type=float,
        help=f"lag per replica, the AverageValue target: lagThreshold ({CHART_DEFAULT})",
    )
    hpa.add_argument(
        "--target-type",
        choices=["AverageValue", "Value"],
        default="AverageValue",
        help="HPA mode only; Value: --target-lag is the total and replicas scale by it",
    )
    hpa.add_argument("--tolerance", type=float, default=0.1, help="no change within +-this ratio")
    hpa.add_argument(
        "--controller-version",
        choices=["1.32", "1.33"],
        default="1.32",
        help="the tolerance rule: 1.32 |1 - ratio| <= t; 1.33+ per direction (default 1.32)",
    )
    for direction in ("up", "down"):
        hpa.add_argument(
            f"--scale-{direction}-tolerance",
            type=float,
            help=f"1.33+: behavior.scale{direction.capitalize()}.tolerance (default --tolerance)",
        )
    hpa.add_argument("--sync-period", type=float, default=15.0, help="controller sync (s)")
    hpa.add_argument(
        "--metric-delay",
        type=float,
        default=15.0,
        help="HPA mode: age of the scraped lag metric (s; the scrape interval)",
    )
    hpa.add_argument("--scale-up-window", type=int, help=f"stabilization (s; {CHART_DEFAULT})")
    hpa.add_argument("--scale-down-window", type=int, help=f"stabilization (s; {CHART_DEFAULT})")
    for direction in ("up", "down"):
        hpa.add_argument(
            f"--scale-{direction}-policy",
            type=_policy,
            action="append",
            help=f"TYPE:VALUE:PERIOD_S, repeatable ({CHART_DEFAULT})",
        )
        hpa.add_argument(
            f"--scale-{direction}-select",
            choices=["Max", "Min", "Disabled"],
            help=f"selectPolicy for scale-{direction} ({CHART_DEFAULT})",
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
    keda.add_argument(
        "--activation-lag", type=int, help=f"activationLagThreshold ({CHART_DEFAULT})"
    )
    keda.add_argument(
        "--polling-interval", type=float, help=f"pollingInterval (s; {CHART_DEFAULT})"
    )
    keda.add_argument("--cooldown", type=float, help=f"cooldownPeriod (s; {CHART_DEFAULT})")
    keda.add_argument(
        "--offset-reset-policy",
        choices=["earliest", "latest"],
        help=f"with no committed offset a partition's lag is its end offset (earliest) or 1 "
        f"(latest) ({CHART_DEFAULT})",
    )
    keda.add_argument(
        "--fresh-group",
        action="store_true",
        help="the group has committed nothing at t=0 (the no-committed-offset case)",
    )
    keda.add_argument(
        "--scale-to-zero-on-invalid-offset",
        action="store_true",
        help="scaleToZeroOnInvalidOffset: no committed offset counts as lag 0",
    )
    keda.add_argument(
        "--exclude-persistent-lag",
        action="store_true",
        help="excludePersistentLag: a partition whose commit did not move counts 0 for scaling",
    )
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
    window: int | None,
    policies: list[ScalingPolicy] | None,
    select: str | None,
    default: ScalingRules,
) -> ScalingRules:
    return ScalingRules(
        default.stabilization_window_s if window is None else window,
        tuple(policies) if policies else default.policies,
        cast(SelectPolicy, select or default.select_policy),
    )


def _pick(flag: _T | None, default: _T) -> _T:
    return default if flag is None else flag


def _tolerance(args: argparse.Namespace) -> Tolerance:
    up = _pick(args.scale_up_tolerance, args.tolerance)
    down = _pick(args.scale_down_tolerance, args.tolerance)
    if args.controller_version == "1.32" and up != down:
        raise ConfigError(
            "--scale-up-tolerance / --scale-down-tolerance need --controller-version 1.33 "
            "(per-direction tolerance, HPAConfigurableTolerance); 1.32 has one --tolerance"
        )
    return Tolerance(up, down, args.controller_version)


def build(args: argparse.Namespace) -> tuple[dict[str, list[Sample]], str]:
    """Run both autoscalers as the flags say; returns the runs and a one-line setup note."""
    check_numbers(args)
    values = chart.read_values(args.values) if args.values is not None else None
    c = chart.autoscaling(values)
    args.partitions = _pick(args.partitions, c.partitions)
    args.processes = _pick(args.processes, chart.processes(values))
    args.max_replicas = _pick(args.max_replicas, c.max_replicas)
    args.min_replicas = _pick(args.min_replicas, max(1, c.min_replicas))
    args.target_lag = _pick(args.target_lag, float(c.lag_threshold))
    keda_min = _pick(args.keda_min_replicas, c.min_replicas)
    check_numbers(args)
    check_replicas(args.min_replicas, args.max_replicas, keda_min)
    rps, source = _throughput(args)
    profile = _profile(args)
    up = _rules(args.scale_up_window, args.scale_up_policy, args.scale_up_select, c.scale_up)
    down = _rules(
        args.scale_down_window, args.scale_down_policy, args.scale_down_select, c.scale_down
    )
    check_rules(up, "up")
    check_rules(down, "down")
    behavior = None if args.no_behavior else Behavior(up, down)
    spec = HpaSpec(
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        target=args.target_lag,
        target_type=args.target_type,
        tolerance=_tolerance(args),
        behavior=behavior,
        downscale_stabilization_s=down.stabilization_window_s,
    )
    scaled_object = ScaledObjectSpec(
        keda_min,
        args.max_replicas,
        _pick(args.polling_interval, c.polling_interval_s),
        _pick(args.cooldown, c.cooldown_s),
    )
    trigger = KafkaTrigger(
        lag_threshold=args.lag_threshold or round(args.target_lag),
        activation_lag_threshold=_pick(args.activation_lag, c.activation_lag_threshold),
        allow_idle_consumers=args.allow_idle_consumers,
        limit_to_partitions_with_lag=args.limit_to_partitions_with_lag,
        offset_reset_policy=_pick(args.offset_reset_policy, c.offset_reset_policy),
        scale_to_zero_on_invalid_offset=args.scale_to_zero_on_invalid_offset,
        exclude_persistent_lag=args.exclude_persistent_lag,
    )
    params = GroupParams(
        args.partitions, rps, args.start_delay, args.rebalance_pause, args.processes
    )
    common: dict[str, Any] = {
        "initial_lag": args.initial_lag,
        "tick_s": args.tick,
        "inflight_s": args.inflight,
        "fresh_group": args.fresh_group,
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
    note = _note(args, rps, source, profile.peak, replicas_needed(profile.peak, params))
    return {"hpa": hpa_runs, "keda": keda_runs}, note


def _note(
    args: argparse.Namespace, rps: float, source: str, peak: float, needed: int | None
) -> str:
    """The setup line: throughput, partitions, what the peak needs. Group members count
    against the partitions, and a replica is `--processes` members."""
    n, partitions = args.processes, args.partitions
    member = "replica" if n == 1 else "group member"
    verdict = (
        f"needs {needed} replicas"
        if needed is not None
        else f"is more than {partitions} partitions drain (one {member} each): add partitions"
    )
    if n == 1:
        head = f"per-replica throughput {rps:.0f} records/s ({source}); "
        busiest = "(the busiest replica holds ceil(partitions / replicas) partitions)"
    else:
        head = f"per-process throughput {rps:.0f} records/s ({source}); {n} processes per replica; "
        busiest = "(the busiest process holds ceil(partitions / (replicas x processes)) partitions)"
    note = f"{head}{partitions} partitions; peak input {peak:.0f} records/s {verdict} {busiest}"
    if args.max_replicas * n > partitions:
        idle = "replicas" if n == 1 else "replicas x processes"
        note += f"; note: {idle} beyond {partitions} partitions sit idle"
    return note


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
