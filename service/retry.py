"""Retry policy and circuit breaker: pure logic over an injected clock.

The one backoff of every retry loop: back-pressure (Redis, Kafka), the schema registry
client, the transactional commit.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]
STATE_VALUE: dict[BreakerState, int] = {"closed": 0, "open": 1, "half_open": 2}


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with full jitter: a delay uniform in [0, min(cap, base * 2^n)].

    Args:
        base_s: the first ceiling.
        cap_s: the largest ceiling.
        rand: a source of uniform floats in [0, 1) (seedable in tests).
    """

    base_s: float = 0.1
    cap_s: float = 10.0
    rand: Callable[[], float] = random.random
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling."""
        # The exponent stops growing once the cap is reached: 2.0 ** 1024 overflows a
        # float, and an outage may well outlast a thousand retries.
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 64))
        self.attempt += 1
        return ceiling * float(self.rand())

    def reset(self) -> None:
        """Start again from the base after a success."""
        self.attempt = 0


@dataclass(slots=True)
class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `reset_s` lets one trial through.

    closed: calls go through. open: calls are refused until `reset_s` passed.
    half_open: one trial; success closes, failure opens again.
    """

    name: str
    threshold: int = 3
    reset_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = "closed"
    failures: int = 0
    opened_at: float = field(default=0.0)
    on_change: Callable[[str, BreakerState], None] | None = None

    def allow(self) -> bool:
        """May a call go through now?"""
        if self.state == "open" and self.clock() - self.opened_at >= self.reset_s:
            self._set("half_open")
        return self.state != "open"

    def success(self) -> None:
        """A call succeeded."""
        self.failures = 0
        if self.state != "closed":
            self._set("closed")

    def failure(self) -> None:
        """A call failed."""
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self.opened_at = self.clock()
            if self.state != "open":
                self._set("open")

    def _set(self, state: BreakerState) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(self.name, state)
