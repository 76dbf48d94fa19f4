"""The consumer group being scaled: pods, partitions, lag, in a fluid model.

- Input is spread evenly over the partitions (keys hash uniformly).
- A pod becomes Ready and joins the group `start_delay_s` after it is created. Scale-down
  removes pods not yet Ready first (newest first), as a ReplicaSet does, then Ready ones.
- Each change of the group's Ready membership (join or leave) pauses all consumption for
  `rebalance_pause_s`: partitions are revoked and reassigned.
- A Ready pod is `processes` group members (RILL_PROCESSES), each a consumer of its own.
  Partitions are dealt round-robin to min(ready x processes, partitions) consumers; a
  consumer beyond the partition count gets none and adds nothing. Each consumer processes
  at most `per_replica_rps` records/s across its partitions, in proportion to their backlog plus
  inflow, so a consumer holding more partitions than another falls behind first (12
  partitions on 5 consumers drain like 4).
- Lag seconds is exact for this model: the age of the oldest record not yet consumed in
  the worst partition, found from the cumulative arrivals.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GroupParams:
    """The measured and assumed figures of the workers."""

    partitions: int
    # Records/s of one group member: one worker process (a pod with `processes` > 1 runs
    # that many).
    per_replica_rps: float
    start_delay_s: float = 20.0
    rebalance_pause_s: float = 3.0
    processes: int = 1

    def members(self, replicas: int) -> int:
        """Group members with a partition when `replicas` pods are Ready."""
        return min(replicas * self.processes, self.partitions)


class ConsumerGroup:
    """Pods of the Deployment and the lag of each partition."""

    def __init__(
        self, params: GroupParams, replicas: int, lag: float = 0.0, fresh_group: bool = False
    ) -> None:
        """Start with `replicas` pods already Ready and `lag` records spread evenly.

        `fresh_group`: the group has committed no offset yet; a partition gets one once a
        consumer has worked on it.
        """
        self.params = params
        self.lags = [lag / params.partitions] * params.partitions
        self.ends = [lag / params.partitions] * params.partitions
        self.has_commit = [not fresh_group] * params.partitions
        self._ready_at: list[float] = [-math.inf] * replicas
        self._members = replicas
        self._paused_until = -math.inf
        # Cumulative arrivals per partition, at each tick's start, for lag seconds.
        self._times: list[float] = []
        self._arrived: list[float] = []
        self._arrived_now = 0.0

    @property
    def spec_replicas(self) -> int:
        """Pods that exist (`scale.spec.replicas` once the ReplicaSet caught up)."""
        return len(self._ready_at)

    def ready_replicas(self, now: float) -> int:
        """Pods Ready at `now`."""
        return sum(1 for t in self._ready_at if t <= now)

    def total_lag(self) -> float:
        """Records produced and not yet consumed, over all partitions."""
        return sum(self.lags)

    def end_offsets(self) -> list[int]:
        """Each partition's end offset (records ever produced to it), whole."""
        return [math.floor(end + 0.5) for end in self.ends]

    def partition_lags(self) -> list[int]:
        """Lag per partition in whole records, as offsets report it."""
        return [math.floor(lag + 0.5) for lag in self.lags]

    def scale_to(self, replicas: int, now: float) -> None:
        """Create or delete pods so that `replicas` exist."""
        if replicas > len(self._ready_at):
            ready = now + self.params.start_delay_s
            self._ready_at.extend([ready] * (replicas - len(self._ready_at)))
        elif replicas < len(self._ready_at):
            # Not-ready and newest pods first: the latest ready_at first.
            self._ready_at.sort()
            del self._ready_at[replicas:]

    def capacity(self, now: float) -> float:
        """Records/s the group can consume at `now`, zero while it rebalances."""
        self._sync_members(now)
        if now < self._paused_until:
            return 0.0
        consumers = self.params.members(self.ready_replicas(now))
        return consumers * self.params.per_replica_rps

    def advance(self, now: float, dt: float, rate: float) -> None:
        """Produce `rate` records/s over [now, now + dt) and consume what the group can."""
        partitions = self.params.partitions
        self._record_arrivals(now)
        ready = self._sync_members(now)
        inflow = rate * dt / partitions
        self._arrived_now += inflow
        self.ends = [end + inflow for end in self.ends]
        working = max(0.0, min(dt, now + dt - self._paused_until))
        consumers = self.params.members(ready)
        if consumers == 0 or working == 0:
            self.lags = [lag + inflow for lag in self.lags]
            return
        budget = self.params.per_replica_rps * working
        for c in range(consumers):
            owned = range(c, partitions, consumers)
            for p in owned:
                self.has_commit[p] = True
            available = sum(self.lags[p] + inflow for p in owned)
            left = 0.0 if available <= budget else 1 - budget / available
            for p in owned:
                self.lags[p] = (self.lags[p] + inflow) * left

    def _sync_members(self, now: float) -> int:
        """Start a rebalance pause when the Ready membership changed; returns it."""
        ready = self.ready_replicas(now)
        if ready != self._members:
            self._members = ready
            self._paused_until = now + self.params.rebalance_pause_s
        return ready

    def _record_arrivals(self, now: float) -> None:
        if not self._times or now > self._times[-1]:
            self._times.append(now)
            self._arrived.append(self._arrived_now)

    def lag_seconds(self, now: float) -> float:
        """Age of the oldest unconsumed record in the worst partition, in seconds."""
        self._record_arrivals(now)
        worst = max(self.lags)
        if worst <= 1e-9:
            return 0.0
        # The oldest unconsumed record arrived when the cumulative count passed this.
        target = self._arrived_now - worst
        i = bisect.bisect_right(self._arrived, target)
        if i == 0:
            return now - self._times[0]  # part of the initial lag: older than the run
        if i == len(self._arrived):
            return 0.0
        a0, a1 = self._arrived[i - 1], self._arrived[i]
        t0, t1 = self._times[i - 1], self._times[i]
        arrived_at = t0 + (t1 - t0) * (target - a0) / (a1 - a0)
        return max(0.0, now - arrived_at)


def drain_rate(replicas: int, params: GroupParams) -> float:
    """Records/s `replicas` pods sustain on evenly fed partitions: the busiest member decides.

    The pods are replicas x processes group members. The busiest holds ceil(partitions /
    members) partitions and gets that share of the input, so the group keeps up while that
    share stays within one member's rate: 3 members on 4 partitions drain like 2.
    """
    used = params.members(replicas)
    if used <= 0:
        return 0.0
    busiest = -(-params.partitions // used)
    return params.per_replica_rps * params.partitions / busiest


def replicas_needed(input_rps: float, params: GroupParams) -> int | None:
    """The fewest replicas that keep up with `input_rps`; None if one group member per
    partition cannot."""
    for replicas in range(1, -(-params.partitions // params.processes) + 1):
        if drain_rate(replicas, params) >= input_rps:
            return replicas
    return None
