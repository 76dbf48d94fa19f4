"""Exactly-once bookkeeping: offsets carry the outbox sequence they deliver."""

from __future__ import annotations

from service.runtime.ledger import Ledger, outbox_seq, seq_meta


def test_offsets_carry_outbox_sequence_and_tick_partitions_keep_their_position() -> None:
    """Batch partitions commit next offsets; a tick-only partition recommits its position."""
    ledger = Ledger()
    offsets = ledger.offsets({("t", 0): 10}, {("t", 0): 3})
    assert offsets == {("t", 0): (10, "rill-outbox-seq=3")}
    ledger.committed(offsets, {("t", 0): 3})
    ledger.positions[("t", 1)] = 7
    tick = ledger.offsets({}, {("t", 1): 5, ("t", 2): 1})
    assert tick == {("t", 1): (7, "rill-outbox-seq=5")}, "no position known: no offset"
    ledger.committed(tick, {("t", 1): 5, ("t", 2): 1})
    assert ledger.delivered == {("t", 0): 3, ("t", 1): 5, ("t", 2): 1}
    assert ledger.offsets({("t", 0): 12}, {}) == {("t", 0): (12, "rill-outbox-seq=3")}
    ledger.forget([("t", 0)])
    assert ("t", 0) not in ledger.positions


def test_sequence_metadata_round_trip() -> None:
    """Metadata written by rill reads back; anything else reads as 0."""
    assert outbox_seq(seq_meta(42)) == 42
    assert outbox_seq("") == 0
    assert outbox_seq("rill-outbox-seq=x") == 0
    assert outbox_seq("someone else's metadata") == 0
