"""KEDA's Kafka scaler and scale executor as `rill plan` models them."""

from __future__ import annotations

from service.planner.hpa import HpaSpec
from service.planner.keda import (
    KafkaTrigger,
    ScaledObjectSpec,
    executor_decision,
    is_active,
    kafka_total_lag,
)
from service.planner.profile import step
from service.planner.simulate import KedaAutoscaler, simulate
from service.planner.system import GroupParams


def test_total_lag_is_capped_at_partitions_times_threshold() -> None:
    """12000 lag over 4 partitions, threshold 1000: served as 4000, activity sees 12000."""
    trigger = KafkaTrigger(lag_threshold=1000)
    assert kafka_total_lag([3000, 3000, 3000, 3000], trigger) == (4000, 12000)


def test_allow_idle_consumers_lifts_the_cap() -> None:
    """allowIdleConsumers: the whole lag is served."""
    trigger = KafkaTrigger(lag_threshold=1000, allow_idle_consumers=True)
    assert kafka_total_lag([3000, 3000, 3000, 3000], trigger) == (12000, 12000)


def test_cap_uses_integer_division() -> None:
    """4999 // 1000 = 4 is not above 4 partitions: served uncapped, the HPA asks for 5."""
    trigger = KafkaTrigger(lag_threshold=1000)
    assert kafka_total_lag([1250, 1250, 1250, 1249], trigger)[0] == 4999


def test_limit_to_partitions_with_lag() -> None:
    """limitToPartitionsWithLag: one lagging partition caps the metric at one threshold."""
    trigger = KafkaTrigger(lag_threshold=1000, limit_to_partitions_with_lag=True)
    assert kafka_total_lag([5000, 0, 0, 0], trigger)[0] == 1000


def test_activation_is_strictly_above_the_threshold() -> None:
    """activationLagThreshold 10: a lag of 10 is inactive, 11 is active."""
    trigger = KafkaTrigger(lag_threshold=1000, activation_lag_threshold=10)
    assert not is_active([5, 5], trigger)
    assert is_active([5, 6], trigger)


def test_executor_scales_from_zero_to_one_when_active() -> None:
    """Active at 0 replicas: scale to max(minReplicaCount, 1) and mark active now."""
    spec = ScaledObjectSpec(min_replica_count=0, max_replica_count=4)
    assert executor_decision(30.0, 0, True, spec, None) == (1, 30.0)


def test_executor_scales_to_zero_after_cooldown_only() -> None:
    """Inactive: down to 0 only once lastActiveTime + cooldown is strictly in the past."""
    spec = ScaledObjectSpec(min_replica_count=0, max_replica_count=4, cooldown_period_s=300)
    assert executor_decision(300.0, 2, False, spec, 0.0) == (None, 0.0)
    assert executor_decision(301.0, 2, False, spec, 0.0) == (0, 0.0)


def test_executor_leaves_min_replicas_above_zero_to_the_hpa() -> None:
    """minReplicaCount 1: never to zero."""
    spec = ScaledObjectSpec(min_replica_count=1, max_replica_count=4)
    assert executor_decision(900.0, 1, False, spec, None) == (None, None)


def test_keda_activates_at_the_first_poll_with_lag_and_returns_to_zero() -> None:
    """0 -> 1 at the first poll after lag passes activation; 1 -> 0 after the cooldown."""
    profile = step(0.0, 100.0, 45.0, 75.0, 600.0)
    keda = KedaAutoscaler(
        ScaledObjectSpec(0, 4, polling_interval_s=30, cooldown_period_s=120),
        KafkaTrigger(lag_threshold=1000, activation_lag_threshold=10),
        HpaSpec(1, 4, 1000),
    )
    samples = simulate(profile, GroupParams(4, 1000.0, 10.0, 0.0), keda, initial_replicas=0)
    desired = {int(s.t_s): s.desired for s in samples}
    assert desired[59] == 0
    # The poll at 60 s sees 15 s x 100 records/s: 0 -> 1; the HPA syncing at the same
    # instant then asks for ceil(1500 / 1000) = 2.
    assert desired[60] == 2
    # Active until the lag is drained (ready at 70 s); then 120 s of cooldown, next poll.
    last_active = max(int(s.t_s) for s in samples if s.t_s % 30 == 0 and s.lag > 10)
    back_to_zero = min(t for t, d in desired.items() if t > 60 and d == 0)
    assert back_to_zero == (last_active // 30 + 1) * 30 + 120
