"""Claiming partitions' window state: on assignment, and again when a reply was lost,
state was found gone, or another claim fenced this worker out of a partition it still has.

A partition to claim goes back to Kafka from its first record in hand and is paused until
its claim (`Guarantee.reconcile`: new epoch, outbox taken and delivered) succeeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import structlog

from service.errors import StateLostError
from service.records import TP, InRecord
from service.runtime.backpressure import BackPressure
from service.runtime.edges import Consumer
from service.runtime.guarantee import Guarantee
from service.runtime.observers import Observers
from service.runtime.partitions import FENCED_RETRY_S, Partitions, State
from service.runtime.state_loss import state_lost
from service.runtime.window_engine import WindowEngine, Windows

log = structlog.get_logger("rill.claims")


class Claims:
    """Moves partitions into and out of `claiming` (and `fenced`, `held`)."""

    def __init__(
        self,
        partitions: Partitions,
        engine: Windows,
        guarantee: Guarantee,
        consumer: Consumer,
        backpressure: BackPressure,
        observers: Observers,
    ) -> None:
        self.partitions, self.engine, self.guarantee = partitions, engine, guarantee
        self.consumer, self.backpressure, self.obs = consumer, backpressure, observers

    def claim(self) -> None:
        """Claim and reconcile every partition due (run behind back-pressure: a retry
        claims only those not done yet)."""
        for tp in self.partitions.to_claim():
            try:
                self.guarantee.reconcile(tp)
            except StateLostError as exc:
                assert isinstance(self.engine, WindowEngine)
                mode = self.obs.settings.state.loss
                if not state_lost(tp, exc, mode, self.engine, self.guarantee, self.obs.metrics):
                    self.partitions.move([tp], State.HELD)
                    self.consumer.pause([tp])
                    continue
            self.partitions.move([tp], State.ACTIVE)
            if not self.backpressure.paused:
                self.consumer.resume([tp])

    def again(self, tps: Iterable[TP], records: Sequence[InRecord]) -> list[TP]:
        """Claim these again: a call ran but its reply was lost (the outbox has what it
        did), or their state or claim is gone from Redis."""
        moved = self.partitions.move(tps, State.CLAIMING)
        self._back(moved, records)
        return moved

    def fenced(self, tps: Iterable[TP], records: Sequence[InRecord]) -> list[TP]:
        """Another claim took these partitions' state while Kafka still has them here."""
        moved = self.partitions.move(tps, State.FENCED)
        if moved:
            self.obs.metrics.partitions_fenced.labels(self.obs.settings.topics.input).inc(
                len(moved)
            )
            log.warning(
                "partitions fenced by another claim of their state while still assigned: "
                f"rewound and paused; claimed again in {FENCED_RETRY_S:.0f} s unless revoked",
                partitions=moved,
            )
        self._back(moved, records)
        return moved

    def _back(self, tps: list[TP], records: Sequence[InRecord]) -> None:
        """Their records in hand go back to Kafka; they are fetched after the claim."""
        if not tps:
            return
        mine = set(tps)
        back = [r for r in records if r.topic_partition() in mine]
        if back:
            self.consumer.rewind(back)
        self.consumer.pause(tps)
