"""The Python API: steps in order, windows and reducers checked when built."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import load_settings
from service.errors import ConfigError
from service.pipeline import Pipeline
from service.processing.windows import WindowSpec


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


@pytest.mark.parametrize(
    ("kind", "arguments", "named"),
    [
        ("tumbling", {}, "size_ms"),
        ("sliding", {"size_ms": 0}, "size_ms"),
        ("hopping", {"size_ms": 1000}, "advance_ms"),
        ("hopping", {"size_ms": 1000, "advance_ms": 2000}, "advance_ms"),
        ("session", {}, "gap_ms"),
        ("tumbling", {"size_ms": 10, "grace_ms": -1}, "grace_ms"),
        ("daily", {"size_ms": 10}, "kind"),
        ("tumbling", {"size_ms": 10, "emit": "often"}, "emit"),
        ("tumbling", {"size_ms": 10, "idle_timeout_ms": -1}, "idle_timeout_ms"),
        ("tumbling", {"size_ms": 10, "aggregates": []}, "aggregates"),
        ("tumbling", {"size_ms": 10, "aggregates": ["median:amount"]}, "median"),
        ("tumbling", {"size_ms": 10, "aggregates": ["sum"]}, "sum:amount"),
    ],
)
def test_a_window_that_cannot_assign_records_fails_when_built(
    kind: Any, arguments: dict[str, Any], named: str
) -> None:
    """window() refuses a bad definition at start, naming the argument, not at a record."""
    with pytest.raises(ConfigError, match=f"Pipeline 'p': window\\(\\): .*{named}"):
        Pipeline("p").window(kind, **arguments)


def test_window_spec_is_checked_wherever_it_is_built() -> None:
    """WindowSpec itself refuses a hopping window without an advance (no ZeroDivisionError)."""
    with pytest.raises(ConfigError, match="advance_ms"):
        WindowSpec("hopping", size_ms=1000)
    spec = WindowSpec("hopping", size_ms=1000, advance_ms=500)
    assert spec.assign(1200) == [(500, 1500), (1000, 2000)]


def test_the_settings_and_the_python_api_share_one_window_check() -> None:
    """The env path reports the API's message with RILL_* names in place of arguments."""
    with pytest.raises(ConfigError) as api:
        Pipeline().window("hopping", size_ms=1000)
    with pytest.raises(ConfigError) as env:
        load_settings(window_type="hopping", window_size_ms=1000)
    message = str(api.value).split("window(): ")[1]
    for argument in ("advance_ms", "size_ms"):
        message = message.replace(argument, f"RILL_WINDOW_{argument.upper()}")
    assert message in str(env.value)
