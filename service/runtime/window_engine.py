"""The window engine: the pure aggregator wired to a `WindowStore`.

Each call is one step of the record flow's window part: claim (on assign), begin and
finish (a batch or an idle tick, one round trip), acknowledge. The computing is in
`processing.aggregator`; the bytes and the scripts are behind `state.store.WindowStore`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from functools import partial

import structlog

from service.errors import RecordError
from service.processing.aggregates import Aggregation
from service.processing.aggregator import Aggregator, DlqOf, Outbox, Owned, Prepared, WindowOutcome
from service.processing.dedupe import (
    DUPLICATE_STAGE,
    DedupePlan,
    Judged,
    Verdict,
    apart,
    ids_to_read,
    judge,
    replays,
    with_marks,
)
from service.processing.windows import WindowPlan, WindowSpec
from service.records import TP, DlqEntry, Keyed, Mark, OutRecord
from service.state.store import WindowStore
from service.window_state import ApplyReply

log = structlog.get_logger("rill.windows")

__all__ = [
    "InFlight",
    "Keyed",
    "Outbox",
    "Submit",
    "WindowEngine",
    "WindowOutcome",
    "WindowPlan",
    "inline_submit",
]


Replies = dict[TP, ApplyReply]
Submit = Callable[[Callable[[], Replies]], "Future[Replies]"]


@dataclass(frozen=True, slots=True)
class InFlight:
    """A batch (or idle tick) whose apply round trip is under way (`WindowEngine.begin`).

    With de-duplication, `outputs` are a stateless batch's outputs per partition (kept in
    the outbox by the call), `dropped` the (partition, offset) of each duplicate.
    """

    prepared: Prepared
    future: Future[Replies] | None
    outputs: Mapping[TP, Sequence[OutRecord]] = field(default_factory=dict)
    dropped: frozenset[tuple[TP, int]] = frozenset()


def inline_submit(call: Callable[[], Replies]) -> Future[Replies]:
    """A `Submit` that runs the round trip now, in the caller's thread (no overlap)."""
    future: Future[Replies] = Future()
    try:
        future.set_result(call())
    except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
        future.set_exception(exc)
    return future


# The aggregator of a stateless pipeline that de-duplicates: it never gets a keyed record
# (nothing is windowed), it keeps the partitions' ownership, offsets and outbox sequences.
NO_WINDOW = WindowPlan(
    WindowSpec("tumbling", size_ms=1), (Aggregation.parse("count"),), None, "final", 0
)


class WindowEngine:
    """Window state (and dedupe ids) for the partitions this worker owns.

    A stateless pipeline that de-duplicates runs here too, without windows: its calls
    record the ids kept and carry the batch's outputs into the outbox, on the one
    claim / apply / outbox protocol.

    Args:
        plan: the window definition (None: a stateless pipeline).
        store: where the state lives.
        dlq_of: builds the DLQ (or late topic) entry of a late or unusable record.
        dedupe: how records are de-duplicated (None: they are not).
        topic: the one topic whose partitions have window state (group_by's repartition
            topic; the input's partitions then only re-key); None: every assigned one.
    """

    def __init__(
        self,
        plan: WindowPlan | None,
        store: WindowStore,
        dlq_of: DlqOf,
        dedupe: DedupePlan | None = None,
        topic: str | None = None,
    ) -> None:
        self.plan = plan or NO_WINDOW
        self.store = store
        self.dedupe = dedupe
        self.topic = topic
        self.dlq_of = dlq_of
        self.stateless = plan is None
        self.aggregator = Aggregator(self.plan, dlq_of)
        # Per partition found lost: the outbox sequence this worker saw Redis reach, which
        # its claim again must find.
        self._at_least: dict[TP, int] = {}

    @property
    def owned(self) -> dict[TP, Owned]:
        """The partitions this worker owns, with their clocks and offsets."""
        return self.aggregator.owned

    def assign(self, tp: TP, now_wall_ms: int, after_seq: int = 0, expect: int = 0) -> Outbox:
        """Claim `tp`; returns the outbox it left behind after `after_seq` (delivered).

        Args:
            tp: the partition.
            now_wall_ms: wall clock.
            after_seq: the outbox entries up to this one are delivered.
            expect: the outbox sequence Redis must have reached (Kafka's committed offsets
                name it); what this worker saw before it found the state lost counts too.

        Raises:
            StateLostError: Redis has less (the worker acts per RILL_STATE_LOSS).
        """
        claim = self.store.claim(tp, max(expect, self._at_least.get(tp, 0)))
        self._at_least.pop(tp, None)
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
    ) -> WindowOutcome:
        """`begin` and `finish` in one call, in this thread."""
        flight = self.begin(keyed, carry or {}, last_offsets or {}, inline_submit)
        return self.finish(flight, now_wall_ms)

    def begin(
        self,
        keyed: Sequence[Keyed],
        carry: Mapping[TP, Sequence[DlqEntry]],
        last_offsets: Mapping[TP, int],
        submit: Submit,
        marks: Sequence[Mark] = (),
    ) -> InFlight:
        """Prepare a batch and send it in `submit`'s thread, without waiting (`finish`).

        The round trip runs while the caller fetches and decodes the next batch (or at
        once, with an inline `submit`). Nothing of the aggregator changes in between.
        With de-duplication the batch's ids are read first (one round trip, in this
        thread: the previous batch's apply is finished, so its ids are there), the
        duplicates dropped, and the kept ids go with the apply calls.

        Raises:
            StateError: the dedupe read failed (transient: call again, nothing changed).
        """
        owned = self.owned
        keyed = [k for k in keyed if k.record.topic_partition() in owned]
        if self.dedupe is None:
            return self._begin(self.aggregator.prepare(keyed, carry, last_offsets), submit)
        judged = self._judge(keyed, carry, marks)
        prepared = self.aggregator.prepare(judged.keyed, judged.carry, last_offsets)
        if self.stateless:
            prepared.skipped += judged.skipped
        outputs = with_marks(prepared, judged, owned, last_offsets)
        flight = self._begin(prepared, submit)
        return replace(flight, outputs=outputs, dropped=frozenset(judged.verdict.dropped()))

    def _judge(
        self, keyed: Sequence[Keyed], carry: Mapping[TP, Sequence[DlqEntry]], marks: Sequence[Mark]
    ) -> Judged:
        """The batch's duplicates, judged against the ids Redis remembers (one read)."""
        assert self.dedupe is not None
        fresh, skipped = replays(marks, self.owned)
        seen = self.store.seen(ids_to_read(fresh)) if fresh else {}
        verdict: Verdict = judge(fresh, seen, self.dedupe.within_ms)
        dlq = []
        if self.dedupe.to_dlq:
            for mark in verdict.duplicates:
                why = RecordError(
                    DUPLICATE_STAGE,
                    f"dedupe id {mark.id!r} was seen within {self.dedupe.within_ms} ms",
                )
                dlq.append(self.dlq_of(mark.record, why))
        kept, kept_carry = apart(keyed, carry, verdict, dlq)
        return Judged(kept, kept_carry, verdict, dlq, skipped)

    def begin_tick(self, now_wall_ms: int, at_end: Collection[TP], submit: Submit) -> InFlight:
        """An idle tick as a batch without records: the watermark of idle partitions
        advanced by wall clock (`Aggregator.prepare_tick`), sent like a batch."""
        return self._begin(self.aggregator.prepare_tick(now_wall_ms, at_end), submit)

    def _begin(self, prepared: Prepared, submit: Submit) -> InFlight:
        calls = prepared.calls
        future = submit(partial(self.store.apply, calls)) if calls else None
        return InFlight(prepared, future)

    def redo(self, flight: InFlight) -> InFlight:
        """The same calls again, for the partitions still owned (a failed round trip).

        A call that did run answers `stale` (its outbox sequence moved on): its partition
        is claimed again and its outbox taken, never applied twice nor acknowledged away.
        """
        mine = self.owned
        calls = {tp: c for tp, c in flight.prepared.calls.items() if tp in mine}
        prepared = replace(flight.prepared, calls=calls)
        again = self._begin(prepared, inline_submit)
        return replace(flight, prepared=again.prepared, future=again.future)

    def finish(self, flight: InFlight, now_wall_ms: int) -> WindowOutcome:
        """The replies of `begin`'s round trip, taken.

        Raises:
            whatever the round trip raised (`StateError`, ...): `redo` sends it again.
        """
        replies = flight.future.result() if flight.future is not None else {}
        # A partition revoked while its round trip was under way is its new owner's: the
        # outbox holds what this call did to it, and the new claim takes it from there.
        mine = self.owned
        replies = {tp: applied for tp, applied in replies.items() if tp in mine}
        out = self.aggregator.take(flight.prepared, replies, now_wall_ms)
        self._deduped(flight, out)
        for tp in out.fenced:
            log.warning(
                "partition fenced: another claim owns its state now", topic=tp[0], partition=tp[1]
            )
        for tp in out.stale:
            log.info(
                "a reply was lost but the call ran: claiming again to take its outbox",
                topic=tp[0],
                partition=tp[1],
            )
        # The claim again must find at least what this worker saw Redis reach.
        self._at_least.update(out.reached)
        return out

    def _deduped(self, flight: InFlight, out: WindowOutcome) -> None:
        """A de-duplicated batch's outputs and duplicates, of the partitions still owned
        (a partition answered stale, lost or fenced goes back to Kafka: judged again)."""
        if not flight.dropped and not flight.outputs:
            return
        gone = out.fenced | set(out.again)
        mine = self.owned
        for tp in sorted(flight.outputs):
            if tp in out.seqs:
                out.outputs.extend(flight.outputs[tp])
                out.output_tps.extend([tp] * len(flight.outputs[tp]))
        out.dropped = {d for d in flight.dropped if d[0] not in gone and d[0] in mine}
        out.duplicates = len(out.dropped)
        if out.duplicates:
            log.debug("duplicates dropped", duplicates=out.duplicates)

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
        """Forget partitions this worker no longer owns (Kafka took them)."""
        tps = list(tps)
        self.aggregator.revoke(tps)
        for tp in tps:
            self._at_least.pop(tp, None)

    def restart_idle_clocks(self, now_wall_ms: int) -> None:
        """Time spent paused by back-pressure is not idleness."""
        self.aggregator.restart_idle_clocks(now_wall_ms)

    claims = True  # assigned partitions are claimed before they are processed

    def windows(self, tp: TP) -> bool:
        """Whether `tp` has window state (claimed on assignment) or only re-keys."""
        return self.topic is None or tp[0] == self.topic

    def keep_alive(self) -> tuple[list[TP], list[TP]]:
        """Refresh the TTL of the owned partitions' state (every few seconds).

        Returns the partitions found lost (state or claim gone: the next claim must find at
        least what this worker saw Redis reach) and those fenced by another claim; both
        are forgotten here.
        """
        owned = self.owned
        gone = self.store.touch({tp: o.epoch for tp, o in owned.items()})
        lost = sorted(tp for tp, why in gone.items() if why == "lost")
        fenced = sorted(tp for tp, why in gone.items() if why != "lost")
        self._at_least.update({tp: max(owned[tp].seq, owned[tp].acked) for tp in lost})
        self.aggregator.revoke(gone)
        return lost, fenced

    def ping(self) -> bool:
        """The store answers."""
        return self.store.ping()

    def not_owned(self, tps: Iterable[TP]) -> set[TP]:
        """Those of `tps` whose state this worker does not own (revoked, fenced, lost);
        partitions without window state (group_by's input) are never among them."""
        return {tp for tp in tps if self.windows(tp)} - self.owned.keys()


class NoWindows:
    """The window step of a stateless pipeline: nothing to claim, apply or tick."""

    claims = False
    owned: dict[TP, Owned] = {}  # noqa: RUF012 - never written: there is no window state

    def windows(self, tp: TP) -> bool:
        """No partition has window state."""
        return False

    def begin(
        self,
        keyed: Sequence[Keyed],
        carry: Mapping[TP, Sequence[DlqEntry]],
        last_offsets: Mapping[TP, int],
        submit: Submit,
        marks: Sequence[Mark] = (),
    ) -> InFlight:
        """Nothing to send."""
        return InFlight(Prepared(), None)

    def begin_tick(self, now_wall_ms: int, at_end: Collection[TP], submit: Submit) -> InFlight:
        """Nothing idle."""
        return InFlight(Prepared(records=False), None)

    def redo(self, flight: InFlight) -> InFlight:
        """Nothing to send again."""
        return flight

    def finish(self, flight: InFlight, now_wall_ms: int) -> WindowOutcome:
        """Nothing happened."""
        return WindowOutcome()

    def keep_alive(self) -> tuple[list[TP], list[TP]]:
        """No state to keep."""
        return [], []

    def ping(self) -> bool:
        """No store to ask."""
        return True

    def not_owned(self, tps: Iterable[TP]) -> set[TP]:
        """Every partition's records are this worker's to process while assigned."""
        return set()

    def acknowledge(self, tp: TP, seq: int) -> None:
        """No outbox."""

    def flush_acks(self, tps: Iterable[TP]) -> None:
        """No outbox."""

    def revoke(self, tps: Iterable[TP]) -> None:
        """Nothing owned."""

    def restart_idle_clocks(self, now_wall_ms: int) -> None:
        """No clocks."""


Windows = WindowEngine | NoWindows
