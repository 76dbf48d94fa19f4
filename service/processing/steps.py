"""The declarative pipeline's steps, built from settings as plain functions
(`pipeline.declarative_pipeline` puts them in a Pipeline)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from service.errors import RecordError

_MISSING = object()

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "in": lambda got, want: got in want,
    "not_in": lambda got, want: got not in want,
}


def _field(record: Any, name: str, purpose: str) -> Any:
    try:
        return record[name]
    except (KeyError, TypeError, IndexError):
        raise RecordError("transform", f"{purpose} field {name!r} is missing") from None


def make_filter(field: str, op: str, value: Any) -> Callable[[Any], bool]:
    """Keep records whose `field` compares true to `value` with `op`."""
    if op == "exists":
        return lambda record: isinstance(record, dict) and record.get(field) is not None
    compare = _COMPARE[op]

    def field_filter(record: Any) -> bool:
        got = _field(record, field, "filter")
        try:
            return compare(got, value)
        except TypeError as exc:
            raise RecordError("transform", f"filter on {field!r}: {exc}") from exc

    return field_filter


def make_key_by(field: str) -> Callable[[Any], Any]:
    """Key each record by one of its fields."""

    def key_by_field(record: Any) -> Any:
        return _field(record, field, "key")

    return key_by_field


def make_project(
    fields: list[str], rename: dict[str, str] | None = None
) -> Callable[[Any], dict[str, Any]]:
    """Keep only `fields`, in that order, renamed by `rename`; a missing one is an error."""
    pairs = [(name, (rename or {}).get(name, name)) for name in fields]

    def project(record: Any) -> dict[str, Any]:
        try:
            return {out: record[name] for name, out in pairs}
        except (KeyError, TypeError, IndexError):
            for name, _ in pairs:
                _field(record, name, "project")  # raises, naming the missing field
            raise

    return project


def make_rename(mapping: dict[str, str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Rename fields by `mapping` (old -> new), keeping their order."""

    def rename(record: dict[str, Any]) -> dict[str, Any]:
        return {mapping.get(name, name): value for name, value in record.items()}

    return rename
