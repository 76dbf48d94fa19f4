"""Where the consumer is in each partition: its position, the end, the lag between them.

The lag of a partition is its end minus the consumer's position, the same in both
guarantee modes. (librdkafka's `consumer_lag` subtracts the consumer's own committed
offset instead; with exactly-once the offsets are committed inside the producer's
transactions, so that one is only what was read at assignment and never moves.)

The end is the last stable offset when reading committed records (an open transaction's
records cannot be read yet), else the high watermark. The position is the next offset the
application gets, which moves past transaction markers; while the client does not know
it (nothing read since the assignment, or just rewound) it is the committed offset the
fetch starts from, or the log start when nothing is committed
(`auto.offset.reset=earliest`): never more than the real position.

A partition is at its end when its position has reached the end. Nothing of it is then
buffered: librdkafka raises a partition's end from a fetch response before it queues the
fetched records, so a queued record keeps the position below the end. (`fetchq_cnt` cannot
say this per partition: the partition queues forward to the consumer's one queue, and each
partition reports that queue's length.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.records import TP


@dataclass(frozen=True, slots=True)
class Progress:
    """One partition's position and end (None where librdkafka does not know them yet)."""

    position: int | None
    end: int | None

    @property
    def lag(self) -> int | None:
        """Records between the position and the end; None while either is unknown."""
        if self.position is None or self.end is None:
            return None
        return max(0, self.end - self.position)

    def behind(self, first_in_hand: int | None) -> int | None:
        """Records not done: from the first one the worker holds undelivered (fetched, in
        its Redis round trip or retried behind back-pressure), else from the position."""
        lag = self.lag
        if lag is None or first_in_hand is None or self.end is None:
            return lag
        return max(lag, self.end - first_in_hand)

    @property
    def at_end(self) -> bool:
        """Read to the end, nothing of it buffered (unknown is never at the end)."""
        return self.lag == 0


def _known(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def progress_of(
    position: int, high: int, stats: Mapping[str, Any] | None, read_committed: bool
) -> Progress:
    """One partition's progress from the client now and its last statistics.

    Args:
        position: the client's position now (`Consumer.position`; < 0: not known).
        high: the high watermark the client has now (`get_watermark_offsets(cached=True)`,
            updated by every fetch response; < 0: not known).
        stats: librdkafka's last statistics of the partition (`topics.<t>.partitions.<p>`),
            None when there are none (statistics off, or none since the assignment).
        read_committed: the consumer reads with `isolation.level=read_committed`.
    """
    stats = stats or {}
    pos = _known(position)
    if pos is None:
        # Not the statistics' app_offset: it may be from before a rewind.
        pos = _known(stats.get("committed_offset"))
    if pos is None:
        pos = _known(stats.get("lo_offset"))
    hi = _known(high)
    if hi is None:
        hi = _known(stats.get("hi_offset"))
    end = hi
    stable = _known(stats.get("ls_offset"))
    # The statistics' last stable offset holds while the high watermark has not moved
    # since (a transaction ends with a marker, which moves it); else the high watermark
    # errs on the side of "not at the end".
    if read_committed and stable is not None and stats.get("hi_offset") == hi:
        end = stable
    return Progress(pos, end)


def partitions_of(stats: Mapping[str, Any]) -> dict[TP, Mapping[str, Any]]:
    """The statistics of each partition in a librdkafka statistics document.

    Returns:
        Per (topic, partition), without librdkafka's internal partition -1.
    """
    out: dict[TP, Mapping[str, Any]] = {}
    for topic, tstats in stats.get("topics", {}).items():
        for pid, pstats in tstats.get("partitions", {}).items():
            if int(pid) >= 0:
                out[(topic, int(pid))] = pstats
    return out
