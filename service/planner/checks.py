"""`rill plan`'s argument checks: every bad value is a ConfigError naming the flag."""

from __future__ import annotations

import argparse
import math

from service.errors import ConfigError
from service.planner.hpa import ScalingRules

# Flag -> (attribute, lowest allowed, whether the lowest itself is allowed).
_BOUNDS: dict[str, tuple[str, float, bool]] = {
    "--per-replica-rps": ("per_replica_rps", 0, False),
    "--partitions": ("partitions", 1, True),
    "--processes": ("processes", 1, True),
    "--max-replicas": ("max_replicas", 1, True),
    "--target-lag": ("target_lag", 0, False),
    "--lag-threshold": ("lag_threshold", 1, True),
    "--tick": ("tick", 0, False),
    "--every": ("every", 0, False),
    "--sync-period": ("sync_period", 0, False),
    "--polling-interval": ("polling_interval", 0, False),
    "--cooldown": ("cooldown", 0, True),
    "--activation-lag": ("activation_lag", 0, True),
    "--tolerance": ("tolerance", 0, True),
    "--scale-up-tolerance": ("scale_up_tolerance", 0, True),
    "--scale-down-tolerance": ("scale_down_tolerance", 0, True),
    "--metric-delay": ("metric_delay", 0, True),
    "--start-delay": ("start_delay", 0, True),
    "--rebalance-pause": ("rebalance_pause", 0, True),
    "--inflight": ("inflight", 0, True),
    "--initial-replicas": ("initial_replicas", 0, True),
    "--initial-lag": ("initial_lag", 0, True),
    "--base": ("base", 0, True),
    "--peak": ("peak", 0, True),
    "--start": ("start", 0, True),
    "--width": ("width", 0, False),
    "--period": ("period", 0, False),
    "--duration": ("duration", 0, False),
    "--slo-lag-seconds": ("slo_lag_seconds", 0, False),
}


def check_numbers(args: argparse.Namespace) -> None:
    """Finite, and within bounds, for every numeric flag given (None: not given)."""
    for flag, (attr, lowest, inclusive) in _BOUNDS.items():
        value = getattr(args, attr, None)
        if value is None:
            continue
        if not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, not {value}")
        if value < lowest or (value == lowest and not inclusive):
            bound = f"at least {lowest:g}" if inclusive else f"above {lowest:g}"
            raise ConfigError(f"{flag} must be {bound}, not {value:g}")


def check_rules(rules: ScalingRules, direction: str) -> None:
    """One direction of `behavior` within the API's bounds (as the chart's schema has them)."""
    where = f"scale-{direction}"
    if not 0 <= rules.stabilization_window_s <= 3600:
        raise ConfigError(f"--{where}-window must be within 0..3600 s (the API's bound)")
    if not rules.policies:
        raise ConfigError(f"{where}: at least one policy")
    for policy in rules.policies:
        if policy.value < 1:
            raise ConfigError(f"--{where}-policy: the value must be at least 1")
        if not 1 <= policy.period_s <= 1800:
            raise ConfigError(f"--{where}-policy: the period must be within 1..1800 s")


def check_replicas(min_replicas: int, max_replicas: int, keda_min: int) -> None:
    """The HPA's and KEDA's replica bounds."""
    if not 1 <= min_replicas <= max_replicas:
        raise ConfigError(
            f"the HPA needs 1 <= --min-replicas ({min_replicas}) <= --max-replicas ({max_replicas})"
        )
    if not 0 <= keda_min <= max_replicas:
        raise ConfigError(f"--keda-min-replicas ({keda_min}) must be within 0..--max-replicas")
