"""The steps written out as one function do what walking the step list does."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import RecordError
from service.processing.chain import ItemError, Step, chain


def walk(steps: list[Step], key: Any, value: Any) -> list[tuple[Any, Any]]:
    """The rules as a loop over the steps: the reference."""
    for i, step in enumerate(steps):
        if step.kind == "map":
            value = step.fn(value)
        elif step.kind == "filter":
            if not step.fn(value):
                return []
        elif step.kind == "key_by":
            key = step.fn(value)
            if key is None:
                raise RecordError("transform", f"{step.name} gave a null key")
        else:
            out: list[tuple[Any, Any]] = []
            for item in step.fn(value):
                try:
                    out.extend(walk(steps[i + 1 :], key, item))
                except RecordError as exc:
                    out.append((ItemError(exc), item))
            return out
    return [(key, value)]


STEPS = [
    Step("map", lambda v: v * 3 - 1, "triple"),
    Step("map", lambda v: v // 2, "halve"),
    Step("filter", lambda v: v % 3 != 0, "not_three"),
    Step("filter", lambda v: v > -5, "above"),
    Step("key_by", lambda v: None if v % 5 == 0 else f"k{v % 4}", "mod_key"),
    Step("key_by", lambda v: f"x{v}", "plain_key"),
    Step("flat_map", lambda v: range(v % 4), "spread"),
    Step("flat_map", lambda v: [v, v + 1], "pair"),
]


def outcome(fn: Any, *args: Any) -> Any:
    """What fn gives (item errors by their message), or the RecordError it raises."""
    try:
        items = fn(*args)
    except RecordError as exc:
        return ("RecordError", str(exc))
    return [(("item", str(k.error)) if isinstance(k, ItemError) else k, v) for k, v in items]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(STEPS), max_size=7), st.integers(-50, 50))
def test_the_chain_does_what_the_walk_does(steps: list[Step], value: int) -> None:
    """Outputs, filtered records, null keys and item errors after a flat_map all match."""
    assert outcome(chain(steps), b"k", value) == outcome(walk, steps, b"k", value)


def test_an_item_a_later_step_refuses_goes_alone() -> None:
    """After a flat_map, an item without a key is an ItemError; its siblings go on."""
    run = chain([STEPS[6], STEPS[4]])  # spread, then mod_key (0 has no key)
    out = run(None, 3)  # items 0, 1, 2
    assert isinstance(out[0][0], ItemError)
    assert out[1:] == [("k1", 1), ("k2", 2)]


def test_a_null_key_before_any_flat_map_fails_the_record() -> None:
    """A key_by giving None is a RecordError naming the step."""
    with pytest.raises(RecordError, match="mod_key gave a null key"):
        chain([STEPS[4]])(None, 10)
