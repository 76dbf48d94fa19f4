"""A pipeline's steps as one function, written out once per pipeline.

Walking the step list for every record (and branching on each step's kind) cost more
than the built-in steps themselves; `chain(steps)` writes the same walk out as
straight-line code for one list of steps and compiles it once, as the aggregate kernels
are (`processing.aggregates`). A record pays only for its steps' own calls.

The rules: `map` replaces the value; `filter` drops the record when false; `key_by`
sets the key (a null key is a RecordError); after a `flat_map` the remaining steps run
on each of its items on their own, and an item they refuse becomes an `ItemError` in
place of its key (that item alone goes to the DLQ, the others go on).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from service.errors import RecordError

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


Items: TypeAlias = list[tuple[Any, Any]]
Chain: TypeAlias = Callable[[Any, Any], Items]


@dataclass(frozen=True, slots=True)
class ItemError:
    """In place of the key of a flat_map item that a later step refused (a null key_by):
    that item alone goes to the DLQ."""

    error: RecordError


def null_key(step: Step) -> RecordError:
    """The error of a key_by step that gave no key."""
    return RecordError("transform", f"{step.name} gave a null key")


def each(rest: Chain, items: Items) -> Items:
    """The steps after a flat_map (`rest`) on each of its items, each on its own."""
    out: Items = []
    for key, value in items:
        try:
            out.extend(rest(key, value))
        except RecordError as exc:
            out.append((ItemError(exc), value))
    return out


def chain(steps: Sequence[Step]) -> Chain:
    """The steps as one function `(key, value) -> [(key, value), ...]` (maybe empty)."""
    scope: dict[str, Any] = {"_steps": tuple(steps), "_null_key": null_key, "_each": each}
    lines = ["def run(key, value):"]
    for i, step in enumerate(steps):
        scope[f"_fn{i}"] = step.fn
        if step.kind == "map":
            lines.append(f"    value = _fn{i}(value)")
        elif step.kind == "filter":
            lines.append(f"    if not _fn{i}(value): return []")
        elif step.kind == "key_by":
            lines += [
                f"    key = _fn{i}(value)",
                f"    if key is None: raise _null_key(_steps[{i}])",
            ]
        else:
            scope[f"_rest{i}"] = chain(steps[i + 1 :])
            lines.append(f"    return _each(_rest{i}, [(key, out) for out in _fn{i}(value)])")
            break
    else:
        lines.append("    return [(key, value)]")
    exec(compile("\n".join(lines), "<rill steps>", "exec"), scope)  # noqa: S102 - generated here
    run: Chain = scope["run"]
    return run
