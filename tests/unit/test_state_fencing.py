"""Ownership and state loss in the scripts (MemoryWindowStore on fakeredis): lost is told
apart from fenced, fencing survives a lost claim, a changed layout is refused at claim, a
script error is fatal, every key the scripts touch is in their KEYS."""

from __future__ import annotations

import fakeredis
import pytest

from service.errors import FatalError, StateError, StateLayoutError, StateLostError
from service.records import TP
from service.state import codec
from service.state.codec import StateLayout
from service.window_state import ApplyCall, Claim, Delta, Op
from tests.support.memory_store import MemoryWindowStore

TP0: TP = ("orders", 0)
OPS: tuple[Op, ...] = ("add", "max")


def _store(
    server: fakeredis.FakeServer | None = None,
    kind: str = "tumbling",
    ops: tuple[Op, ...] = OPS,
    size_ms: int = 100,
    ttl_s: int = 600,
) -> MemoryWindowStore:
    return MemoryWindowStore(StateLayout("rill", "g", kind, size_ms, "final", ops, ttl_s), server)


def _apply(store: MemoryWindowStore, claim: Claim, offset: int, ts: int, key: str = "k") -> str:
    start = ts - ts % 100
    delta = Delta(key, start, start + 100, [1] * len(store.layout.ops))
    call = ApplyCall(claim.epoch, offset, offset, ts, 0, -1, [delta])
    return store.apply({TP0: call})[TP0].status


def test_an_owner_whose_state_expired_is_told_lost_not_fenced() -> None:
    """Meta gone (TTL, eviction, FLUSHALL): the owner's apply answers lost (nothing written)."""
    store = _store()
    claim = store.claim(TP0)
    assert _apply(store, claim, 0, 10) == "ok"
    store.client.delete(store.keys(TP0).meta)
    assert _apply(store, claim, 1, 20) == "lost"
    assert not store.client.exists(store.keys(TP0).meta), "nothing written"


def test_a_newer_claim_fences_the_older_owner() -> None:
    """Another worker's claim: the older owner's apply answers fenced (no error)."""
    server = fakeredis.FakeServer()
    old, new = _store(server), _store(server)
    old_claim = old.claim(TP0)
    new.claim(TP0)
    assert _apply(old, old_claim, 0, 10) == "fenced"


def test_a_claim_a_failover_forgot_is_lost_for_its_owner_and_fences_a_zombie_again() -> None:
    """Failover loses B's claim: B is told lost (claims it again), which fences zombie A."""
    server = fakeredis.FakeServer()
    a, b = _store(server), _store(server)
    a_claim = a.claim(TP0)
    meta = a.keys(TP0).meta
    before = a.client.dump(meta)
    assert isinstance(before, bytes)
    b_claim = b.claim(TP0)
    # The primary fails over to a replica that never got B's claim.
    a.client.restore(meta, 0, before, replace=True)
    assert _apply(b, b_claim, 0, 10) == "lost"
    b_again = b.claim(TP0)
    assert _apply(a, a_claim, 0, 10) == "fenced"
    assert _apply(b, b_again, 0, 10) == "ok"


def test_a_claim_number_issued_again_after_a_failover_does_not_let_its_first_holder_in() -> None:
    """B's claim n is lost; C gets n again after the failover: B's epoch is not C's (token)."""
    server = fakeredis.FakeServer()
    a, b, c = _store(server), _store(server), _store(server)
    a.claim(TP0)
    meta = a.keys(TP0).meta
    before = a.client.dump(meta)
    assert isinstance(before, bytes)
    b_claim = b.claim(TP0)
    a.client.restore(meta, 0, before, replace=True)
    c_claim = c.claim(TP0)
    assert codec.epoch_claims(c_claim.epoch) == codec.epoch_claims(b_claim.epoch)
    assert _apply(b, b_claim, 0, 10) == "fenced"
    assert _apply(c, c_claim, 0, 10) == "ok"


def test_claim_refreshes_the_ttl_of_every_key() -> None:
    """A claim gives every key of the partition the full TTL, not only meta."""
    store = _store(kind="session", ttl_s=600)
    claim = store.claim(TP0)
    assert _apply(store, claim, 0, 10) == "ok"
    for key in store.keys(TP0).all():
        store.client.expire(key, 5)
    store.claim(TP0)
    present = [k for k in store.keys(TP0).all() if store.client.exists(k)]
    assert {store.client.ttl(k) for k in present} == {600}


def test_touch_keeps_an_owned_partition_alive_and_reports_lost_ones() -> None:
    """touch refreshes every owned key's TTL; a partition whose meta is gone is reported."""
    now = [0.0]
    layout = StateLayout("rill", "g", "tumbling", 100, "final", OPS, 600)
    store = MemoryWindowStore(layout, clock=lambda: now[0])
    claim = store.claim(TP0)
    other: TP = ("orders", 1)
    other_claim = store.claim(other)
    assert _apply(store, claim, 0, 10) == "ok"
    for key in store.keys(TP0).all():
        store.client.expire(key, 5)
    store.client.delete(store.keys(other).meta)
    epochs = {TP0: claim.epoch, other: other_claim.epoch}
    assert store.touch(epochs) == {}, "not due yet"
    now[0] = store.touch_every_s
    assert store.touch(epochs) == {other: "lost"}
    present = [k for k in store.keys(TP0).all() if store.client.exists(k)]
    assert {store.client.ttl(k) for k in present} == {600}


def test_a_claim_behind_kafka_refuses_and_writes_nothing() -> None:
    """A claim expecting more than Redis's outbox sequence raises StateLostError, no write."""
    store = _store()
    with pytest.raises(StateLostError) as lost:
        store.claim(TP0, expect=7)
    assert (lost.value.found, lost.value.expected) == (0, 7)
    assert store.client.keys("*") == []


def test_adopt_goes_on_with_the_outbox_sequence_after_kafkas() -> None:
    """After adopt(seq) the claim succeeds and the next apply's outbox seq is above seq."""
    store = _store()
    with pytest.raises(StateLostError):
        store.claim(TP0, expect=7)
    assert store.adopt(TP0, 7) == 0
    claim = store.claim(TP0, expect=7)
    assert claim.seq == 7
    delta = Delta("k", 0, 100, [1, 1])
    reply = store.apply({TP0: ApplyCall(claim.epoch, 0, 0, 10, 0, -1, [delta])})[TP0]
    assert reply.seq == 8


def test_changed_aggregates_with_open_windows_are_refused_at_claim() -> None:
    """Other ops over open state: claim raises StateLayoutError naming the settings and fix."""
    server = fakeredis.FakeServer()
    store = _store(server)
    assert _apply(store, store.claim(TP0), 0, 10) == "ok"
    with pytest.raises(StateLayoutError) as refused:
        _store(server, ops=("add", "max", "min")).claim(TP0)
    message = str(refused.value)
    for words in ("RILL_AGGREGATES", "RILL_WINDOW_SIZE_MS", "RILL_REDIS_PREFIX", "drain"):
        assert words in message
    with pytest.raises(StateLayoutError):
        _store(server, size_ms=200).claim(TP0)
    with pytest.raises(StateLayoutError):
        _store(server, kind="hopping").claim(TP0)


def test_a_drained_partition_takes_a_new_layout() -> None:
    """No open window and nothing undelivered: the claim records the new layout."""
    server = fakeredis.FakeServer()
    store = _store(server)
    claim = store.claim(TP0)
    assert _apply(store, claim, 0, 10) == "ok"
    tick = ApplyCall(claim.epoch, -1, -1, 10, 1_000, -1, [])
    reply = store.apply({TP0: tick})[TP0]
    store.ack(TP0, claim.epoch, reply.seq)
    wider = _store(server, ops=("add", "max", "min"))
    wider.claim(TP0)
    meta = wider.client.hget(wider.keys(TP0).meta, "layout")
    assert meta == codec.layout_of(wider.layout).encode()


def test_a_script_error_is_fatal_never_transient() -> None:
    """Components of another layout make the merge fail: FatalError with Redis's message."""
    store = _store()
    claim = store.claim(TP0)
    store.client.hset(store.keys(TP0).state, codec.window_id("k", 0, 100), "not-a-number")
    with pytest.raises(FatalError) as failed:
        _apply(store, claim, 0, 10)
    assert not isinstance(failed.value, StateError)
    assert "script" in str(failed.value)


def test_state_of_the_previous_layout_is_indexed_by_key_at_claim() -> None:
    """Sessions written with per-key sets (no layout in meta) merge after the upgrade."""
    store = _store(kind="session", size_ms=50)
    keys = store.keys(TP0)
    wid = codec.window_id("k", 0, 60)
    store.client.hset(keys.meta, mapping={"epoch": 4, "applied": 3, "seq": 2})
    store.client.hset(keys.state, wid, "2\x1f9")
    store.client.zadd(keys.index, {wid: 60})
    claim = store.claim(TP0)
    assert codec.epoch_claims(claim.epoch) == 5, "above the earlier epoch"
    assert claim.seq == 2
    delta = Delta("k", 40, 90, [1, 4])
    store.apply({TP0: ApplyCall(claim.epoch, 4, 4, 40, 0, -1, [delta])})
    assert store.load_state(TP0) == {("k", 0, 90): [3, 9]}


@pytest.mark.parametrize("kind", ["tumbling", "hopping", "sliding", "session"])
def test_every_key_the_scripts_leave_was_in_their_keys(kind: str) -> None:
    """After claims, applies, ticks, acks and touches, every key present was in KEYS."""
    store = _store(kind=kind)
    claim = store.claim(TP0)
    for offset, key in enumerate(["a", "b|c", "ü", "{x}"]):
        assert _apply(store, claim, offset, 10 + 30 * offset, key) == "ok"
    store.touch({TP0: claim.epoch}, force=True)
    reply = store.apply({TP0: ApplyCall(claim.epoch, -1, -1, 120, 120, -1, [])})[TP0]
    store.ack(TP0, claim.epoch, reply.seq)
    present = {k.decode() if isinstance(k, bytes) else k for k in store.client.keys("*")}
    assert present
    assert present <= set(store.keys(TP0).all())


def test_touch_reports_a_partition_another_claim_took_as_fenced() -> None:
    """touch of a partition a newer claim took answers fenced (the worker pauses it and
    claims it again if Kafka still has it here), and refreshes nothing of it."""
    server = fakeredis.FakeServer()
    old, new = _store(server), _store(server)
    old_claim = old.claim(TP0)
    new.claim(TP0)
    assert old.touch({TP0: old_claim.epoch}, force=True) == {TP0: "fenced"}
