"""The window-state seam: what the aggregator asks of a store, as plain values.

`RedisWindowStore` (redis_store.py) is the real store; its twin in the tests,
`MemoryWindowStore` (tests/support/memory_store.py), runs the very same Lua scripts
in-process on fakeredis. The runtime sees only this Protocol and the plain values of
`service/window_state.py`; every byte layout behind them lives in `state/codec.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from service.records import TP
from service.window_state import ApplyCall, ApplyReply, Claim, Component


class WindowStore(Protocol):
    """Window state of the partitions this worker owns.

    Every method raises `service.errors.StateError` when the store cannot be reached
    or refuses for now (transient: the caller retries with the same inputs), and
    `FatalError` when a script fails on its inputs (never retried).
    """

    def ping(self) -> bool:
        """The store answers."""
        ...

    def claim(self, tp: TP, expect: int = 0) -> Claim:
        """Fence older owners out of `tp` (new epoch) and read its state and outbox; the
        state must have reached outbox sequence `expect` (Kafka's committed offsets, or
        this worker, saw it).

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

    def apply(self, calls: Mapping[TP, ApplyCall]) -> dict[TP, ApplyReply]:
        """Apply every partition's call in one round trip; a reply per partition.

        A partition whose state or claim is gone answers `lost` (nothing of it written);
        the other partitions' replies stand.
        """
        ...

    def seen(self, ids: Mapping[TP, Sequence[str]]) -> dict[TP, dict[str, int]]:
        """Per partition, the expiry time of each of `ids` its dedupe set remembers (one
        round trip)."""
        ...

    def ack(self, tp: TP, epoch: int, seq: int) -> None:
        """Drop `tp`'s outbox entries up to `seq` (delivered), if `epoch` still owns it."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...
