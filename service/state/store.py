"""The window-state seam: what the aggregator asks of a store, as plain values.

`RedisWindowStore` (redis_store.py) is the real store; `MemoryWindowStore` (memory.py)
runs the very same Lua scripts in-process on fakeredis, for unit tests. The runtime and
the aggregator see only this Protocol and these types; every byte layout behind them
lives in `state/codec.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from service.processing.dlq import DlqEntry
from service.records import TP

if TYPE_CHECKING:
    # Types only: processing.windows imports the codec, which imports these types.
    from service.processing.aggregates import Component
    from service.processing.windows import Delta

NO_TIME = -(2**62)
ApplyStatus = Literal["ok", "fenced", "stale", "lost"]


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One window as the script returns it: closed (`final`) or an update."""

    final: bool
    key: str
    start: int
    end: int
    comps: list[Component]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """What one applied batch (or tick) left to deliver: window rows and DLQ entries."""

    seq: int
    rows: list[WindowRow]
    dlq: list[DlqEntry]


@dataclass(frozen=True, slots=True)
class Claim:
    """A partition's state as its new owner finds it."""

    epoch: int
    applied: int
    max_ts: int
    watermark: int
    outbox: list[OutboxEntry]
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ApplyCall:
    """One partition's part of a batch (or of an idle tick: no offsets, no deltas)."""

    epoch: int
    first_offset: int
    last_offset: int
    max_ts: int
    watermark: int
    ack_seq: int
    deltas: Sequence[Delta]
    dlq: Sequence[DlqEntry] = ()
    # The outbox sequence the caller last saw (its claim's, then each reply's): a replay
    # of a call that ran finds Redis past it and answers `stale`; -1 checks nothing.
    seq: int = -1


@dataclass(frozen=True, slots=True)
class Applied:
    """What the apply script did for one partition."""

    status: ApplyStatus
    seq: int = 0
    watermark: int = NO_TIME
    applied: int = -1
    rows: list[WindowRow] = field(default_factory=list)
    open_windows: int = 0


class WindowStore(Protocol):
    """Window state of the partitions this worker owns.

    Every method raises `service.errors.StateError` when the store cannot be reached
    or refuses for now (transient: the caller retries with the same inputs), and
    `FatalError` when a script fails on its inputs (never retried).
    """

    def ping(self) -> bool:
        """The store answers."""
        ...

    def expect(self, tp: TP, seq: int) -> None:
        """`tp`'s state reached outbox sequence `seq` (Kafka's committed offsets, or this
        worker, saw it): the next claim refuses (`StateLostError`) if the store has less."""
        ...

    def claim(self, tp: TP) -> Claim:
        """Fence older owners out of `tp` (new epoch) and read its state and outbox.

        Raises `StateLostError` (state behind `expect`) or `StateLayoutError`.
        """
        ...

    def adopt(self, tp: TP, seq: int) -> int:
        """Go on with `tp`'s state as the store has it after a loss; its outbox sequence
        continues after `seq`. Returns the sequence the store had."""
        ...

    def touch(self, epochs: Mapping[TP, int], force: bool = False) -> dict[TP, str]:
        """Keep owned partitions' state alive (rate-limited); returns those not owned any
        more, with why (`lost` or `fenced`)."""
        ...

    def load_state(self, tp: TP) -> dict[tuple[str, int, int], list[Component]]:
        """Every open window of `tp`: (key, start, end) -> components."""
        ...

    def apply(self, calls: Mapping[TP, ApplyCall]) -> dict[TP, Applied]:
        """Apply every partition's call in one round trip; a reply per partition.

        A partition whose state or claim is gone answers `lost` (nothing of it written);
        the other partitions' replies stand.
        """
        ...

    def ack(self, tp: TP, epoch: int, seq: int) -> None:
        """Drop `tp`'s outbox entries up to `seq` (delivered), if `epoch` still owns it."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...
