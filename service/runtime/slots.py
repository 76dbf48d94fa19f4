"""What a supervisor knows of each child process, and the pure rules over it: when a dead
child is started again (backoff), and what `/healthz` and `/readyz` say for the container.

No process is touched here: `supervisor.py` does that and calls these with the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A child that ran this long before it exited starts again at once: its exit was not
# part of a crash loop, so the backoff begins anew.
STABLE_S = 60.0
# Exits in a row (each within STABLE_S of its start) that make a crash loop: /healthz
# fails, so the kubelet restarts the container and the pod shows CrashLoopBackOff, as a
# single worker process that keeps exiting does.
CRASH_LOOP = 5


@dataclass(frozen=True, slots=True)
class Probe:
    """A child's own answer to /healthz and /readyz, as it last reported it."""

    live: bool
    live_why: str
    ready: bool
    ready_why: str


@dataclass(slots=True)
class Slot:
    """One child process's place in the container: it keeps its index (and transactional
    id) across restarts.

    Attributes:
        index: 0..N-1.
        running: a child process is running in the slot.
        started_at: when the last child was started (monotonic seconds).
        down_since: when the slot's last child exited (monotonic), or started (never ran).
        failures: exits in a row, each within `STABLE_S` of its start.
        starts: children started in the slot (the restarts are all but the first).
        reported_at: when the running child last reported (None: not since its start).
        probe: what it reported.
    """

    index: int
    running: bool = False
    started_at: float = 0.0
    down_since: float = 0.0
    failures: int = 0
    starts: int = 0
    reported_at: float | None = None
    probe: Probe | None = None

    def started(self, now: float) -> None:
        """A child was started in this slot."""
        self.starts += 1
        self.running, self.started_at = True, now
        self.reported_at, self.probe = None, None

    def exited(self, now: float) -> None:
        """The slot's child exited; `failures` counts it unless it ran `STABLE_S`."""
        ran = now - self.started_at
        self.failures = 1 if ran >= STABLE_S else self.failures + 1
        self.running, self.down_since = False, now
        self.reported_at, self.probe = None, None

    def reported(self, now: float, probe: Probe) -> None:
        """The running child reported."""
        self.reported_at, self.probe = now, probe


def restart_delay(failures: int, base_s: float, max_s: float) -> float:
    """How long a slot waits before its child starts again: `base_s` after a first exit,
    doubled for every further exit in a row, at most `max_s`."""
    if failures <= 0:
        return 0.0
    return min(max_s, base_s * float(2 ** min(failures - 1, 30)))


def restart_at(slot: Slot, base_s: float, max_s: float) -> float:
    """When (monotonic) the slot's exited child is started again."""
    return slot.down_since + restart_delay(slot.failures, base_s, max_s)


def _stalled(slot: Slot, now: float, stall_s: float) -> str | None:
    """Why one slot fails liveness, or None."""
    name = f"process {slot.index}"
    looping = not slot.running or now - slot.started_at < STABLE_S
    if slot.failures >= CRASH_LOOP and looping:
        return f"{name}: exited {slot.failures} times in a row, each within {STABLE_S:.0f}s"
    if not slot.running:
        down = now - slot.down_since
        return f"{name}: down for {down:.1f}s, not restarted" if down > stall_s else None
    if slot.reported_at is None:
        quiet = now - slot.started_at
        return f"{name}: no report {quiet:.1f}s after its start" if quiet > stall_s else None
    if now - slot.reported_at > stall_s:
        return f"{name}: no report for {now - slot.reported_at:.1f}s"
    if slot.probe is not None and not slot.probe.live:
        return f"{name}: {slot.probe.live_why}"
    return None


def container_live(slots: Sequence[Slot], now: float, stall_s: float) -> tuple[bool, str]:
    """/healthz of the container: every child's loop turns, a child that died is running
    again (or still within `stall_s` of its exit: the restart may be backing off), and no
    slot is in a crash loop (`CRASH_LOOP` exits in a row).

    Args:
        slots: every slot.
        now: monotonic seconds.
        stall_s: RILL_HEALTH_STALL_S.
    """
    problems = [why for slot in slots if (why := _stalled(slot, now, stall_s))]
    if problems:
        return False, "; ".join(problems)
    return True, f"{len(slots)} processes live"


def container_ready(slots: Sequence[Slot], now: float, stall_s: float) -> tuple[bool, str]:
    """/readyz of the container: ready only when every child is running and said ready
    within `stall_s`."""
    problems = []
    for slot in slots:
        name = f"process {slot.index}"
        if not slot.running:
            problems.append(f"{name}: not running")
        elif slot.probe is None or slot.reported_at is None:
            problems.append(f"{name}: starting")
        elif now - slot.reported_at > stall_s:
            problems.append(f"{name}: no report for {now - slot.reported_at:.1f}s")
        elif not slot.probe.ready:
            problems.append(f"{name}: {slot.probe.ready_why}")
    if problems:
        return False, "; ".join(problems)
    return True, f"{len(slots)} processes ready"
