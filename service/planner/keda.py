"""KEDA's Kafka scaler and scale executor, feeding the HPA it creates.

Modelled on kedacore/keda (v2.16):

- `pkg/scalers/kafka_scaler.go`: `getLagForPartition` (lag = end offset - committed
  offset), `getTotalLag` (the sum, capped at `partitions x lagThreshold` unless
  `allowIdleConsumers`, or at the partitions that have lag with `limitToPartitionsWithLag`;
  the cap compares `totalLag / lagThreshold` in integer division) and
  `GetMetricsAndActivity` (active when the uncapped total exceeds `activationLagThreshold`).
  `GetMetricSpecForScaling` gives the HPA an External metric with an `AverageValue`
  target of `lagThreshold` (KEDA's default metric type).
- `pkg/scaling/executor/scale_scaledobjects.go`: `RequestScale` every `pollingInterval`:
  from 0 to `max(minReplicaCount, 1)` when active; to 0 when inactive for `cooldownPeriod`
  (and `minReplicaCount` is 0). Between 1 and `maxReplicaCount` the HPA decides; at 0 the
  HPA holds ("scaling is disabled since the replica count of the target is zero").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KafkaTrigger:
    """The Kafka trigger's metadata that shapes scaling."""

    lag_threshold: int
    activation_lag_threshold: int = 0
    allow_idle_consumers: bool = False
    limit_to_partitions_with_lag: bool = False


def kafka_total_lag(partition_lags: Sequence[int], trigger: KafkaTrigger) -> tuple[int, int]:
    """`getTotalLag`: the metric KEDA serves and the uncapped total used for activity.

    Args:
        partition_lags: end offset - committed offset, per partition.
        trigger: the trigger's metadata.

    Returns:
        (totalLag as served to the HPA, totalLagWithPersistent).
    """
    total = sum(partition_lags)
    raw = total
    if not trigger.allow_idle_consumers or trigger.limit_to_partitions_with_lag:
        upper = len(partition_lags)
        if trigger.limit_to_partitions_with_lag:
            upper = sum(1 for lag in partition_lags if lag > 0)
        # Integer division, as in Go: 4999 // 1000 == 4 is not above 4 partitions, so the
        # HPA may still be asked for ceil(4.999) = 5 replicas.
        if total // trigger.lag_threshold > upper:
            total = upper * trigger.lag_threshold
    return total, raw


def is_active(partition_lags: Sequence[int], trigger: KafkaTrigger) -> bool:
    """`GetMetricsAndActivity`'s activity: uncapped total lag above the activation threshold."""
    return kafka_total_lag(partition_lags, trigger)[1] > trigger.activation_lag_threshold


@dataclass(frozen=True, slots=True)
class ScaledObjectSpec:
    """The ScaledObject fields the executor reads."""

    min_replica_count: int
    max_replica_count: int
    polling_interval_s: float = 30.0
    cooldown_period_s: float = 300.0


def executor_decision(
    now: float,
    current: int,
    active: bool,
    spec: ScaledObjectSpec,
    last_active: float | None,
) -> tuple[int | None, float | None]:
    """`RequestScale` for one polling cycle.

    Args:
        now: the cycle's time, in seconds.
        current: `scale.spec.replicas`.
        active: any trigger active.
        spec: the ScaledObject.
        last_active: `status.lastActiveTime`, or None.

    Returns:
        (new replica count or None to leave it, the new lastActiveTime).
    """
    if active:
        if current == 0:  # scaleFromZeroOrIdle
            return max(spec.min_replica_count, 1), now
        return None, now  # updateLastActiveTime
    if current > 0 and spec.min_replica_count == 0:  # scaleToZeroOrIdle
        if last_active is None or last_active + spec.cooldown_period_s < now:
            return 0, last_active
        return None, last_active
    if current < spec.min_replica_count:
        return spec.min_replica_count, last_active
    return None, last_active
