"""The Python API: steps in order, windows and reducers checked when built."""

from __future__ import annotations

import pytest

from service.errors import ConfigError
from service.pipeline import Pipeline


def test_steps_are_named_and_ordered() -> None:
    """Each method appends one named step."""
    p = Pipeline().filter(bool, name="nonempty").map(dict).key_by(len).flat_map(list)
    assert [s.name for s in p.steps] == [
        "filter:nonempty",
        "map:dict",
        "key_by:len",
        "flat_map:list",
    ]


def test_reduce_needs_a_tumbling_or_hopping_window() -> None:
    """reduce() without a window, or on sessions, fails when the pipeline is built."""
    with pytest.raises(ConfigError, match="window"):
        Pipeline().reduce("x", list, lambda a, r: a)
    with pytest.raises(ConfigError, match="session"):
        Pipeline().window("session", gap_ms=10).reduce("x", list, lambda a, r: a)
    plan = (
        Pipeline()
        .window("hopping", size_ms=10, advance_ms=5)
        .reduce("x", list, lambda a, r: a)
        .window_plan
    )
    assert plan is not None
    assert [a.name for a in plan.aggregations] == ["count", "x"]
