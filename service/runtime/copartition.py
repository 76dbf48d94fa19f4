"""The co-partition check of window input: counted, warned about, or refused.

A windowed pipeline computes each window in its input partition's state, so all records
of a window key must come from one partition. `processing.partitioning` tells, per keyed
item, whether its key hashes there (murmur2 or CRC32); here the runtime acts on the
answer per RILL_COPARTITION_CHECK: `warn` counts and logs (a line at most every
`WARN_INTERVAL_S`), `fail` stops the worker before the batch is windowed, `off` skips it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from service.config import Settings
from service.errors import CopartitionError
from service.observability.metrics import Metrics
from service.processing.partitioning import Copartitioning, Misplaced
from service.records import Keyed

log = structlog.get_logger("rill.copartition")
WARN_INTERVAL_S = 60.0
FIX = (
    "records of one window key come from several partitions, so each computes partial "
    "windows: re-key the input with group_by, or produce it keyed by the window key "
    "(docs/routing.md)"
)


class CopartitionCheck:
    """Checks each batch's window input against the partitions it came from.

    Args:
        mode: RILL_COPARTITION_CHECK (`warn`, `fail`, `off`).
        partitions: the input topic's partition count (None: not known, no check).
        topic: the input topic.
        metrics: where `rill_records_not_copartitioned_total` is.
        clock: monotonic seconds (injected in tests).
    """

    def __init__(
        self,
        mode: str,
        partitions: int | None,
        topic: str,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode, self.topic, self.clock = mode, topic, clock
        self.hashes = Copartitioning(partitions) if mode != "off" and partitions else None
        self._counter = metrics.records_not_copartitioned.labels(topic)
        self._next_warning = 0.0
        self._unwarned = 0

    @classmethod
    def of(
        cls, settings: Settings, windowed: bool, partitions: int | None, metrics: Metrics
    ) -> CopartitionCheck:
        """The check of a worker's settings (`off` for a stateless pipeline)."""
        mode = settings.routing.copartition_check if windowed else "off"
        return cls(mode, partitions, settings.topics.input, metrics)

    def check(self, keyed: Sequence[Keyed]) -> None:
        """Count the batch's misplaced items; warn, or refuse them with `fail`.

        Raises:
            CopartitionError: some item is misplaced and the mode is `fail`.
        """
        if self.hashes is None or not keyed:
            return
        count, first = self.hashes.misplaced(keyed)
        if not count or first is None:
            return
        self._counter.inc(count)
        if self.mode == "fail":
            raise CopartitionError(
                f"{self._where(first)}: {FIX}. RILL_COPARTITION_CHECK=fail refuses to window "
                "such input (set it to warn to go on with partial windows)"
            )
        self._unwarned += count
        now = self.clock()
        if now >= self._next_warning:
            log.warning(
                "window input not co-partitioned",
                records=self._unwarned,
                example=self._where(first),
                fix=FIX,
                setting="RILL_COPARTITION_CHECK",
            )
            self._unwarned = 0
            self._next_warning = now + WARN_INTERVAL_S

    def _where(self, m: Misplaced) -> str:
        assert self.hashes is not None
        n = self.hashes.partitions
        return (
            f"window key {m.key!r} came from {self.topic}[{m.partition}], but hashes to "
            f"partition {m.java} (murmur2, Java client) or {m.librdkafka} (CRC32, librdkafka) "
            f"of {n}"
        )
