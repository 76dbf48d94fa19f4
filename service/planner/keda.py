"""KEDA's Kafka scaler and scale executor, feeding the HPA it creates.

Modelled on kedacore/keda (v2.16):

- `pkg/scalers/kafka_scaler.go`: `getLagForPartition` (lag = end offset - committed
  offset; with no committed offset, 1 for `offsetResetPolicy: latest` and the partition's
  end offset for `earliest`, 0 for either with `scaleToZeroOnInvalidOffset`; with
  `excludePersistentLag`, 0 for scaling while the committed offset has not moved since the
  scaler last read it, still counted for activity), `getTotalLag` (the sum, capped at
  `partitions x lagThreshold` unless `allowIdleConsumers`, or at the partitions that have
  lag with `limitToPartitionsWithLag`; the cap compares `totalLag / lagThreshold` in
  integer division) and
  `GetMetricsAndActivity` (active when the uncapped total exceeds `activationLagThreshold`).
  `GetMetricSpecForScaling` gives the HPA an External metric with an `AverageValue`
  target of `lagThreshold` (KEDA's default metric type).
- `pkg/scaling/executor/scale_scaledobjects.go`: `RequestScale` every `pollingInterval`:
  from 0 to `max(minReplicaCount, 1)` when active; to 0 when inactive for `cooldownPeriod`
  (and `minReplicaCount` is 0). Between 1 and `maxReplicaCount` the HPA decides; at 0 the
  HPA holds ("scaling is disabled since the replica count of the target is zero").
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

OffsetResetPolicy: TypeAlias = Literal["earliest", "latest"]


@dataclass(frozen=True, slots=True)
class KafkaTrigger:
    """The Kafka trigger's metadata that shapes scaling."""

    lag_threshold: int
    activation_lag_threshold: int = 0
    allow_idle_consumers: bool = False
    limit_to_partitions_with_lag: bool = False
    offset_reset_policy: OffsetResetPolicy = "latest"
    scale_to_zero_on_invalid_offset: bool = False
    exclude_persistent_lag: bool = False


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition as the scaler reads it: the end offset and the group's commit."""

    end: int
    committed: int | None  # None: the group has committed nothing for it


def partition_lag(
    partition: int,
    offsets: PartitionOffsets,
    trigger: KafkaTrigger,
    previous: MutableMapping[int, int],
) -> tuple[int, int]:
    """`getLagForPartition`: (lag for scaling, lag with persistent lag) of one partition.

    Args:
        partition: the partition's number (the key of `previous`).
        offsets: its end offset and committed offset.
        trigger: the trigger's metadata.
        previous: the committed offsets the scaler saw last time (`previousOffsets`), kept
            by the caller across reads and updated here, as the scaler does.

    Returns:
        The lag counted for the metric and the lag counted for activity.
    """
    committed = offsets.committed
    if committed is None:
        if trigger.scale_to_zero_on_invalid_offset:
            return 0, 0
        if trigger.offset_reset_policy == "latest":
            return 1, 1
        return offsets.end, offsets.end
    lag = offsets.end - committed
    if trigger.exclude_persistent_lag:
        seen = previous.get(partition)
        if seen is not None and seen == committed:
            return 0, lag  # not consumed since the last read: maybe a poison record
        previous[partition] = committed
    return lag, lag


def total_lag_from_offsets(
    partitions: Sequence[PartitionOffsets],
    trigger: KafkaTrigger,
    previous: MutableMapping[int, int],
) -> tuple[int, int]:
    """`getTotalLag` from offsets: no-commit and persistent-lag cases included."""
    pairs = [partition_lag(i, o, trigger, previous) for i, o in enumerate(partitions)]
    return _capped([lag for lag, _ in pairs], sum(p for _, p in pairs), trigger)


def kafka_total_lag(partition_lags: Sequence[int], trigger: KafkaTrigger) -> tuple[int, int]:
    """`getTotalLag`: the metric KEDA serves and the uncapped total used for activity.

    Args:
        partition_lags: end offset - committed offset, per partition.
        trigger: the trigger's metadata.

    Returns:
        (totalLag as served to the HPA, totalLagWithPersistent).
    """
    return _capped(partition_lags, sum(partition_lags), trigger)


def _capped(lags: Sequence[int], raw: int, trigger: KafkaTrigger) -> tuple[int, int]:
    """The cap of `getTotalLag`: partitions (or partitions with lag) x lagThreshold."""
    partition_lags, total = lags, sum(lags)
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
