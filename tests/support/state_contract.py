"""The contract between `state.codec` and the Lua scripts, once: the unit tier checks it
on fakeredis, the integration tier on a real Redis and a real Redis Cluster.

The scripts run through `RedisWindowStore`; what they leave is then read back with the raw
client and parsed with the codec alone: keys, window ids, index and per-key members,
outbox fields, and components merged by the script against `processing.windows.merge`.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from service import window_state
from service.processing.aggregates import merge
from service.records import TP, DlqEntry, OutRecord
from service.state import codec
from service.state.client import RedisClient
from service.state.codec import StateLayout
from service.state.redis_store import RedisWindowStore
from service.window_state import ApplyCall, Claim, Component, Delta, Op

ALL_OPS: tuple[Op, ...] = ("add", "min", "max", "first", "last", "set")
META_FIELDS = {"epoch", "claims", "layout", "applied", "max_ts", "wm", "seq"}
# and group_by's source marks, `src:<input partition>` (check_source_marks)
RECORD_KEYS = ["a", "b|c", "ü k", "{x}"]  # separators, non-ASCII and braces in keys
TP_UNDER_TEST: TP = ("orders{1}", 3)

ENTRY = DlqEntry(
    topic="dlq",
    key=b"\x00key",
    value=None,
    headers=[("h", b"\xff"), ("none", None)],
    stage="late",
    error_class="RecordError",
    message="event time 5 is behind the watermark 50 — ü",
    attempts=2,
    timestamp_ms=1_700_000_000_000,
    source_topic="orders{1}",
    source_partition=3,
    source_offset=4,
)

_SEP_FREE_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=codec.SEP), max_size=12
)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_ORDERED = st.builds(
    window_state.pack_ordered,
    st.integers(0, 10**12),
    st.integers(0, 10**9),
    st.one_of(st.integers(-1000, 1000), _SEP_FREE_TEXT, st.none()),
)
components_st = st.tuples(_FLOATS, _FLOATS, _FLOATS, _ORDERED, _ORDERED, _SEP_FREE_TEXT).map(list)


def _store(client: RedisClient, kind: str, size_ms: int = 60) -> RedisWindowStore:
    layout = StateLayout(
        prefix=f"contract-{uuid.uuid4().hex[:8]}",
        group="g{0}",
        kind=kind,
        size_ms=size_ms,
        emit="final",
        ops=ALL_OPS,
        ttl_s=600,
    )
    return RedisWindowStore(client, layout)


def _comps(n: float) -> list[Component]:
    return [
        n,
        n,
        n,
        window_state.pack_ordered(int(n), 0, n),
        window_state.pack_ordered(int(n), 0, n),
        "s",
    ]


def _call(
    claim: Claim, first: int, last: int, wm: int, deltas: list[Delta], **kw: Any
) -> ApplyCall:
    return ApplyCall(claim.epoch, first, last, max(wm, 0), wm, -1, deltas, **kw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _present(client: RedisClient, store: RedisWindowStore) -> set[str]:
    """Every key under the store's prefix (on a cluster: of every node)."""
    pattern = store.layout.prefix.replace("[", "\\[") + ":*"
    if isinstance(client, RedisCluster):  # KEYS goes to one node unless told otherwise
        return {_text(k) for k in client.keys(pattern, target_nodes=RedisCluster.PRIMARIES)}
    return {_text(k) for k in client.keys(pattern)}


def check_keys_and_members(client: RedisClient, kind: str) -> None:
    """The scripts write exactly the keys the codec names, with members the codec parses;
    every key present is one the scripts were given in KEYS."""
    store = _store(client, kind)
    keys = store.keys(TP_UNDER_TEST)
    claim = store.claim(TP_UNDER_TEST)
    deltas = [Delta(k, 10 * i, 10 * i + 1, _comps(i + 1.0)) for i, k in enumerate(RECORD_KEYS)]
    # The watermark stays below every window: all open, every record key's set in use.
    reply = store.apply({TP_UNDER_TEST: _call(claim, 0, 3, 0, deltas)})[TP_UNDER_TEST]
    assert reply.status == "ok"
    by_key = {keys.by_key} if kind in ("session", "sliding") else set()
    assert _present(client, store) == {keys.meta, keys.index, keys.state, *by_key}
    assert _present(client, store) <= set(keys.all()), "a key the scripts were not given"

    meta = {_text(k): _text(v) for k, v in client.hgetall(keys.meta).items()}
    assert set(meta) <= META_FIELDS
    assert int(meta["epoch"]) == claim.epoch
    assert int(meta["claims"]) == codec.epoch_claims(claim.epoch)
    assert meta["layout"] == codec.layout_of(store.layout)
    assert int(meta["applied"]) == 3

    state = client.hgetall(keys.state)
    for wid in state:
        key, start, end = codec.parse_window_id(wid)
        assert codec.window_id(key, start, end) == _text(wid)
        assert key in RECORD_KEYS
    by_window = codec.decode_state(ALL_OPS, state)
    assert by_window == {(d.key, d.start, d.end): d.comps for d in deltas}

    for member, score in client.zrange(keys.index, 0, -1, withscores=True):
        text = _text(member)
        if text.startswith(codec.EVICT_MARK):  # a sliding bucket's eviction time
            _key, start, _end = codec.parse_window_id(text[len(codec.EVICT_MARK) :])
            assert score == start + store.layout.size_ms
        else:
            _key, _start, end = codec.parse_window_id(text)
            assert score == end

    members = [codec.parse_by_key_member(m) for m in client.zrange(keys.by_key, 0, -1)]
    assert sorted(members) == sorted(
        (d.key, d.start, codec.window_id(d.key, d.start, d.end)) for d in deltas if by_key
    )


def check_outbox(client: RedisClient, kind: str) -> None:
    """Outbox fields are `<seq>:o` rows and `<seq>:l` DLQ entries, as the codec reads them."""
    store = _store(client, kind)
    keys = store.keys(TP_UNDER_TEST)
    claim = store.claim(TP_UNDER_TEST)
    deltas = [Delta(k, 0, 1, _comps(2.0)) for k in RECORD_KEYS]
    # The watermark passes every window (and every sliding bucket): all close.
    call = _call(claim, 0, 4, 10_000, deltas, dlq=[ENTRY])
    reply = store.apply({TP_UNDER_TEST: call})[TP_UNDER_TEST]
    assert reply.status == "ok"
    assert reply.open_windows == 0
    assert _present(client, store) == {keys.meta, keys.outbox}
    assert _present(client, store) <= set(keys.all()), "a key the scripts were not given"

    raw = client.hgetall(keys.outbox)
    assert sorted(codec.parse_outbox_field(f) for f in raw) == [
        (reply.seq, codec.DLQ_PART),
        (reply.seq, codec.ROWS_PART),
    ]
    rows_field = codec.outbox_field(reply.seq, codec.ROWS_PART).encode()
    dlq_field = codec.outbox_field(reply.seq, codec.DLQ_PART).encode()
    assert codec.decode_rows(ALL_OPS, orjson.loads(raw[rows_field])) == reply.rows
    assert codec.decode_dlq_entries(raw[dlq_field]) == [ENTRY]
    size = store.layout.size_ms if kind == "sliding" else 0
    assert {(r.final, r.key, r.start, r.end) for r in reply.rows} == {
        (True, k, 1 - size if size else 0, 1) for k in RECORD_KEYS
    }


def check_source_marks(client: RedisClient) -> None:
    """group_by's source marks: each apply writes its own to meta (`src:<partition>`), and
    the next claim hands every one back as the codec reads it."""
    store = _store(client, "tumbling")
    keys = store.keys(TP_UNDER_TEST)
    claim = store.claim(TP_UNDER_TEST)
    assert claim.marks == {}
    big = 5 * 2**32 + 7  # a position past 2^53: kept exactly, as text
    first = _call(claim, 0, 1, 0, [], marks={0: 5, 3: big})
    reply = store.apply({TP_UNDER_TEST: first})[TP_UNDER_TEST]
    assert reply.status == "ok"
    second = _call(claim, 2, 3, 0, [], marks={0: 9}, seq=reply.seq)
    assert store.apply({TP_UNDER_TEST: second})[TP_UNDER_TEST].status == "ok"
    meta = {_text(k): _text(v) for k, v in client.hgetall(keys.meta).items()}
    assert {k: v for k, v in meta.items() if k.startswith(codec.MARK_PREFIX)} == {
        "src:0": "9",
        "src:3": str(big),
    }
    assert store.claim(TP_UNDER_TEST).marks == {0: 9, 3: big}


def check_script_merge_equals_python(
    client: RedisClient, a: list[Component], b: list[Component]
) -> None:
    """Components merged by the script equal `processing.windows.merge` of the same two."""
    store = _store(client, "tumbling")
    claim = store.claim(TP_UNDER_TEST)
    for offset, comps in enumerate((a, b)):
        call = _call(claim, offset, offset, 0, [Delta("k", 0, 100, comps)])
        assert store.apply({TP_UNDER_TEST: call})[TP_UNDER_TEST].status == "ok"
    expected = merge(ALL_OPS, a, b)
    got = store.load_state(TP_UNDER_TEST)[("k", 0, 100)]
    assert got == codec.decode_components(ALL_OPS, codec.encode_components(expected))


SEEN_IDS = {"a": 100, "b|{x}": 200, "ü id": 300}  # separators, braces, non-ASCII
OUTPUTS = [
    OutRecord("out", b"\x00k", b'{"v":1}', [("h", b"\xff"), ("none", None)]),
    OutRecord("out", None, None),
]


def check_dedupe_ids(client: RedisClient, kind: str) -> None:
    """The `seen` set holds the ids an applied call kept, scored by expiry, trimmed at the
    call's time; a stale or fenced call records none; `<seq>:r` outbox entries (a stateless
    pipeline's outputs) decode as sent and come back with the next claim."""
    store = _store(client, kind)
    keys, tp = store.keys(TP_UNDER_TEST), TP_UNDER_TEST
    claim = store.claim(tp)
    call = _call(claim, 0, 2, 0, [], seen=SEEN_IDS, outputs=OUTPUTS, seq=claim.seq)
    reply = store.apply({tp: call})[tp]
    assert reply.status == "ok"
    assert keys.seen in _present(client, store)
    assert _present(client, store) <= set(keys.all()), "a key the scripts were not given"
    raw = client.zrange(keys.seen, 0, -1, withscores=True)
    assert {_text(m): int(s) for m, s in raw} == SEEN_IDS
    assert store.seen({tp: [*SEEN_IDS, "never"]}) == {tp: SEEN_IDS}
    field = codec.outbox_field(reply.seq, codec.OUTPUTS_PART).encode()
    assert codec.decode_outputs(client.hget(keys.outbox, field) or b"") == OUTPUTS

    # Trimmed at 200: ids expiring at or before it go; the new one is added.
    later = _call(claim, 3, 3, 0, [], seen={"c": 400}, trim_ms=200, seq=reply.seq)
    done = store.apply({tp: later})[tp]
    assert done.status == "ok"
    assert store.seen({tp: [*SEEN_IDS, "c"]}) == {tp: {"ü id": 300, "c": 400}}

    # A replay of the call (its reply lost) is stale and records nothing.
    replay = _call(claim, 3, 3, 0, [], seen={"d": 500}, seq=reply.seq)
    assert store.apply({tp: replay})[tp].status == "stale"
    # A newer claim fences the old owner: its call records nothing either.
    newer = store.claim(tp)
    fenced = _call(claim, 4, 4, 0, [], seen={"e": 600}, seq=done.seq)
    assert store.apply({tp: fenced})[tp].status == "fenced"
    assert store.seen({tp: ["d", "e"]}) == {tp: {}}
    [entry] = [e for e in newer.outbox if e.seq == reply.seq]
    assert entry.outputs == OUTPUTS


def check_count_window_closes_when_full(client: RedisClient, kind: str) -> None:
    """A count window (its last component counts its records) stays open whatever the
    watermark, index score `+inf`, and closes in the apply that brings it to its count
    (`size_ms`), emitted in final mode and gone from the state and index."""
    ops: tuple[Op, ...] = ("add", "max", "add")  # sum, last offset, records
    layout = StateLayout(
        f"contract-{uuid.uuid4().hex[:8]}", "g{0}", kind, 3, "final", ops, 600, advance=1
    )
    store = RedisWindowStore(client, layout)
    keys = store.keys(TP_UNDER_TEST)
    claim = store.claim(TP_UNDER_TEST)
    assert client.hget(keys.meta, "layout") is not None
    partial = _call(claim, 5, 6, 10**15, [Delta("a|b", 5, 0, [10, 6, 2])], seq=claim.seq)
    reply = store.apply({TP_UNDER_TEST: partial})[TP_UNDER_TEST]
    assert (reply.status, reply.rows, reply.open_windows) == ("ok", [], 1)
    wid = codec.window_id("a|b", 5, 0)
    assert client.zscore(keys.index, wid) == float("inf")
    full = _call(claim, 7, 7, 0, [Delta("a|b", 5, 0, [1, 7, 1])], seq=reply.seq)
    reply = store.apply({TP_UNDER_TEST: full})[TP_UNDER_TEST]
    assert reply.status == "ok"
    assert reply.rows == [window_state.WindowRow(True, "a|b", 5, 0, [11, 7, 3])]
    assert reply.open_windows == 0
    assert client.hlen(keys.state) == 0
