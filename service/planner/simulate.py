"""The time loop: a traffic profile, a consumer group, and an autoscaler acting on it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from service.planner.hpa import HpaController, HpaSpec
from service.planner.keda import (
    KafkaTrigger,
    PartitionOffsets,
    ScaledObjectSpec,
    executor_decision,
    total_lag_from_offsets,
)
from service.planner.profile import Profile
from service.planner.system import ConsumerGroup, GroupParams

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Observation:
    """What a controller can see at one instant."""

    spec_replicas: int
    ready_replicas: int
    partition_lags: tuple[int, ...]
    metric_records: int  # the scraped total lag (possibly a scrape interval old)
    offsets: tuple[PartitionOffsets, ...] = ()  # end and committed offset per partition

    def partition_offsets(self) -> tuple[PartitionOffsets, ...]:
        """The offsets, or (without them) ones that give `partition_lags`."""
        return self.offsets or tuple(PartitionOffsets(lag, 0) for lag in self.partition_lags)


class Autoscaler(Protocol):
    """Something that may set the replica count at a given instant."""

    name: str

    def step(self, now: float, seen: Observation) -> int | None:
        """The new replica count, or None to leave it."""


class _Every:
    """Fires at 0, period, 2 x period, ..."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._next = 0.0

    def due(self, now: float) -> bool:
        if now + _EPS < self._next:
            return False
        while self._next <= now + _EPS:
            self._next += self.period_s
        return True


class HpaAutoscaler:
    """The HPA controller syncing every `sync_period_s` on the scraped lag metric."""

    def __init__(self, spec: HpaSpec, sync_period_s: float = 15.0, name: str = "hpa") -> None:
        """Wrap a fresh controller state for `spec`."""
        self.name = name
        self.controller = HpaController(spec)
        self._sync = _Every(sync_period_s)

    def step(self, now: float, seen: Observation) -> int | None:
        """One HPA sync when due."""
        if not self._sync.due(now):
            return None
        decision = self.controller.reconcile(
            now, seen.spec_replicas, seen.spec_replicas, seen.ready_replicas, seen.metric_records
        )
        return decision.desired


class KedaAutoscaler:
    """KEDA: the Kafka scaler's activity every polling interval, its HPA every sync period."""

    def __init__(
        self,
        scaled_object: ScaledObjectSpec,
        trigger: KafkaTrigger,
        hpa: HpaSpec,
        sync_period_s: float = 15.0,
        name: str = "keda",
    ) -> None:
        """KEDA creates the HPA with min max(minReplicaCount, 1) and AverageValue lagThreshold."""
        self.name = name
        self.scaled_object = scaled_object
        self.trigger = trigger
        hpa_spec = HpaSpec(
            min_replicas=max(scaled_object.min_replica_count, 1),
            max_replicas=scaled_object.max_replica_count,
            target=trigger.lag_threshold,
            target_type="AverageValue",
            tolerance=hpa.tolerance,
            behavior=hpa.behavior,
            downscale_stabilization_s=hpa.downscale_stabilization_s,
        )
        self.controller = HpaController(hpa_spec)
        self._poll = _Every(scaled_object.polling_interval_s)
        self._sync = _Every(sync_period_s)
        self._last_active: float | None = None
        # The scaler's previousOffsets (excludePersistentLag), shared by both reads.
        self._previous: dict[int, int] = {}

    def step(self, now: float, seen: Observation) -> int | None:
        """The executor's poll, then the HPA's sync, when due; the later decision wins."""
        replicas = seen.spec_replicas
        changed: int | None = None
        if self._poll.due(now):
            _, with_persistent = total_lag_from_offsets(
                seen.partition_offsets(), self.trigger, self._previous
            )
            active = with_persistent > self.trigger.activation_lag_threshold
            new, self._last_active = executor_decision(
                now, replicas, active, self.scaled_object, self._last_active
            )
            if new is not None and new != replicas:
                changed = replicas = new
        if self._sync.due(now):
            # KEDA's metrics server reads Kafka when the HPA asks: no scrape delay.
            metric, _ = total_lag_from_offsets(
                seen.partition_offsets(), self.trigger, self._previous
            )
            status = seen.spec_replicas if changed is None else replicas
            decision = self.controller.reconcile(now, replicas, status, seen.ready_replicas, metric)
            if decision.desired != replicas:
                changed = decision.desired
        return changed


@dataclass(frozen=True, slots=True)
class Sample:
    """The state at one instant, after the controllers acted."""

    t_s: float
    input_rps: float
    desired: int
    ready: int
    capacity_rps: float
    lag: float  # the backlog: records produced and not yet consumed
    lag_s: float


def simulate(
    profile: Profile,
    params: GroupParams,
    scaler: Autoscaler,
    *,
    initial_replicas: int,
    initial_lag: float = 0.0,
    tick_s: float = 1.0,
    metric_delay_s: float = 0.0,
    inflight_s: float = 0.0,
    fresh_group: bool = False,
) -> list[Sample]:
    """Run the profile through the group under `scaler`, one tick at a time.

    Args:
        profile: input records/s over time.
        params: partitions, per-replica throughput, start delay, rebalance pause.
        scaler: the autoscaler.
        initial_replicas: pods Ready at t = 0.
        initial_lag: records waiting at t = 0.
        tick_s: the time step.
        metric_delay_s: how old the lag metric is when the controller reads it.
        inflight_s: seconds of input consumed but not yet committed; committed-offset lag,
            which is what the controllers see, is higher than the backlog by rate x this.
        fresh_group: the consumer group has committed no offset at t = 0 (KEDA's
            no-committed-offset case until a consumer works on each partition).

    Returns:
        One sample per tick, from 0 to the profile's duration.
    """
    group = ConsumerGroup(params, initial_replicas, initial_lag, fresh_group)
    history: list[int] = []
    delay_ticks = max(0, round(metric_delay_s / tick_s))
    samples: list[Sample] = []
    for i in range(math.floor(profile.duration_s / tick_s + _EPS) + 1):
        now = i * tick_s
        rate = profile.rate_at(now)
        uncommitted = rate * inflight_s / params.partitions
        committed_lags = tuple(math.floor(lag + uncommitted + 0.5) for lag in group.lags)
        history.append(sum(committed_lags))
        ends = group.end_offsets()
        offsets = tuple(
            PartitionOffsets(end, max(0, end - lag) if committed else None)
            for end, lag, committed in zip(ends, committed_lags, group.has_commit, strict=True)
        )
        seen = Observation(
            spec_replicas=group.spec_replicas,
            ready_replicas=group.ready_replicas(now),
            partition_lags=committed_lags,
            metric_records=history[max(0, i - delay_ticks)],
            offsets=offsets,
        )
        new = scaler.step(now, seen)
        if new is not None:
            group.scale_to(new, now)
        samples.append(
            Sample(
                t_s=now,
                input_rps=rate,
                desired=group.spec_replicas,
                ready=group.ready_replicas(now),
                capacity_rps=group.capacity(now),
                lag=group.total_lag(),
                lag_s=group.lag_seconds(now),
            )
        )
        group.advance(now, tick_s, rate)
    return samples
