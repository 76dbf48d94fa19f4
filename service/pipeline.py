"""The Python API: a pipeline is a list of steps over decoded records.

    from service import Pipeline

    app = (
        Pipeline("big-orders")
        .filter(lambda order: order["amount"] > 100)
        .key_by(lambda order: order["customer_id"])
        .map(lambda order: {**order, "amount_cents": int(order["amount"] * 100)})
    )

Run it with `RILL_APP=mymodule:app rill run`. The declarative settings build the same
object (`processing.steps.declarative_pipeline`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

StepKind: TypeAlias = Literal["map", "filter", "key_by", "flat_map"]
StepFn: TypeAlias = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Step:
    """One named step: what it does to a record depends on its kind.

    - map: record -> record
    - filter: record -> bool (False drops the record, counted as filtered)
    - key_by: record -> key (the output key; None is an error)
    - flat_map: record -> iterable of records
    """

    kind: StepKind
    fn: StepFn
    name: str


class Pipeline:
    """An ordered list of steps; each method appends one and returns the pipeline."""

    def __init__(self, name: str = "pipeline") -> None:
        self.name = name
        self.steps: list[Step] = []

    def _add(self, kind: StepKind, fn: StepFn, name: str | None) -> Pipeline:
        label = name or getattr(fn, "__name__", kind)
        self.steps.append(Step(kind, fn, f"{kind}:{label}"))
        return self

    def map(self, fn: Callable[[Any], Any], name: str | None = None) -> Pipeline:
        """Replace each record by fn(record)."""
        return self._add("map", fn, name)

    def filter(self, fn: Callable[[Any], bool], name: str | None = None) -> Pipeline:
        """Keep records for which fn(record) is true."""
        return self._add("filter", fn, name)

    def key_by(self, fn: Callable[[Any], Any], name: str | None = None) -> Pipeline:
        """Set the output key to fn(record)."""
        return self._add("key_by", fn, name)

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], name: str | None = None) -> Pipeline:
        """Replace each record by zero or more records."""
        return self._add("flat_map", fn, name)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={[s.name for s in self.steps]})"
