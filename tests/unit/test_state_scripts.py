"""The Lua scripts (claim, apply, ack) through `MemoryWindowStore`: fencing, replay, outbox."""

from __future__ import annotations

import fakeredis
import pytest

from service.errors import RillError, StateError
from service.records import TP, DlqEntry
from service.state.codec import StateLayout, epoch_claims
from service.window_state import NO_TIME, ApplyCall, Claim, Delta, Op, WindowRow
from tests.support.memory_store import MemoryWindowStore

TP0: TP = ("orders", 0)
OPS: tuple[Op, ...] = ("add", "max")
ENTRY = DlqEntry(
    "late-topic", b"k", b"\x00v", [("trace", b"1")], "late", "RecordError", "behind", 1, 7,
    "orders", 0, 2,
)  # fmt: skip


def _store(server: fakeredis.FakeServer | None = None, emit: str = "final") -> MemoryWindowStore:
    return MemoryWindowStore(StateLayout("rill", "g", "tumbling", 100, emit, OPS, 600), server)


def _call(
    claim: Claim, first: int, last: int, wm: int, deltas: list[Delta], ack: int = -1, **kw: object
) -> ApplyCall:
    return ApplyCall(claim.epoch, first, last, wm, wm, ack, deltas, **kw)  # type: ignore[arg-type]


def _batch(store: MemoryWindowStore, claim: Claim, offset: int, ts: int, amount: float) -> int:
    """Apply one record closing every earlier window; returns its outbox seq."""
    delta = Delta("k", ts - ts % 100, ts - ts % 100 + 100, [1.0, amount])
    reply = store.apply({TP0: _call(claim, offset, offset, ts, [delta])})[TP0]
    assert reply.status == "ok"
    return reply.seq


def test_claim_of_a_new_partition_starts_at_epoch_one_with_no_state() -> None:
    """A first claim: claim number 1, nothing applied, no clock, an empty outbox."""
    claim = _store().claim(TP0)
    assert epoch_claims(claim.epoch) == 1
    assert claim == Claim(claim.epoch, -1, NO_TIME, NO_TIME, [])


def test_claim_bumps_the_epoch_and_fences_the_older_owner() -> None:
    """A second claim (a new owner) bumps the epoch; the old owner's apply answers fenced."""
    server = fakeredis.FakeServer()
    old, new = _store(server), _store(server)
    old_claim = old.claim(TP0)
    new_claim = new.claim(TP0)
    assert epoch_claims(new_claim.epoch) == epoch_claims(old_claim.epoch) + 1
    delta = Delta("k", 0, 100, [1.0, 5.0])
    fenced = old.apply({TP0: _call(old_claim, 0, 0, 10, [delta])})[TP0]
    assert fenced.status == "fenced"
    assert new.load_state(TP0) == {}, "a fenced apply writes nothing"
    assert new.apply({TP0: _call(new_claim, 0, 0, 10, [delta])})[TP0].status == "ok"
    assert new.load_state(TP0) == {("k", 0, 100): [1.0, 5.0]}


def test_replay_of_an_applied_batch_answers_stale_and_changes_nothing() -> None:
    """A batch whose first offset was applied already answers stale with the applied offset."""
    store = _store()
    claim = store.claim(TP0)
    delta = Delta("k", 0, 100, [1.0, 5.0])
    assert store.apply({TP0: _call(claim, 0, 4, 10, [delta])})[TP0].applied == 4
    stale = store.apply({TP0: _call(claim, 3, 6, 10, [delta])})[TP0]
    assert (stale.status, stale.applied) == ("stale", 4)
    assert store.load_state(TP0) == {("k", 0, 100): [1.0, 5.0]}, "merged once"


def test_idle_tick_advances_the_watermark_and_keeps_the_applied_offset() -> None:
    """An apply without records (-1 offsets) closes windows but leaves `applied` alone."""
    store = _store()
    claim = store.claim(TP0)
    _batch(store, claim, 0, 10, 5.0)
    tick = store.apply({TP0: _call(claim, -1, -1, 500, [])})[TP0]
    assert (tick.status, tick.applied, tick.watermark) == ("ok", 0, 500)
    assert tick.rows == [WindowRow(True, "k", 0, 100, [1.0, 5.0])]
    assert tick.open_windows == 0


def test_ack_drops_outbox_entries_up_to_seq_only_for_the_owner() -> None:
    """ack(seq) drops entries <= seq; an ack with an older epoch drops nothing."""
    server = fakeredis.FakeServer()
    store = _store(server)
    claim = store.claim(TP0)
    seqs = [_batch(store, claim, i, 100 * (i + 1), float(i)) for i in range(4)]
    assert seqs == [1, 2, 3, 4]
    store.ack(TP0, claim.epoch - 1, 3)  # not the owner's epoch: ignored
    store.ack(TP0, claim.epoch, 2)
    left = _store(server).claim(TP0).outbox
    assert [e.seq for e in left] == [3, 4]


def test_apply_drops_acknowledged_entries_with_the_batch() -> None:
    """An apply's `ack_seq` drops delivered outbox entries in the same round trip."""
    server = fakeredis.FakeServer()
    store = _store(server)
    claim = store.claim(TP0)
    first = _batch(store, claim, 0, 100, 1.0)
    second = _batch(store, claim, 1, 200, 2.0)
    delta = Delta("k", 300, 400, [1.0, 3.0])
    store.apply({TP0: _call(claim, 2, 2, 300, [delta], ack=second)})
    assert first < second
    assert [e.seq for e in _store(server).claim(TP0).outbox] == [second + 1]


def test_outbox_round_trip_of_rows_and_dlq_entries() -> None:
    """The next owner's claim returns the rows and DLQ entries an apply left, as they were."""
    server = fakeredis.FakeServer()
    store = _store(server)
    claim = store.claim(TP0)
    deltas = [Delta("a|b", 0, 100, [2.0, 7.5]), Delta("ü", 100, 200, [1.0, -1.0])]
    reply = store.apply({TP0: _call(claim, 0, 3, 150, deltas, dlq=[ENTRY, ENTRY])})[TP0]
    assert reply.rows == [WindowRow(True, "a|b", 0, 100, [2.0, 7.5])]
    outbox = _store(server).claim(TP0).outbox
    assert [(e.seq, e.rows, e.dlq) for e in outbox] == [(reply.seq, reply.rows, [ENTRY, ENTRY])]


def test_update_mode_returns_every_changed_window() -> None:
    """emit=update: each window a batch touched comes back as an update row."""
    store = _store(emit="update")
    claim = store.claim(TP0)
    delta = Delta("k", 0, 100, [1.0, 5.0])
    reply = store.apply({TP0: _call(claim, 0, 0, 10, [delta, Delta("k", 0, 100, [1.0, 9.0])])})
    assert reply[TP0].rows == [WindowRow(False, "k", 0, 100, [2.0, 9.0])]


def test_apply_of_many_partitions_is_one_round_trip() -> None:
    """One apply call, any number of partitions: one round trip; an empty call: none."""
    store = _store()
    claims = {tp: store.claim(tp) for tp in [("orders", p) for p in range(3)]}
    before = store.round_trips
    assert store.apply({}) == {}
    calls = {tp: _call(c, 0, 0, 10, [Delta("k", 0, 100, [1.0, 1.0])]) for tp, c in claims.items()}
    replies = store.apply(calls)
    assert {tp: r.status for tp, r in replies.items()} == dict.fromkeys(claims, "ok")
    assert store.round_trips == before + 1


def test_a_server_that_lost_the_scripts_gets_them_again() -> None:
    """After SCRIPT FLUSH (a restart or failover) apply loads the script and sends again."""
    store = _store()
    claim = store.claim(TP0)
    _batch(store, claim, 0, 10, 1.0)
    store.client.script_flush()
    assert _batch(store, claim, 1, 20, 2.0) == 2
    again = store.claim(TP0).epoch
    assert epoch_claims(again) == epoch_claims(claim.epoch) + 1, "claim reloads its script too"


def test_an_unreachable_store_raises_state_error() -> None:
    """Every call to a store that does not answer raises StateError; ping says False."""
    store = _store()
    claim = store.claim(TP0)
    store.server.connected = False
    assert store.ping() is False
    with pytest.raises(StateError):
        store.claim(TP0)
    with pytest.raises(StateError):
        store.load_state(TP0)
    with pytest.raises(StateError):
        store.ack(TP0, claim.epoch, 1)
    with pytest.raises(StateError):
        store.apply({TP0: _call(claim, 0, 0, 10, [])})


def test_state_in_a_layout_this_version_cannot_read_is_fatal() -> None:
    """An outbox field the codec does not know is a RillError naming the partition."""
    store = _store()
    store.client.hset(store.keys(TP0).outbox, "1:zz", "?")
    with pytest.raises(RillError, match="not in the layout"):
        store.claim(TP0)


def test_two_batches_of_one_window_merge_in_the_script() -> None:
    """A window fed by two batches holds both: count and sum add, max keeps the larger."""
    store = _store()
    claim = store.claim(TP0)
    store.apply({TP0: _call(claim, 0, 0, 10, [Delta("k", 0, 100, [1.0, 5.0])])})
    store.apply({TP0: _call(claim, 1, 1, 20, [Delta("k", 0, 100, [2.0, 3.0])])})
    assert store.load_state(TP0) == {("k", 0, 100): [3.0, 5.0]}
