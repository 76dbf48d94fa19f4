"""Sampled log lines: a flood of alike events costs a few lines and a count, not a line each."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass(slots=True)
class LogSampler:
    """Lets through at most `per_interval` events of each kind per interval; counts the rest.

    Args:
        per_interval: lines per kind (e.g. per DLQ stage and error class) per interval.
        interval_s: the interval.
        clock: monotonic seconds (injected in tests).
    """

    per_interval: int = 10
    interval_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _started: float = field(default=-1.0)
    _seen: dict[Hashable, int] = field(default_factory=dict)

    def allow(self, kind: Hashable) -> bool:
        """Should this event get its own line?"""
        if self._started < 0:
            self._started = self.clock()
        seen = self._seen.get(kind, 0) + 1
        self._seen[kind] = seen
        return seen <= self.per_interval

    def due(self, force: bool = False) -> dict[Hashable, int]:
        """When an interval ended (or `force`): the events per kind that got no line."""
        if self._started < 0 or (not force and self.clock() - self._started < self.interval_s):
            return {}
        suppressed = {
            k: n - self.per_interval for k, n in self._seen.items() if n > self.per_interval
        }
        self._seen = {}
        self._started = -1.0
        return suppressed
