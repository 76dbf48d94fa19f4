"""Each assigned partition's state, in one place: named states and the moves between them.

    assigned ──► claiming ──► active ◄──► (paused by back-pressure: all active ones)
                   ▲  │          │
                   │  │          ├──► claiming     a reply lost (stale) or state gone (lost)
                   │  │          ├──► fenced ───► claiming, after FENCED_RETRY_S
                   │  │          └──► schema       waiting for the registry ──► active
                   │  └──► held                    state lost, RILL_STATE_LOSS=fail
    revoked: forgotten from any state

Only an active partition is fetched and processed; every other one is paused, and
`/readyz` names the held and fenced ones. The worker moves partitions; this module only
keeps the books, so every situation has a name and an exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from service.records import TP

# A partition fenced while still assigned waits this long before claiming again: a
# rebalance that moved it (this worker a zombie) revokes it meanwhile; else the claim that
# fenced it was a stale worker's or a failover's, and this worker, the group's owner,
# takes it back.
FENCED_RETRY_S = 5.0


class State(Enum):
    """Where an assigned partition stands."""

    CLAIMING = "claiming"  # its window state is to be claimed (and the outbox taken)
    ACTIVE = "active"  # fetched and processed
    SCHEMA = "schema"  # rewound, waiting for a writer schema the registry owes
    FENCED = "fenced"  # another claim took its state: claimed again after a while
    HELD = "held"  # Redis lost its state (RILL_STATE_LOSS=fail): held until restart


@dataclass(slots=True)
class Partition:
    """One assigned partition: its state, since when, and its assignment generation."""

    state: State
    generation: int
    since: float


class Partitions:
    """The books of every partition assigned to this worker.

    Args:
        clock: monotonic seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._parts: dict[TP, Partition] = {}
        # Bumped on every assignment: a batch delivers only for partitions still owned
        # as they were when it was polled.
        self._generations: dict[TP, int] = {}

    def __len__(self) -> int:
        return len(self._parts)

    def __contains__(self, tp: object) -> bool:
        return tp in self._parts

    def assigned(self, tps: Iterable[TP], claim: bool) -> None:
        """New partitions: to claim first (windowed), or active at once (stateless)."""
        for tp in tps:
            generation = self._generations.get(tp, 0) + 1
            self._generations[tp] = generation
            state = State.CLAIMING if claim else State.ACTIVE
            self._parts[tp] = Partition(state, generation, self._clock())

    def revoked(self, tps: Iterable[TP]) -> None:
        """Partitions taken away, whatever their state."""
        for tp in tps:
            self._parts.pop(tp, None)

    def move(self, tps: Iterable[TP], state: State) -> list[TP]:
        """Move the assigned ones of `tps` to `state`; returns them (sorted)."""
        moved = sorted(tp for tp in set(tps) if tp in self._parts)
        now = self._clock()
        for tp in moved:
            part = self._parts[tp]
            part.state, part.since = state, now
        return moved

    def generation(self, tp: TP) -> int:
        """The assignment generation of `tp` (0 when never assigned)."""
        return self._generations.get(tp, 0)

    def all(self) -> list[TP]:
        """Every assigned partition."""
        return sorted(self._parts)

    def in_state(self, *states: State) -> list[TP]:
        """The partitions in any of `states`."""
        return sorted(tp for tp, p in self._parts.items() if p.state in states)

    def active(self) -> list[TP]:
        """The partitions fetched and processed (back-pressure pauses and resumes these)."""
        return self.in_state(State.ACTIVE)

    def waiting(self) -> set[TP]:
        """Partitions whose records go back to Kafka if fetched: not claimed, or held."""
        return set(self.in_state(State.CLAIMING, State.FENCED, State.HELD))

    def to_claim(self) -> list[TP]:
        """Partitions to claim now: new or claimed again, and fenced ones whose wait ended."""
        due = self._clock() - FENCED_RETRY_S
        return sorted(
            tp
            for tp, p in self._parts.items()
            if p.state is State.CLAIMING or (p.state is State.FENCED and p.since <= due)
        )

    def ready(self) -> tuple[bool, str]:
        """Readiness as far as the partitions go, naming what holds it back."""
        if not self._parts:
            return False, "no partitions assigned"
        held = self.in_state(State.HELD)
        if held:
            return False, f"window state lost in Redis, partitions held: {_names(held)}"
        fenced = self.in_state(State.FENCED)
        if fenced:
            return False, (
                f"partitions fenced by another claim of their state, to be claimed again: "
                f"{_names(fenced)}"
            )
        claiming = self.in_state(State.CLAIMING)
        if claiming:
            return False, f"{len(claiming)} partitions not reconciled: {_names(claiming)}"
        return True, f"{len(self._parts)} partitions assigned"


def _names(tps: Iterable[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in tps)
