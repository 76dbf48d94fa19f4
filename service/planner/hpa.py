"""The HorizontalPodAutoscaler v2 controller's arithmetic, as kube-controller-manager does it.

Modelled on kubernetes `pkg/controller/podautoscaler` (v1.32, the version the local control
plane runs), with v1.33's tolerance rule as an option (`Tolerance`):

- `replica_calculator.go`: `GetExternalPerPodMetricReplicas` (External metric with an
  `AverageValue` target) and `GetExternalMetricReplicas` / `getUsageRatioReplicaCount`
  (a `Value` target);
- `horizontal.go`: `reconcileAutoscaler` (the min/max clamps before any metric is read),
  `normalizeDesiredReplicas` + `stabilizeRecommendation` + `convertDesiredReplicasWithRules`
  (an HPA without `behavior`), `normalizeDesiredReplicasWithBehaviors` +
  `stabilizeRecommendationWithBehaviors` + `convertDesiredReplicasWithBehaviorRate` +
  `calculateScaleUpLimitWithScalingRules` / `calculateScaleDownLimitWithBehaviors` +
  `storeScaleEvent` (an HPA with `behavior`, which the chart always sets);
- `pkg/apis/autoscaling/v2/defaults.go`: the behavior defaults filled in by the API server.

Quantities are compared as the controller does: metric and target as milli-values, ratios
in float64, `math.Ceil` / `int32()` truncation where the Go code uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

PolicyType: TypeAlias = Literal["Pods", "Percent"]
SelectPolicy: TypeAlias = Literal["Max", "Min", "Disabled"]
TargetType: TypeAlias = Literal["AverageValue", "Value"]
ControllerVersion: TypeAlias = Literal["1.32", "1.33"]

_INT32_MAX = 2**31 - 1
_INT32_MIN = -(2**31)
# convertDesiredReplicasWithRules (no `behavior`): at most double, or 4, per sync.
_SCALE_UP_LIMIT_FACTOR = 2.0
_SCALE_UP_LIMIT_MINIMUM = 4.0


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """One `HPAScalingPolicy`: change by `value` pods or percent per `period_s`."""

    type: PolicyType
    value: int
    period_s: int


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """One direction of `behavior` (`HPAScalingRules`)."""

    stabilization_window_s: int
    policies: tuple[ScalingPolicy, ...]
    select_policy: SelectPolicy = "Max"


# The API server's defaults (autoscaling/v2 defaults.go) for a `behavior` that leaves them out.
DEFAULT_SCALE_UP = ScalingRules(
    0, (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)), "Max"
)
# Its window is nil in the API; the controller fills in --horizontal-pod-autoscaler-
# downscale-stabilization (5 min) in maybeInitScaleDownStabilizationWindow.
DEFAULT_SCALE_DOWN = ScalingRules(300, (ScalingPolicy("Percent", 100, 15),), "Max")


@dataclass(frozen=True, slots=True)
class Behavior:
    """`spec.behavior` with every default filled in."""

    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN


@dataclass(frozen=True, slots=True)
class HpaSpec:
    """The parts of an HPA on one External metric (total consumer lag) that drive scaling.

    Attributes:
        min_replicas: `spec.minReplicas`.
        max_replicas: `spec.maxReplicas`.
        target: the target quantity: per replica for `AverageValue`, in total for `Value`.
        target_type: `AverageValue` (the chart's choice) or `Value`.
        tolerance: the controller's tolerance (`--horizontal-pod-autoscaler-tolerance`, and
            on 1.33+ per direction), with its version's rule.
        behavior: `spec.behavior`, or None for an HPA without one.
        downscale_stabilization_s: the controller flag used when `behavior` is None.
    """

    min_replicas: int
    max_replicas: int
    target: float
    target_type: TargetType = "AverageValue"
    tolerance: float | Tolerance = 0.1
    behavior: Behavior | None = field(default_factory=Behavior)
    downscale_stabilization_s: int = 300


def milli(quantity: float) -> int:
    """A quantity as `resource.Quantity.MilliValue()` returns it (rounded up)."""
    return math.ceil(round(quantity * 1000, 6))


@dataclass(frozen=True, slots=True)
class Tolerance:
    """The controller's no-change band around a usage ratio of 1, as its version tests it.

    v1.32 (`replica_calculator.go`): `math.Abs(1.0-usageRatio) <= c.tolerance`, one value
    (`--horizontal-pod-autoscaler-tolerance`, default 0.1).
    v1.33+ (`Tolerances.isWithin`): `(1.0-scaleDown) <= usageRatio && usageRatio <=
    (1.0+scaleUp)`, each direction its own value (`behavior.scaleUp/scaleDown.tolerance`
    behind the HPAConfigurableTolerance gate, alpha in 1.33; else both the flag's). The
    two rules differ in float64 at the edge: a ratio of exactly 1.1 (4.4 / 4) scales on
    1.32 (|1 - 1.1| is 0.10000000000000009) and stays on 1.33 (1.1 <= 1.1).
    """

    scale_up: float = 0.1
    scale_down: float = 0.1
    version: ControllerVersion = "1.32"

    def __post_init__(self) -> None:
        """v1.32 has one tolerance; negative ones are not a band."""
        if self.scale_up < 0 or self.scale_down < 0:
            raise ValueError("a tolerance is not negative")
        if self.version == "1.32" and self.scale_up != self.scale_down:
            raise ValueError("per-direction tolerances need controller version 1.33 or later")

    def is_within(self, usage_ratio: float) -> bool:
        """Whether the controller keeps the current count; NaN is outside in both rules."""
        if self.version == "1.32":
            return abs(1.0 - usage_ratio) <= self.scale_up
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


def within_tolerance(usage_ratio: float, tolerance: float | Tolerance) -> bool:
    """Whether a usage ratio is within the tolerance (a bare float: v1.32's rule)."""
    band = tolerance if isinstance(tolerance, Tolerance) else Tolerance(tolerance, tolerance)
    return band.is_within(usage_ratio)


def _ratio(numerator: float, denominator: float) -> float:
    # Go's float64 division: x/0 is +Inf, 0/0 is NaN.
    if denominator == 0:
        return math.inf if numerator > 0 else math.nan
    return numerator / denominator


def external_average_value_replicas(
    status_replicas: int, usage_milli: int, target_milli: int, tolerance: float | Tolerance
) -> int:
    """`GetExternalPerPodMetricReplicas`: desired = ceil(metric / target) outside tolerance.

    Args:
        status_replicas: `scale.status.replicas` (pods that exist, ready or not).
        usage_milli: the sum of the External metric's series, in milli-units.
        target_milli: the `AverageValue` target, in milli-units.
        tolerance: the controller's tolerance.

    Returns:
        The proposed replica count; the current count when the ratio is within tolerance.
    """
    usage_ratio = _ratio(usage_milli, target_milli * status_replicas)
    if within_tolerance(usage_ratio, tolerance):
        return status_replicas
    return math.ceil(usage_milli / target_milli)


def external_value_replicas(
    current_replicas: int,
    ready_replicas: int,
    usage_milli: int,
    target_milli: int,
    tolerance: float | Tolerance,
) -> int:
    """`GetExternalMetricReplicas` + `getUsageRatioReplicaCount`: a `Value` target.

    desired = ceil(ready pods x metric / target); from zero replicas, ceil(metric / target).
    """
    usage_ratio = usage_milli / target_milli
    if current_replicas == 0:
        return math.ceil(usage_ratio)
    if within_tolerance(usage_ratio, tolerance):
        return current_replicas
    return math.ceil(usage_ratio * ready_replicas)


@dataclass(slots=True)
class _Event:
    at: float
    change: int  # absolute value, as the controller keeps it


def _changes_in_period(period_s: int, events: list[_Event], now: float) -> int:
    """`getReplicasChangePerPeriod`: events strictly after now - period."""
    cutoff = now - period_s
    return sum(e.change for e in events if e.at > cutoff)


def scale_up_limit(
    current: int, up: list[_Event], down: list[_Event], rules: ScalingRules, now: float
) -> int:
    """`calculateScaleUpLimitWithScalingRules`: the most replicas the policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    pick = min if rules.select_policy == "Min" else max
    result = _INT32_MAX if rules.select_policy == "Min" else _INT32_MIN
    for policy in rules.policies:
        start = (
            current
            - _changes_in_period(policy.period_s, up, now)
            + _changes_in_period(policy.period_s, down, now)
        )
        if policy.type == "Pods":
            proposed = start + policy.value
        else:
            # Rounded up, or a small Percent on few replicas could never add one.
            proposed = math.ceil(float(start) * (1 + float(policy.value) / 100))
        result = pick(result, proposed)
    return result


def scale_down_limit(
    current: int, up: list[_Event], down: list[_Event], rules: ScalingRules, now: float
) -> int:
    """`calculateScaleDownLimitWithBehaviors`: the fewest replicas the policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    # For scale-down the smallest change ('Min') is the highest replica count.
    pick = max if rules.select_policy == "Min" else min
    result = _INT32_MIN if rules.select_policy == "Min" else _INT32_MAX
    for policy in rules.policies:
        start = (
            current
            - _changes_in_period(policy.period_s, up, now)
            + _changes_in_period(policy.period_s, down, now)
        )
        if policy.type == "Pods":
            proposed = start - policy.value
        else:
            proposed = int(float(start) * (1 - float(policy.value) / 100))  # int32() truncates
        result = pick(result, proposed)
    return result


def convert_with_rules(current: int, desired: int, min_replicas: int, max_replicas: int) -> int:
    """`convertDesiredReplicasWithRules`: the clamps of an HPA without `behavior`."""
    scale_up_limit_ = int(max(_SCALE_UP_LIMIT_FACTOR * current, _SCALE_UP_LIMIT_MINIMUM))
    maximum = min(max_replicas, scale_up_limit_)
    if desired < min_replicas:
        return min_replicas
    if desired > maximum:
        return maximum
    return desired


@dataclass(frozen=True, slots=True)
class HpaDecision:
    """One reconcile: the metric's proposal (None when not computed) and the new scale."""

    proposal: int | None
    desired: int


class HpaController:
    """The per-HPA state of the controller (recommendations, scale events) and its reconcile."""

    def __init__(self, spec: HpaSpec) -> None:
        """Start with no history, as the controller does for a new HPA."""
        self.spec = spec
        self._recommendations: list[tuple[float, int]] | None = None
        self._up: list[_Event] = []
        self._down: list[_Event] = []

    def reconcile(
        self,
        now: float,
        current: int,
        status_replicas: int,
        ready_replicas: int,
        metric_records: int,
    ) -> HpaDecision:
        """`reconcileAutoscaler` for one sync.

        Args:
            now: the sync time, in seconds.
            current: `scale.spec.replicas`.
            status_replicas: `scale.status.replicas` (pods that exist).
            ready_replicas: pods Running and Ready (used by a `Value` target only).
            metric_records: the External metric: total consumer lag, in records.

        Returns:
            The proposal and the replica count the controller writes (or keeps).
        """
        spec = self.spec
        if self._recommendations is None:  # recordInitialRecommendation
            self._recommendations = [(now, current)]
        proposal: int | None = None
        if current == 0 and spec.min_replicas != 0:
            return HpaDecision(None, current)  # "scaling is disabled": KEDA's zero
        if current > spec.max_replicas:
            desired = spec.max_replicas
        elif current < spec.min_replicas:
            desired = spec.min_replicas
        else:
            proposal = self._proposal(current, status_replicas, ready_replicas, metric_records)
            desired = max(0, proposal)
            if spec.behavior is None:
                desired = self._normalize(now, current, desired)
            else:
                desired = self._normalize_with_behaviors(now, current, desired, spec.behavior)
        if desired != current:
            self._store_scale_event(now, current, desired)
        return HpaDecision(proposal, desired)

    def _proposal(self, current: int, status: int, ready: int, metric_records: int) -> int:
        usage, target = metric_records * 1000, milli(self.spec.target)
        if self.spec.target_type == "AverageValue":
            return external_average_value_replicas(status, usage, target, self.spec.tolerance)
        return external_value_replicas(current, ready, usage, target, self.spec.tolerance)

    def _normalize(self, now: float, current: int, desired: int) -> int:
        """`normalizeDesiredReplicas` with `stabilizeRecommendation` (no `behavior`)."""
        assert self._recommendations is not None
        cutoff = now - self.spec.downscale_stabilization_s
        kept = [(t, r) for t, r in self._recommendations if not t < cutoff]
        stabilized = max([desired, *(r for _, r in kept)])
        self._recommendations = [*kept, (now, desired)]
        return convert_with_rules(
            current, stabilized, self.spec.min_replicas, self.spec.max_replicas
        )

    def _normalize_with_behaviors(
        self, now: float, current: int, desired: int, behavior: Behavior
    ) -> int:
        """`normalizeDesiredReplicasWithBehaviors`: stabilize, then limit the rate."""
        stabilized = self._stabilize(now, current, desired, behavior)
        return self._limit_rate(now, current, stabilized, behavior)

    def _stabilize(self, now: float, current: int, desired: int, behavior: Behavior) -> int:
        """`stabilizeRecommendationWithBehaviors`.

        Scale-up takes the lowest recommendation within its window, scale-down the highest
        within its window; the result is the current count moved into [up, down].
        """
        assert self._recommendations is not None
        up_cutoff = now - behavior.scale_up.stabilization_window_s
        down_cutoff = now - behavior.scale_down.stabilization_window_s
        up_rec = down_rec = desired
        for t, rec in self._recommendations:
            if t > up_cutoff:
                up_rec = min(rec, up_rec)
            if t > down_cutoff:
                down_rec = max(rec, down_rec)
        recommendation = current
        recommendation = max(recommendation, up_rec)
        recommendation = min(recommendation, down_rec)
        # A sample older than both windows never counts again: dropping it is the same as
        # the controller overwriting it with the next one.
        self._recommendations = [
            (t, r) for t, r in self._recommendations if not (t < up_cutoff and t < down_cutoff)
        ]
        self._recommendations.append((now, desired))
        return recommendation

    def _limit_rate(self, now: float, current: int, desired: int, behavior: Behavior) -> int:
        """`convertDesiredReplicasWithBehaviorRate`: policies per period, then min/max."""
        if desired > current:
            limit = scale_up_limit(current, self._up, self._down, behavior.scale_up, now)
            limit = max(limit, current)
            return min(desired, self.spec.max_replicas, limit)
        if desired < current:
            limit = scale_down_limit(current, self._up, self._down, behavior.scale_down, now)
            limit = min(limit, current)
            return max(desired, self.spec.min_replicas, limit)
        return desired

    def _store_scale_event(self, now: float, before: int, after: int) -> None:
        """`storeScaleEvent`: events are kept only for an HPA with `behavior`."""
        behavior = self.spec.behavior
        if behavior is None:
            return
        rules, events = (
            (behavior.scale_up, self._up) if after > before else (behavior.scale_down, self._down)
        )
        longest = max((p.period_s for p in rules.policies), default=0)
        # markScaleEventsOutdated + reuse of the last outdated slot: an outdated event still
        # counts (for the other direction's longer periods) until it is overwritten.
        outdated = [i for i, e in enumerate(events) if e.at < now - longest]
        event = _Event(now, abs(after - before))
        if outdated:
            events[outdated[-1]] = event
        else:
            events.append(event)
