"""Back-pressure: retry a failing step behind a circuit breaker, paused but in the group."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import structlog

from service.config import Settings
from service.errors import RillError, TransientError
from service.observability.health import HealthState
from service.observability.metrics import Metrics
from service.records import TP
from service.retry import STATE_VALUE, Backoff, BreakerState, CircuitBreaker
from service.runtime.edges import Consumer

log = structlog.get_logger("rill.backpressure")
T = TypeVar("T")
DEPENDENCIES = ("redis", "kafka")


class BackPressure:
    """Runs steps that touch Redis or Kafka; pauses the partitions while they fail.

    Args:
        settings: retry and breaker settings.
        metrics: where breaker state, pauses and retries are shown.
        health: beaten while waiting, so liveness holds during an outage.
        stop: set when the worker should stop (a pending step then gives up).
        claimed: the partitions to pause and resume.
        on_resume: called when the partitions resume.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        health: HealthState,
        stop: threading.Event,
        claimed: Callable[[], list[TP]],
        on_resume: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.stop = stop
        self.claimed = claimed
        self.on_resume = on_resume
        self.paused = False
        self.breakers = {
            name: CircuitBreaker(
                name,
                settings.retry.breaker_threshold,
                settings.retry.breaker_reset_s,
                on_change=self._changed,
            )
            for name in DEPENDENCIES
        }
        for name in DEPENDENCIES:
            metrics.circuit_state.labels(name).set(0)

    def _changed(self, name: str, state: BreakerState) -> None:
        self.metrics.circuit_state.labels(name).set(STATE_VALUE[state])
        log.warning("circuit breaker", dependency=name, state=state)

    def run(self, name: str, step: Callable[[], T], consumer: Consumer) -> T:
        """Run `step`, retrying transient failures with backoff behind the breaker.

        While it fails, the partitions are paused and the consumer keeps polling, so the
        worker stays in the group and buffers nothing new; they resume on success.
        """
        s = self.settings
        breaker, backoff = self.breakers[name], Backoff(s.retry.base_s, s.retry.max_s)
        while True:
            if breaker.allow():
                try:
                    value = step()
                except TransientError as exc:
                    breaker.failure()
                    self.metrics.retries.labels(name).inc()
                    log.warning(
                        "transient failure, retrying",
                        dependency=name,
                        error=str(exc),
                        breaker=breaker.state,
                    )
                else:
                    breaker.success()
                    self.set_paused(consumer, False)
                    return value
            if self.stop.is_set():
                raise RillError(
                    f"stopped while {name} was unavailable; the batch is redone "
                    "after restart (its offsets were not committed)"
                )
            self.set_paused(consumer, True)
            self._wait(consumer, backoff.next_delay())

    def set_paused(self, consumer: Consumer, paused: bool) -> None:
        """Pause or resume every claimed partition."""
        if paused == self.paused:
            return
        self.paused = paused
        self.metrics.paused.set(1 if paused else 0)
        claimed = self.claimed()
        if paused:
            consumer.pause(claimed)
            log.warning("partitions paused", partitions=len(claimed))
        else:
            consumer.resume(claimed)
            self.on_resume()
            log.info("partitions resumed", partitions=len(claimed))

    def _wait(self, consumer: Consumer, seconds: float) -> None:
        """Wait while polling (paused partitions yield nothing; the group sees us alive)."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            self.health.beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            stray = consumer.consume(self.settings.consumer.batch_size, min(left, 0.2))
            if stray:
                # A partition assigned during the pause fetched before it was paused:
                # rewind it so these records are processed after the resume.
                consumer.rewind(stray)
                consumer.pause(sorted({r.topic_partition() for r in stray}))
