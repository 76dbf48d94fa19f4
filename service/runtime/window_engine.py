"""The window engine: the pure aggregator wired to a `WindowStore`.

Each call is one step of the record flow's window part: claim (on assign), apply (a
batch, one round trip), tick (idle partitions), acknowledge. The computing is in
`processing.aggregator`; the bytes and the scripts are behind `state.store.WindowStore`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

import structlog

from service.errors import ClaimAgainError, TransientError
from service.processing.aggregator import Aggregator, DlqOf, EngineResult, Outbox, Owned, Prepared
from service.processing.windows import WindowPlan
from service.records import TP, DlqEntry, Keyed
from service.state.store import WindowStore
from service.window_state import Applied

log = structlog.get_logger("rill.windows")

__all__ = ["EngineResult", "InFlight", "Keyed", "Outbox", "WindowEngine", "WindowPlan"]


@dataclass(frozen=True, slots=True)
class InFlight:
    """A batch whose apply round trip is under way (`WindowEngine.begin`)."""

    prepared: Prepared
    carry: dict[TP, Sequence[DlqEntry]]
    future: Future[dict[TP, Applied]] | None


class WindowEngine:
    """Window state for the partitions this worker owns.

    Args:
        plan: the window definition.
        store: where the state lives.
        dlq_of: builds the DLQ (or late topic) entry of a late or unusable record.
    """

    def __init__(self, plan: WindowPlan, store: WindowStore, dlq_of: DlqOf) -> None:
        self.plan = plan
        self.store = store
        self.aggregator = Aggregator(plan, dlq_of)

    @property
    def owned(self) -> dict[TP, Owned]:
        """The partitions this worker owns, with their clocks and offsets."""
        return self.aggregator.owned

    def assign(self, tp: TP, now_wall_ms: int, after_seq: int = 0) -> Outbox:
        """Claim `tp`; returns the outbox it left behind after `after_seq` (delivered)."""
        claim = self.store.claim(tp)
        state = self.store.load_state(tp) if self.aggregator.needs_state else None
        self.aggregator.claimed(tp, claim, now_wall_ms, state)
        log.info(
            "partition claimed",
            topic=tp[0],
            partition=tp[1],
            epoch=claim.epoch,
            applied=claim.applied,
            outbox=len(claim.outbox),
        )
        return self.aggregator.outbox(claim, after_seq)

    def apply(
        self,
        keyed: Sequence[Keyed],
        now_wall_ms: int,
        carry: Mapping[TP, Sequence[DlqEntry]] | None = None,
        last_offsets: Mapping[TP, int] | None = None,
    ) -> EngineResult:
        """Pre-aggregate the batch per partition and apply it in one round trip.

        Args:
            keyed: the batch's records that reach the window.
            now_wall_ms: wall clock.
            carry: the batch's other DLQ entries per partition, kept in the outbox.
            last_offsets: the last offset of each partition in the batch.
        """
        prepared = self.aggregator.prepare(keyed, carry, last_offsets)
        return self._send(prepared, now_wall_ms, carry or {})

    def begin(
        self,
        keyed: Sequence[Keyed],
        carry: Mapping[TP, Sequence[DlqEntry]],
        last_offsets: Mapping[TP, int],
        submit: Callable[[Callable[[], dict[TP, Applied]]], Future[dict[TP, Applied]]],
    ) -> InFlight:
        """`apply`'s first half: prepare the batch and send it, without waiting.

        The round trip runs in `submit`'s thread while the caller fetches and decodes the
        next batch; `finish` takes the replies. Nothing of the aggregator changes in
        between (a failed round trip is done again by `apply`, from the same state).
        """
        prepared = self.aggregator.prepare(keyed, carry, last_offsets)
        calls = prepared.calls
        future = submit(partial(self.store.apply, calls)) if calls else None
        return InFlight(prepared, dict(carry), future)

    def finish(self, flight: InFlight, now_wall_ms: int) -> EngineResult:
        """`apply`'s second half: the replies of `begin`'s round trip, taken.

        Raises:
            whatever the round trip raised (`StateError`, `StateLostError`, ...).
        """
        replies = flight.future.result() if flight.future is not None else {}
        return self._take(flight.prepared, replies, now_wall_ms, flight.carry)

    def tick(self, now_wall_ms: int, at_end: Collection[TP]) -> EngineResult:
        """Advance the watermark of idle partitions by wall clock (`Aggregator.prepare_tick`)."""
        return self._send(self.aggregator.prepare_tick(now_wall_ms, at_end), now_wall_ms, {})

    def _send(
        self, prepared: Prepared, now_wall_ms: int, carry: Mapping[TP, Sequence[DlqEntry]]
    ) -> EngineResult:
        replies = self.store.apply(prepared.calls) if prepared.calls else {}
        return self._take(prepared, replies, now_wall_ms, carry)

    def _take(
        self,
        prepared: Prepared,
        replies: Mapping[TP, Applied],
        now_wall_ms: int,
        carry: Mapping[TP, Sequence[DlqEntry]],
    ) -> EngineResult:
        # A partition revoked while its round trip was under way is its new owner's: the
        # outbox holds what this batch did to it, and the new claim takes it from there.
        mine = self.owned
        replies = {tp: applied for tp, applied in replies.items() if tp in mine}
        out = self.aggregator.take(prepared, replies, now_wall_ms)
        for tp in out.fenced:
            log.warning(
                "partition fenced: another worker owns it now", topic=tp[0], partition=tp[1]
            )
        for tp in out.stale:
            # The script ran but its reply was lost: the state has the batch and the
            # outbox its outputs. Claim again and take what is not delivered yet.
            owned = self.owned.get(tp)
            try:
                left = self.assign(tp, now_wall_ms, after_seq=owned.acked if owned else 0)
            except TransientError as exc:
                # The partitions taken above moved on and their results are in `out`: a
                # retry would skip their records. Claim them all again instead (their
                # outbox has this batch).
                taken = sorted(t for t, a in replies.items() if a.status != "fenced")
                raise ClaimAgainError(taken, f"claim after a lost reply: {exc}") from exc
            out.results.extend(left.results)
            out.tps.extend([tp] * len(left.results))
            # The outbox holds this batch's DLQ entries too: the late ones this attempt
            # found again and the carried ones the batch already has. Take each once.
            has = {(e.source, e.source_offset) for e in carry.get(tp, ())}
            out.dlq = [e for e in out.dlq if e.source != tp]
            out.dlq.extend(e for e in left.dlq if (e.source, e.source_offset) not in has)
            out.seqs[tp] = left.seq
        return out

    def acknowledge(self, tp: TP, seq: int) -> None:
        """Outputs up to `seq` of `tp` are delivered."""
        self.aggregator.acknowledge(tp, seq)

    def flush_acks(self, tps: Iterable[TP]) -> None:
        """Drop delivered outbox entries now (on revoke), rather than with the next batch."""
        for tp in tps:
            owned = self.owned.get(tp)
            if owned is not None and owned.acked:
                self.store.ack(tp, owned.epoch, owned.acked)

    def revoke(self, tps: Iterable[TP]) -> None:
        """Forget partitions this worker no longer owns."""
        self.aggregator.revoke(tps)

    def restart_idle_clocks(self, now_wall_ms: int) -> None:
        """Time spent paused by back-pressure is not idleness."""
        self.aggregator.restart_idle_clocks(now_wall_ms)
