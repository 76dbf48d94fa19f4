"""state.codec: every encoding round-trips, and orders what the scripts compare."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import window_state
from service.processing.dlq import render
from service.records import DlqEntry
from service.state import codec
from service.window_state import NO_TIME, ApplyReply, Op, OutboxEntry, WindowRow

OPS: tuple[Op, ...] = ("add", "min", "max", "first", "last", "set")
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
blobs = st.none() | st.binary(max_size=20)
entries = st.builds(
    DlqEntry,
    topic=text,
    key=blobs,
    value=blobs,
    headers=st.none() | st.lists(st.tuples(text, blobs), max_size=3),
    stage=st.sampled_from(["decode", "transform", "encode", "late", "produce"]),
    error_class=text,
    message=text,
    attempts=st.integers(1, 10),
    timestamp_ms=st.integers(0, 2**50),
    source_topic=text,
    source_partition=st.integers(-1, 1000),
    source_offset=st.integers(-1, 2**40),
)


@given(st.lists(entries, max_size=4))
def test_dlq_entries_round_trip_with_every_field(batch: list[DlqEntry]) -> None:
    """A DLQ blob decodes to the very entries encoded: bytes, None and headers included."""
    assert codec.decode_dlq_entries(codec.encode_dlq_entries(batch)) == batch


def test_an_empty_dlq_blob_is_no_entries() -> None:
    """The script stores no `:l` field for an empty blob; reading '' gives no entries."""
    assert codec.decode_dlq_entries(b"") == []


def test_a_dlq_blob_of_the_previous_version_still_decodes() -> None:
    """A `[topic, key, value, headers]` entry (reason in rill.* headers) reads as an entry."""
    entry = DlqEntry("late", b"k", b"v", [("trace", b"1")], "late", "RecordError", "behind",
                     1, 9, "orders", 2, 41)  # fmt: skip
    old = render(entry, "0.1.0")

    def b64(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode()

    blob = orjson.dumps(
        [[old.topic, b64(old.key), b64(old.value), [[k, b64(v)] for k, v in old.headers or []]]]
    )
    [got] = codec.decode_dlq_entries(blob)
    assert (got.topic, got.key, got.value) == ("late", b"k", b"v")
    assert (got.stage, got.error_class, got.message) == ("late", "RecordError", "behind")
    assert (got.source_topic, got.source_partition, got.source_offset) == ("orders", 2, 41)
    assert render(got, "0.1.0") == old, "rendered again, it is the same record"


@given(key=text, start=st.integers(-(2**53), 2**53), end=st.integers(-(2**53), 2**53))
def test_window_ids_round_trip_whatever_the_key(key: str, start: int, end: int) -> None:
    """`start|end|key` parses back, with '|' or newlines in the key."""
    assert codec.parse_window_id(codec.window_id(key, start, end)) == (key, start, end)
    assert codec.parse_window_id(codec.window_id(key, start, end).encode()) == (key, start, end)


def test_window_id_puts_start_first() -> None:
    """The layout the scripts parse: start, end, then the key."""
    assert codec.window_id("a|b", 0, 100) == "0|100|a|b"
    with pytest.raises(ValueError, match="not a window id"):
        codec.parse_window_id("x|0|100")


@given(seq=st.integers(0, 2**40), part=st.sampled_from([codec.ROWS_PART, codec.DLQ_PART]))
def test_outbox_fields_round_trip(seq: int, part: str) -> None:
    """`<seq>:o` / `<seq>:l` parse back to (seq, part)."""
    assert codec.parse_outbox_field(codec.outbox_field(seq, part).encode()) == (seq, part)


def test_unknown_outbox_fields_are_refused() -> None:
    """A field that is not `<seq>:o` or `<seq>:l` is a ValueError, not a silent skip."""
    with pytest.raises(ValueError, match="not an outbox field"):
        codec.parse_outbox_field("3:x")


finite = st.floats(allow_nan=False, allow_infinity=False)
sep_free = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=codec.SEP))


@given(
    comps=st.tuples(finite, finite, finite, sep_free, sep_free, sep_free).map(list),
)
def test_components_round_trip_exactly(comps: list[Any]) -> None:
    """Floats come back bit for bit (repr), text as it was."""
    assert codec.decode_components(OPS, codec.encode_components(comps)) == comps


@given(
    a=st.tuples(st.integers(0, 10**15), st.integers(0, 10**15)),
    b=st.tuples(st.integers(0, 10**15), st.integers(0, 10**15)),
    value=st.one_of(st.integers(-(2**63), 2**63 - 1), text, st.none(), st.lists(text, max_size=3)),
)
def test_ordered_components_sort_by_time_then_offset(
    a: tuple[int, int], b: tuple[int, int], value: Any
) -> None:
    """pack_ordered text orders as (event time, offset) and carries the value back."""
    pa, pb = window_state.pack_ordered(*a, value), window_state.pack_ordered(*b, "other")
    assert (pa < pb) == (a < b) or a == b
    assert window_state.unpack_ordered(pa) == value


def test_rows_decode_from_script_replies_and_outbox_json() -> None:
    """The flat `tag,key,start,end,comps` list reads the same as bytes or JSON text."""
    comps = codec.encode_components([2.0, 1.0, 3.0, "a", "b", "c"])
    flat = ["c", "k|1", "0", "1e+02", comps, "u", "k", "-5", "5", comps]
    rows = codec.decode_rows(OPS, flat)
    assert rows == [
        WindowRow(True, "k|1", 0, 100, [2.0, 1.0, 3.0, "a", "b", "c"]),
        WindowRow(False, "k", -5, 5, [2.0, 1.0, 3.0, "a", "b", "c"]),
    ]
    assert codec.decode_rows(OPS, [x.encode() for x in flat]) == rows


def test_apply_replies_decode_per_status() -> None:
    """ok carries seq, clock, applied offset, rows, open windows; stale its applied offset."""
    ok = [b"ok", b"7", b"-4.6116860184273879e+18", b"12", [], 3]
    assert codec.decode_applied(OPS, ok) == ApplyReply("ok", 7, NO_TIME, 12, [], 3)
    assert codec.decode_applied(OPS, [b"stale", b"12"]) == ApplyReply("stale", applied=12)
    assert codec.decode_applied(OPS, [b"fenced", b"4"]) == ApplyReply("fenced")
    with pytest.raises(ValueError, match="answered"):
        codec.decode_applied(OPS, [b"what"])


def test_claim_reply_groups_outbox_fields_by_seq() -> None:
    """Claim: an empty clock is NO_TIME; outbox fields become entries in seq order."""
    entry = DlqEntry("dlq", None, None, None, "late", "RecordError", "m")
    rows = orjson.dumps(["c", "k", "0", "100", codec.encode_components([1.0] * 3 + ["x"] * 3)])
    reply = [b"2", b"-1", b"", b"", b"3", [b"3:l", codec.encode_dlq_entries([entry]), b"1:o", rows]]
    claim = codec.decode_claim(OPS, reply)
    assert (claim.epoch, claim.applied, claim.max_ts, claim.watermark) == (2, -1, NO_TIME, NO_TIME)
    assert claim.seq == 3
    assert claim.outbox == [
        OutboxEntry(1, [WindowRow(True, "k", 0, 100, [1.0] * 3 + ["x"] * 3)], []),
        OutboxEntry(3, [], [entry]),
    ]


def test_layout_names_the_keys_of_a_partition() -> None:
    """StateLayout.keys: the partition's six hash-tagged keys, in the scripts' KEYS order."""
    layout = codec.StateLayout("rill", "g", "session", 0, "final", OPS, 60)
    keys = layout.keys(("orders", 3))
    assert keys.all() == [
        f"rill:{{g:orders:3}}:{name}"
        for name in ("meta", "idx", "state", "outbox", "bykey", "seen")
    ]


@given(
    key=st.text(max_size=12),
    start=st.integers(-(10**15) + 1, 10**16 - 1),
    other=st.integers(-(10**15) + 1, 10**16 - 1),
)
def test_by_key_members_parse_back_and_sort_by_start(key: str, start: int, other: int) -> None:
    """A bykey member gives back its key, start and window id, and sorts by start as text."""
    wid = codec.window_id(key, start, start + 5)
    member = codec.by_key_member(key, start, wid)
    assert codec.parse_by_key_member(member) == (key, start, wid)
    assert codec.parse_by_key_member(member.encode()) == (key, start, wid)
    mine = window_state.ordered_time(start).encode()
    theirs = window_state.ordered_time(other).encode()
    assert (mine < theirs) == (start < other)


def test_a_layout_names_kind_size_and_components() -> None:
    """layout_of records what the state's bytes depend on; describe_layout says it in settings."""
    layout = codec.StateLayout("rill", "g", "session", 500, "final", ("add", "max"), 60)
    text = codec.layout_of(layout)
    assert text == "v2;kind=session;size_ms=500;ops=add,max"
    assert codec.describe_layout(text) == (
        "RILL_WINDOW_TYPE=session, RILL_WINDOW_SIZE_MS=500, aggregate components [add,max]"
    )
    assert codec.layout_of(layout) != codec.layout_of(
        codec.StateLayout("rill", "g", "session", 500, "update", ("add",), 60)
    )


def test_an_integer_beyond_64_bits_packs_without_error() -> None:
    """first/last of a huge integer is packed (read back as a float), not a crash."""
    packed = window_state.pack_ordered(1, 2, {"n": 2**70, 3: "x"})
    assert window_state.unpack_ordered(packed) == {"n": float(2**70), "3": "x"}
