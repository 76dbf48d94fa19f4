"""Every byte layout of window state, in one place: what Python and the Lua scripts share.

Pure functions over plain values; no client import. The scripts (`*.lua`) read and write
the same layout, and `tests/unit/test_state_contract.py` proves that they agree.

Key layout (one input partition; every key carries one Cluster hash tag, so a script
touches a single slot, and every key a script touches is in its KEYS)::

    <prefix>:{<group>:<topic>:<partition>}:meta     hash: epoch, claims, layout, applied,
                                                    max_ts, wm, seq
    <prefix>:{<group>:<topic>:<partition>}:idx      zset: window id -> end (close time);
                                                    sliding: "x|<id>" -> time to evict
    <prefix>:{<group>:<topic>:<partition>}:state    hash: window id -> components
    <prefix>:{<group>:<topic>:<partition>}:outbox   hash: "<seq>:o" -> rows (JSON),
                                                          "<seq>:l" -> DLQ entries (JSON),
                                                          "<seq>:r" -> outputs (JSON)
    <prefix>:{<group>:<topic>:<partition>}:bykey    zset (all scores 0, read by lex range):
                                                    "<len>:<key>|<start:ordered>|<window id>"
                                                    (sessions, sliding buckets)
    <prefix>:{<group>:<topic>:<partition>}:seen     zset: dedupe id -> expiry time (ms):
                                                    the ids a de-duplicating pipeline kept

A window id is `<start>|<end>|<key>`: the key comes last, so it may hold any character.
A count window's is `<first offset>|<first item>|<key>` (`processing/count_windows.py`),
and its idx score is `+inf` until it holds its count, then `-inf` (closed at once).
Components are joined by the unit separator (0x1F); floats are written with `repr`, so
they round-trip exactly, integers as plain digits (exact at any size: the scripts add and
compare them as decimal text, prelude.lua). First/last components are
`<ts:ordered><offset:016d><json value>`, so comparing the strings orders them by (event
time, offset).

Ownership: `claims` counts the claims of the partition; `epoch` is the last claim's
`claims * 2**24 + token`, the token random per claim. A claim that Redis forgot (a
failover lost it) is told apart from a newer owner's: the script answers `lost` when the
meta hash is gone or its `claims` is below the caller's, `fenced` otherwise; a claim
number issued again after such a loss carries another token, so it fences the first.
`layout` names the aggregate layout the state was written with (`layout_of`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

import orjson

from service.processing.dlq import reason_of
from service.records import TP, DlqEntry, OutRecord
from service.window_state import (
    NO_TIME,
    ORDERED_TIME_CHARS,
    ApplyCall,
    ApplyReply,
    Claim,
    Component,
    Op,
    OutboxEntry,
    WindowRow,
    ordered_time,
)

SEP: Final = "\x1f"
TOKEN_BITS: Final = 24
LAYOUT_VERSION: Final = "2"
EVICT_MARK: Final = "x|"
ROWS_PART: Final = "o"
DLQ_PART: Final = "l"
OUTPUTS_PART: Final = "r"
NUMERIC_OPS: Final = frozenset({"add", "min", "max"})
_TAG_UNSAFE = re.compile(r"[{}]")
_INTEGER = re.compile(r"-?[0-9]+")
_WINDOW_ID = re.compile(r"^(-?\d+)\|(-?\d+)\|(.*)$", re.DOTALL)


# --- components -------------------------------------------------------------------------


def encode_components(comps: Sequence[Component]) -> str:
    """Components as one string for the script.

    Floats are written with `repr` (round-trips exactly, and always has a `.`, an `e` or
    is inf/nan); ints as plain digits, so the scripts keep them exact integers.
    """
    return SEP.join(c if isinstance(c, str) else repr(c) for c in comps)


def decode_components(ops: Sequence[Op], text: str) -> list[Component]:
    """The inverse of `encode_components`: numeric ops give ints (plain digits) or
    floats, the others text."""
    return _components([op in NUMERIC_OPS for op in ops], text)


def _components(numeric: Sequence[bool], text: str) -> list[Component]:
    """Decode components given which of them are numbers (per window, the hot path)."""
    integer = _INTEGER.fullmatch
    return [
        (int(p) if integer(p) else float(p)) if n else p
        for n, p in zip(numeric, text.split(SEP), strict=True)
    ]


# --- window ids ---------------------------------------------------------------------------


def window_id(key: str, start: int, end: int) -> str:
    """The id of a window in `state` and `idx` (the scripts' `wid_of`)."""
    return f"{start}|{end}|{key}"


def parse_window_id(wid: str | bytes) -> tuple[str, int, int]:
    """(key, start, end) of a window id (the scripts' `parse_wid`).

    Raises:
        ValueError: not a window id.
    """
    found = _WINDOW_ID.match(_text(wid))
    if found is None:
        raise ValueError(f"not a window id: {wid!r}")
    return found.group(3), int(found.group(1)), int(found.group(2))


# --- key layout ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """The keys of one input partition's state.

    Attributes:
        meta: hash with epoch, claims, layout, applied offset, max event time,
            watermark, outbox seq.
        index: sorted set of window ids by the time they close.
        state: hash of window id -> aggregate components.
        outbox: hash of outbox entries not yet acknowledged.
        by_key: sorted set of each record key's windows by start (sessions, sliding
            buckets), read by lex range (`by_key_member`).
        seen: sorted set of the dedupe ids kept, scored by the time they expire.
    """

    meta: str
    index: str
    state: str
    outbox: str
    by_key: str
    seen: str

    def all(self) -> list[str]:
        """Every key, in the order the claim and apply scripts take them (their KEYS)."""
        return [self.meta, self.index, self.state, self.outbox, self.by_key, self.seen]


def by_key_member(key: str, start: int, wid: str) -> str:
    """A window's member of the `bykey` set (the scripts' `by_key_member`).

    `<byte length>:<key>|` comes first, so one key's members are one lex range and no key
    is a prefix of another's range; the start is `ordered_time`, so a lex range is a time
    range.
    """
    return f"{len(key.encode())}:{key}|{ordered_time(start)}|{wid}"


def parse_by_key_member(member: str | bytes) -> tuple[str, int, str]:
    """(record key, start, window id) of a `bykey` member.

    Raises:
        ValueError: not a `bykey` member.
    """
    raw = member if isinstance(member, bytes) else member.encode()
    length, sep, rest = raw.partition(b":")
    if not sep or not length.isdigit():
        raise ValueError(f"not a bykey member: {member!r}")
    n = int(length)
    key, tail = rest[:n].decode(), rest[n:].decode()
    start_text, wid = tail[1 : 1 + ORDERED_TIME_CHARS], tail[2 + ORDERED_TIME_CHARS :]
    start = int(start_text) if start_text[0] != "-" else int(start_text[1:]) - 10**15
    return key, start, wid


def partition_keys(prefix: str, group: str, topic: str, partition: int) -> PartitionKeys:
    """Keys of (group, topic, partition) under `prefix`, all in one hash slot.

    The tag is `{group:topic:partition}`; braces in names are replaced so the tag
    always ends where it should.
    """
    tag = _TAG_UNSAFE.sub("_", f"{group}:{topic}:{partition}")
    base = f"{_TAG_UNSAFE.sub('_', prefix)}:{{{tag}}}:"
    return PartitionKeys(
        f"{base}meta",
        f"{base}idx",
        f"{base}state",
        f"{base}outbox",
        f"{base}bykey",
        f"{base}seen",
    )


@dataclass(frozen=True, slots=True)
class StateLayout:
    """Where a worker's window state lives and what the scripts need to know of it.

    Attributes:
        prefix / group: the first parts of every key.
        kind: the window kind (tumbling, hopping, sliding, session, count_tumbling,
            count_hopping).
        size_ms: the window size (the script needs it for sliding windows); of count
            windows, the records per window (the script closes a window that holds them).
        emit: `final` (closed windows only) or `update` (every change).
        ops: the merge operation of each component.
        ttl_s: safety TTL on every key.
        advance: of count_hopping windows, the records between two windows' starts.
    """

    prefix: str
    group: str
    kind: str
    size_ms: int
    emit: str
    ops: tuple[Op, ...]
    ttl_s: int
    advance: int = 0

    def keys(self, tp: TP) -> PartitionKeys:
        """The keys of one input partition."""
        return partition_keys(self.prefix, self.group, tp[0], tp[1])


def layout_of(layout: StateLayout) -> str:
    """What the state's bytes depend on, as the claim script records it in `meta`.

    The components (ops), the window kind and size: state written under one layout is
    wrong under another (a merge of other components, windows of another size), so a
    claim that finds another layout with windows open refuses (`describe_layout`). Of
    count windows, `size_ms` is the records per window, and count_hopping adds the
    advance (the open windows of a key are spaced by it).
    """
    ops = ",".join(layout.ops)
    text = f"v{LAYOUT_VERSION};kind={layout.kind};size_ms={layout.size_ms};ops={ops}"
    return f"{text};advance={layout.advance}" if layout.kind == "count_hopping" else text


def describe_layout(text: str) -> str:
    """A recorded layout in the settings' words (for the mismatch message)."""
    parts = dict(p.partition("=")[::2] for p in text.split(";") if "=" in p)
    ops = parts.get("ops", "?")
    kind = parts.get("kind", "?")
    if kind.startswith("count_"):
        advance = f", RILL_WINDOW_COUNT_ADVANCE={parts['advance']}" if "advance" in parts else ""
        return (
            f"RILL_WINDOW_TYPE={kind}, RILL_WINDOW_COUNT={parts.get('size_ms', '?')}{advance}, "
            f"aggregate components [{ops}]"
        )
    return (
        f"RILL_WINDOW_TYPE={parts.get('kind', '?')}, "
        f"RILL_WINDOW_SIZE_MS={parts.get('size_ms', '?')}, aggregate components [{ops}]"
    )


# group_by's source marks in meta: `src:<input partition>` -> highest source position.
MARK_PREFIX = "src:"


def claim_argv(layout: StateLayout, token: int, expect_seq: int) -> list[str | int]:
    """ARGV of claim.lua (see its header for the order)."""
    return [layout.ttl_s, token, layout_of(layout), expect_seq]


def epoch_claims(epoch: int) -> int:
    """The claim number of an epoch (`claims` in meta when it was issued)."""
    return epoch >> TOKEN_BITS


# --- script arguments ---------------------------------------------------------------------


def apply_argv(layout: StateLayout, call: ApplyCall) -> list[str | int]:
    """ARGV of apply.lua (see its header for the order)."""
    argv: list[str | int] = [
        call.epoch,
        epoch_claims(call.epoch),
        call.first_offset,
        call.last_offset,
        call.max_ts,
        call.watermark,
        layout.kind,
        layout.size_ms,
        layout.emit,
        ",".join(layout.ops),
        layout.ttl_s,
        call.ack_seq,
        encode_dlq_entries(call.dlq).decode() if call.dlq else "",
        call.seq,
        encode_seen(call.seen),
        call.trim_ms,
        encode_outputs(call.outputs).decode() if call.outputs else "",
        ",".join(f"{src}={pos}" for src, pos in sorted(call.marks.items())),
    ]
    for d in call.deltas:
        argv.extend((d.key, d.start, d.end, encode_components(d.comps)))
    return argv


# --- outbox -------------------------------------------------------------------------------


def encode_seen(ids: Mapping[str, int]) -> str:
    """Dedupe ids with their expiry times for apply.lua: a JSON list `[id, expiry, ...]`
    (an id may hold any character)."""
    flat: list[str | int] = []
    for name, expiry in ids.items():
        flat.extend((name, expiry))
    return orjson.dumps(flat).decode() if flat else ""


def decode_seen(ids: Sequence[str], scores: Sequence[Any]) -> dict[str, int]:
    """ZMSCORE's answer for `ids`: the expiry time of each id remembered."""
    return {
        name: int(float(score))
        for name, score in zip(ids, scores, strict=True)
        if score is not None
    }


def encode_outputs(records: Iterable[OutRecord]) -> bytes:
    """A stateless batch's outputs as one outbox blob: JSON `[topic, key, value,
    headers]` lists, bytes in base64."""
    return orjson.dumps(
        [
            [
                r.topic,
                _b64(r.key),
                _b64(r.value),
                None if r.headers is None else [[k, _b64(v)] for k, v in r.headers],
            ]
            for r in records
        ]
    )


def decode_outputs(blob: bytes | str) -> list[OutRecord]:
    """The inverse of `encode_outputs`."""
    if not blob:
        return []
    out = []
    for topic, key, value, headers in orjson.loads(blob):
        hdrs = None if headers is None else [(k, _unb64(v)) for k, v in headers]
        out.append(OutRecord(topic, _unb64(key), _unb64(value), hdrs))
    return out


def outbox_field(seq: int, part: str) -> str:
    """The outbox hash field of entry `seq`: `<seq>:o` (rows), `<seq>:l` (DLQ entries) or
    `<seq>:r` (a stateless pipeline's outputs)."""
    return f"{seq}:{part}"


def parse_outbox_field(name: str | bytes) -> tuple[int, str]:
    """(seq, part) of an outbox hash field.

    Raises:
        ValueError: not an outbox field.
    """
    seq, sep, part = _text(name).partition(":")
    if not sep or part not in (ROWS_PART, DLQ_PART, OUTPUTS_PART):
        raise ValueError(f"not an outbox field: {name!r}")
    return int(seq), part


_DLQ_FIELDS = tuple(f.name for f in fields(DlqEntry))
_BYTES_FIELDS = frozenset({"key", "value"})


def encode_dlq_entries(entries: Iterable[DlqEntry]) -> bytes:
    """DLQ entries as one outbox blob: a JSON list of objects, bytes in base64."""
    out = []
    for entry in entries:
        item: dict[str, Any] = {name: getattr(entry, name) for name in _DLQ_FIELDS}
        item["key"] = _b64(entry.key)
        item["value"] = _b64(entry.value)
        item["headers"] = (
            None if entry.headers is None else [[k, _b64(v)] for k, v in entry.headers]
        )
        out.append(item)
    return orjson.dumps(out)


def decode_dlq_entries(blob: bytes | str) -> list[DlqEntry]:
    """The inverse of `encode_dlq_entries`.

    An entry written before DLQ entries were structured (a `[topic, key, value,
    headers]` list, its reason in `rill.*` headers) is read too, so an outbox left by
    the previous version still drains after an upgrade.
    """
    if not blob:
        return []
    entries = []
    for item in orjson.loads(blob):
        if isinstance(item, list):
            entries.append(_legacy_entry(item))
            continue
        known = {k: v for k, v in item.items() if k in _DLQ_FIELDS}
        for name in _BYTES_FIELDS:
            known[name] = _unb64(known.get(name))
        headers = known.get("headers")
        known["headers"] = None if headers is None else [(k, _unb64(v)) for k, v in headers]
        origin = known.get("origin")
        known["origin"] = None if origin is None else (str(origin[0]), int(origin[1]))
        entries.append(DlqEntry(**known))
    return entries


def _legacy_entry(item: list[Any]) -> DlqEntry:
    topic, key, value, raw_headers = item
    headers = [(k, _unb64(v)) for k, v in raw_headers]
    reason = reason_of(headers)

    def number(name: str) -> int:
        text = reason.get(name, "")
        return int(text) if text.lstrip("-").isdigit() else -1

    return DlqEntry(
        topic,
        _unb64(key),
        _unb64(value),
        headers,
        reason.get("rill.error.stage", "late"),
        reason.get("rill.error.class", ""),
        reason.get("rill.error.message", ""),
        max(number("rill.error.attempts"), 1),
        max(number("rill.error.timestamp"), 0),
        reason.get("rill.source.topic", ""),
        number("rill.source.partition"),
        number("rill.source.offset"),
    )


# --- script replies -----------------------------------------------------------------------


def decode_rows(ops: Sequence[Op], flat: Sequence[Any]) -> list[WindowRow]:
    """Window rows from the scripts' flat `tag, key, start, end, comps, ...` list.

    The tag is `c` for a closed window, `u` for an update; start and end are written
    with `%.17g`, so they may read as floats.
    """
    texts = [x.decode() if type(x) is bytes else x for x in flat]
    numeric = [op in NUMERIC_OPS for op in ops]
    rows = []
    for i in range(0, len(texts), 5):
        tag, key, start, end, comps = texts[i : i + 5]
        rows.append(
            WindowRow(tag == "c", key, _whole(start), _whole(end), _components(numeric, comps))
        )
    return rows


def _whole(text: str) -> int:
    """A `%.17g` number that is whole (plain digits unless it is very large)."""
    return int(text) if _INTEGER.fullmatch(text) else int(float(text))


def decode_applied(ops: Sequence[Op], reply: Sequence[Any]) -> ApplyReply:
    """The apply script's reply.

    `{'ok', seq, watermark, applied, rows, open windows}`, `{'stale', applied, seq}`,
    `{'fenced', epoch}` (a newer claim owns it) or `{'lost'}` (the partition's state, or
    the caller's claim, is gone from Redis).
    """
    status = _text(reply[0])
    if status == "stale":
        return ApplyReply(
            "stale", applied=int(reply[1]), seq=int(reply[2]) if len(reply) > 2 else 0
        )
    if status == "fenced":
        return ApplyReply("fenced")
    if status == "lost":
        return ApplyReply("lost")
    if status != "ok":
        raise ValueError(f"apply script answered {status!r}")
    return ApplyReply(
        "ok",
        seq=int(reply[1]),
        watermark=_time(reply[2]),
        applied=int(reply[3]),
        rows=decode_rows(ops, reply[4]),
        open_windows=int(reply[5]),
    )


def decode_claim(ops: Sequence[Op], reply: Sequence[Any]) -> Claim:
    """The claim script's `ok` reply after its status: `{epoch, applied, max_ts, wm, seq,
    HGETALL outbox, marks}` (marks: group_by's source marks, `src:<partition>`, value)."""
    epoch, applied, max_ts, wm, seq, flat, *rest = reply
    marks = rest[0] if rest else []
    return Claim(
        epoch=int(epoch),
        applied=int(applied),
        max_ts=_time(max_ts),
        watermark=_time(wm),
        outbox=decode_outbox(ops, dict(zip(flat[::2], flat[1::2], strict=True))),
        seq=int(seq),
        marks={
            int(_text(name)[len(MARK_PREFIX) :]): int(_text(pos))
            for name, pos in zip(marks[::2], marks[1::2], strict=True)
        },
    )


def decode_outbox(ops: Sequence[Op], raw: Mapping[Any, Any]) -> list[OutboxEntry]:
    """Outbox hash fields -> entries, by sequence number."""
    rows: dict[int, list[WindowRow]] = {}
    dlq: dict[int, list[DlqEntry]] = {}
    outputs: dict[int, list[OutRecord]] = {}
    for name, value in raw.items():
        seq, part = parse_outbox_field(name)
        if part == ROWS_PART:
            rows[seq] = decode_rows(ops, orjson.loads(value))
        elif part == OUTPUTS_PART:
            outputs[seq] = decode_outputs(value)
        else:
            dlq[seq] = decode_dlq_entries(value)
    return [
        OutboxEntry(seq, rows.get(seq, []), dlq.get(seq, []), outputs.get(seq, []))
        for seq in sorted({*rows, *dlq, *outputs})
    ]


def decode_state(
    ops: Sequence[Op], raw: Mapping[Any, Any]
) -> dict[tuple[str, int, int], list[Component]]:
    """The state hash: window id -> components, as (key, start, end) -> components."""
    return {parse_window_id(wid): decode_components(ops, _text(text)) for wid, text in raw.items()}


def _time(value: Any) -> int:
    text = _text(value)
    return int(float(text)) if text else NO_TIME


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)
