"""The HPA controller arithmetic of `rill plan`, pinned against hand-computed cases.

The cases follow the Kubernetes documentation (HPA algorithm details, scaling policies)
and the controller's code paths named in service/planner/hpa.py.
"""

from __future__ import annotations

from service.planner.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Behavior,
    HpaController,
    HpaSpec,
    ScalingPolicy,
    ScalingRules,
    _Event,
    convert_with_rules,
    external_average_value_replicas,
    external_value_replicas,
    scale_down_limit,
    scale_up_limit,
)


def test_average_value_desired_is_ceil_of_metric_over_target() -> None:
    """AverageValue: desired = ceil(total metric / per-replica target), current count aside."""
    assert external_average_value_replicas(2, 4_000_000, 1_000_000, 0.1) == 4
    assert external_average_value_replicas(2, 4_500_000, 1_000_000, 0.1) == 5


def test_tolerance_keeps_the_current_count_within_ten_percent() -> None:
    """Within +-10 % of target x current the current count stays (float64 as in Go)."""
    assert external_average_value_replicas(4, 4_300_000, 1_000_000, 0.1) == 4
    # |1 - 1.1| is 0.10000000000000009 in float64: exactly +10 % already scales.
    assert external_average_value_replicas(4, 4_400_000, 1_000_000, 0.1) == 5
    assert external_average_value_replicas(4, 4_399_000, 1_000_000, 0.1) == 4
    assert external_average_value_replicas(4, 3_600_000, 1_000_000, 0.1) == 4
    # Outside tolerance yet ceil(3.599) is still 4; 3.0 goes to 3.
    assert external_average_value_replicas(4, 3_599_000, 1_000_000, 0.1) == 4
    assert external_average_value_replicas(4, 3_000_000, 1_000_000, 0.1) == 3


def test_zero_lag_proposes_zero_replicas() -> None:
    """No lag is a ratio of 0: the proposal is 0 (min replicas clamps it later)."""
    assert external_average_value_replicas(3, 0, 1_000_000, 0.1) == 0


def test_value_target_scales_the_ready_count_by_the_ratio() -> None:
    """Value: desired = ceil(ready x metric / target); from zero, ceil(metric / target)."""
    assert external_value_replicas(2, 2, 3_000_000, 1_000_000, 0.1) == 6
    assert external_value_replicas(2, 2, 1_050_000, 1_000_000, 0.1) == 2
    assert external_value_replicas(0, 0, 2_500_000, 1_000_000, 0.1) == 3


def test_default_scale_up_policies_allow_plus_four_or_double() -> None:
    """Defaults Pods 4/15 s and Percent 100/15 s with Max: 1 -> 5, 10 -> 20."""
    assert scale_up_limit(1, [], [], DEFAULT_SCALE_UP, 0.0) == 5
    assert scale_up_limit(10, [], [], DEFAULT_SCALE_UP, 0.0) == 20


def test_percent_scale_up_rounds_up() -> None:
    """Percent 10 of 3 replicas: ceil(3 x 1.1) = 4, so a small percent can still add one."""
    rules = ScalingRules(0, (ScalingPolicy("Percent", 10, 60),))
    assert scale_up_limit(3, [], [], rules, 0.0) == 4


def test_scale_down_percent_of_docs_example() -> None:
    """Docs: Percent 10/60 s + Pods 4/60 s, Max: 80 -> 72, then 72 -> 64 (7.2 rounds up to 8)."""
    rules = ScalingRules(300, (ScalingPolicy("Percent", 10, 60), ScalingPolicy("Pods", 4, 60)))
    assert scale_down_limit(80, [], [], rules, 0.0) == 72
    assert scale_down_limit(72, [], [_Event(0.0, 8)], rules, 61.0) == 64


def test_scale_down_min_select_takes_the_smaller_change() -> None:
    """selectPolicy Min on scale-down keeps the higher count: 80 -> 76 by Pods 4."""
    rules = ScalingRules(
        300, (ScalingPolicy("Percent", 10, 60), ScalingPolicy("Pods", 4, 60)), "Min"
    )
    assert scale_down_limit(80, [], [], rules, 0.0) == 76


def test_disabled_select_policy_freezes_the_direction() -> None:
    """selectPolicy Disabled: the limit is the current count."""
    rules = ScalingRules(0, (ScalingPolicy("Pods", 4, 15),), "Disabled")
    assert scale_up_limit(3, [], [], rules, 0.0) == 3
    assert scale_down_limit(3, [], [], rules, 0.0) == 3


def test_scale_up_events_within_the_period_use_up_the_budget() -> None:
    """Pods 2/60 s: after 1 -> 3 at t=0 no more until the event is older than 60 s."""
    rules = ScalingRules(0, (ScalingPolicy("Pods", 2, 60),))
    events = [_Event(0.0, 2)]
    assert scale_up_limit(3, events, [], rules, 15.0) == 3
    assert scale_up_limit(3, events, [], rules, 60.0) == 5  # strictly after the cutoff only


def test_policy_limits_the_scale_up_rate_through_reconcile() -> None:
    """A lag asking for 12 replicas gets 1 -> 3 -> 3 -> 5 under Pods 2/30 s."""
    up = ScalingRules(0, (ScalingPolicy("Pods", 2, 30),))
    hpa = HpaController(HpaSpec(1, 20, 1000, behavior=Behavior(up, DEFAULT_SCALE_DOWN)))
    got = []
    current = 1
    for t in (0.0, 15.0, 30.0, 45.0):
        current = hpa.reconcile(t, current, current, current, 12_000).desired
        got.append(current)
    assert got == [3, 3, 5, 5]


def test_scale_down_stabilization_holds_the_highest_recent_recommendation() -> None:
    """After 1 -> 4, zero lag keeps 4 for the 300 s window, then falls to minReplicas."""
    hpa = HpaController(HpaSpec(1, 10, 1000))
    assert hpa.reconcile(0.0, 1, 1, 1, 4000).desired == 4
    for t in range(15, 300, 15):
        assert hpa.reconcile(float(t), 4, 4, 4, 0).desired == 4, t
    assert hpa.reconcile(300.0, 4, 4, 4, 0).desired == 1


def test_scale_up_window_takes_the_lowest_recent_recommendation() -> None:
    """A 60 s scale-up window: a burst must last the window before replicas follow."""
    behavior = Behavior(ScalingRules(60, DEFAULT_SCALE_UP.policies), DEFAULT_SCALE_DOWN)
    hpa = HpaController(HpaSpec(1, 10, 1000, behavior=behavior))
    assert hpa.reconcile(0.0, 1, 1, 1, 3000).desired == 1  # the initial 1 is in the window
    assert hpa.reconcile(30.0, 1, 1, 1, 3000).desired == 1
    # At 60 s the t=0 samples (the initial 1) are no longer strictly inside the window.
    assert hpa.reconcile(60.0, 1, 1, 1, 3000).desired == 3


def test_min_and_max_clamp_before_any_metric() -> None:
    """Above maxReplicas or below minReplicas the count is clamped with no proposal."""
    hpa = HpaController(HpaSpec(2, 4, 1000))
    too_many = hpa.reconcile(0.0, 6, 6, 6, 0)
    assert (too_many.proposal, too_many.desired) == (None, 4)
    assert hpa.reconcile(15.0, 1, 1, 1, 99_000).desired == 2


def test_max_replicas_caps_the_proposal() -> None:
    """A proposal of 40 with maxReplicas 4 writes 4."""
    hpa = HpaController(HpaSpec(1, 4, 1000))
    decision = hpa.reconcile(0.0, 4, 4, 4, 40_000)
    assert (decision.proposal, decision.desired) == (40, 4)


def test_zero_replicas_disable_the_hpa() -> None:
    """At 0 replicas with minReplicas 1 the HPA holds (KEDA owns 0 <-> 1)."""
    hpa = HpaController(HpaSpec(1, 4, 1000))
    assert hpa.reconcile(0.0, 0, 0, 0, 50_000).desired == 0


def test_no_behavior_doubles_or_adds_four_at_most() -> None:
    """Without behavior: scale-up limited to max(2 x current, 4) per sync."""
    assert convert_with_rules(1, 10, 1, 20) == 4
    assert convert_with_rules(5, 30, 1, 20) == 10
    assert convert_with_rules(5, 0, 2, 20) == 2
    hpa = HpaController(HpaSpec(1, 20, 1000, behavior=None))
    assert hpa.reconcile(0.0, 1, 1, 1, 10_000).desired == 4
