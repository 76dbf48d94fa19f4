"""Enrichment from a table: the join of one record with its table row, as pure functions.

The table is a compacted topic materialized in Redis (`state.table_store`); the runtime
looks up a batch's distinct keys in one round trip and hands the rows here as plain bytes
(`Rows`). The table's values are decoded here, with the table's serde, so a row that
cannot be decoded is the joined record's DLQ entry (stage `join`), like any bad record.

- the key: `JoinPlan.key(record)` (a field of the record, or a Python function), as text
  (UTF-8 bytes), equals the table record's Kafka key; None means "no key": no row;
- a row found: the decoded row goes into the record under `as_`, or, with `as_` None,
  its fields are merged into the record (the record's own fields win);
- no row: `left` goes on with `record[as_] = None` (merged: nothing added); `inner`
  sends the record to the DLQ (stage `join`) or drops it (`missing="drop"`), counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from service.errors import RecordError
from service.serde import Serde

JoinKind: TypeAlias = Literal["inner", "left"]
Missing: TypeAlias = Literal["dlq", "drop"]
# A batch's table rows: the table key -> the value bytes in the table (absent: no row).
Rows: TypeAlias = Mapping[bytes, bytes]


@dataclass(frozen=True, slots=True)
class JoinPlan:
    """How records are joined with the table.

    Attributes:
        topic: the table's (compacted) topic.
        key: record -> the table key (any value; text of it is compared), or None.
        decoder: the table values' serde (None until `app.build_plan` gives the
            configured one).
        kind: inner or left.
        missing: inner join without a row: `dlq` or `drop`.
        as_: the field the row goes into; None: merged into the record.
        key_name: how errors name the key expression (the field, or the function).
        resolver: with the registry wire format, what fills the decoder's schema cache
            (held here so the runtime finds it; never called by the pure functions).
    """

    topic: str
    key: Callable[[Any], Any]
    decoder: Serde | None = None
    kind: JoinKind = "inner"
    missing: Missing = "dlq"
    as_: str | None = "table"
    key_name: str = "key"
    resolver: Any = None


class Dropped:
    """What `join_record` returns for a record an inner join drops (no row)."""


DROPPED = Dropped()


def key_text(value: Any) -> bytes | None:
    """A key expression's value as the table's Kafka key: text as UTF-8, bytes as they are."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()


def table_key(join: JoinPlan, record: Any) -> bytes | None:
    """The table key of a decoded record (None: it has none, so no row).

    Raises:
        RecordError: stage `join`: the key expression failed (a missing field, or the
            function raised).
    """
    try:
        return key_text(join.key(record))
    except RecordError:
        raise
    except Exception as exc:  # user code may raise anything: it becomes a DLQ entry
        raise RecordError(
            "join", f"table key {join.key_name}: {type(exc).__name__}: {exc}"
        ) from exc


def distinct_keys(keys: Iterable[bytes | None]) -> list[bytes]:
    """A batch's keys to look up, each once, in first-seen order."""
    return list(dict.fromkeys(k for k in keys if k is not None))


def join_record(join: JoinPlan, record: Any, key: bytes | None, rows: Rows) -> Any:
    """The record joined with its row (see the module's rules), or `DROPPED`.

    Raises:
        RecordError: stage `join`: inner join without a row (`missing="dlq"`), a row
            that cannot be decoded, or a record that is not a mapping.
    """
    raw = rows.get(key) if key is not None else None
    if raw is None or key is None:
        if join.kind == "left":
            return merged(join, record, None)
        if join.missing == "drop":
            return DROPPED
        shown = key.decode("utf-8", "replace") if key is not None else None
        raise RecordError("join", f"no row in table {join.topic!r} for key {shown!r}")
    assert join.decoder is not None, "app.build_plan gives every join its decoder"
    try:
        row = join.decoder.decode(raw)
    except RecordError as exc:
        raise RecordError(
            "join",
            f"the row of key {key.decode('utf-8', 'replace')!r} in table {join.topic!r} "
            f"cannot be decoded: {exc}",
        ) from exc
    return merged(join, record, row)


def merged(join: JoinPlan, record: Any, row: Any) -> Any:
    """The record with the row under `as_`, or its fields merged in (the record's win)."""
    if not isinstance(record, dict):
        raise RecordError(
            "join", f"a record joined with a table must be a mapping, not {type(record).__name__}"
        )
    if join.as_ is not None:
        return {**record, join.as_: row}
    if row is None:
        return record
    if not isinstance(row, dict):
        raise RecordError(
            "join",
            f"table {join.topic!r}: a merged row must be a mapping, not {type(row).__name__}",
        )
    return {**row, **record}


def field_key(name: str) -> Callable[[Any], Any]:
    """The key expression of RILL_TABLE_KEY_FIELD: one field of the record."""

    def key_field(record: Any) -> Any:
        try:
            return record[name]
        except (KeyError, TypeError, IndexError):
            raise RecordError("join", f"table key field {name!r} is missing") from None

    return key_field
