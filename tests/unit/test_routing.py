"""Routing: each output's topic from a field or a function, within an allow-list (pure)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from service import app
from service.app import build_plan
from service.config import load_settings
from service.errors import ConfigError, RecordError
from service.pipeline import Pipeline
from service.processing import dlq
from service.processing.batch import Plan, emit, process_batch
from service.processing.routing import Router
from service.processing.windows import WindowResult
from service.records import BatchResult, InRecord
from service.serde import JsonSerde
from service.serde.wire import PlainWire

TOPICS = frozenset({"eu", "us"})
BY_REGION = Router(TOPICS, field="region")


def _plan(pipeline: Pipeline, router: Router | None) -> Plan:
    serde = JsonSerde(PlainWire())
    steps = tuple(pipeline.steps)
    return Plan(serde, serde, steps, "out", "dlq", 10_000, 0, "test", router=router)


def _rec(value: Any, offset: int = 0) -> InRecord:
    return InRecord("in", 0, offset, b"k", json.dumps(value).encode(), None, 0)


def _stage(entry: Any) -> str:
    return dlq.reason_of(dlq.render(entry, "test").headers)[dlq.ERROR_STAGE]


def test_field_names_the_topic() -> None:
    """Each output goes to the topic its route field names."""
    result = process_batch(
        [_rec({"region": "eu"}, 0), _rec({"region": "us"}, 1)], _plan(Pipeline(), BY_REGION), 0
    )
    assert [o.topic for o in result.outputs] == ["eu", "us"]
    assert result.sources == [("in", 0), ("in", 0)]
    assert result.dlq == []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"region": "apac"}, "'apac', not one of RILL_ROUTE_TOPICS (eu, us)"),
        ({"other": 1}, "route field 'region' is missing"),
        ({"region": ["eu"]}, "route gave a list, not a topic name"),
        ({"region": None}, "route gave a NoneType, not a topic name"),
    ],
    ids=["not-allowed", "missing", "not-text", "null"],
)
def test_a_record_without_an_allowed_topic_goes_to_the_dlq(value: Any, why: str) -> None:
    """A topic outside the list, a missing field or a value that is no name: DLQ, stage route."""
    record = _rec(value)
    result = process_batch([record], _plan(Pipeline(), BY_REGION), 0)
    assert result.outputs == []
    [entry] = result.dlq
    assert _stage(entry) == "route"
    assert why in entry.message
    assert entry.value == record.value, "the input record itself, replayable"
    assert result.dlq_reasons == {("route", "RecordError"): 1}
    assert result.next_offsets == {("in", 0): 1}


def test_a_route_function_that_raises_sends_the_record_to_the_dlq() -> None:
    """An exception of the route function is the record's DLQ reason, its class named."""
    router = Router(TOPICS, fn=lambda v: {"a": "eu", "b": "us"}[v["x"]])
    result = process_batch([_rec({"x": "a"}, 0), _rec({"x": "c"}, 1)], _plan(Pipeline(), router), 0)
    assert [o.topic for o in result.outputs] == ["eu"]
    [entry] = result.dlq
    assert entry.stage == "route"
    assert entry.error_class == "KeyError"
    assert entry.message.startswith("route function raised KeyError")
    assert entry.source_offset == 1


def test_flat_map_items_are_routed_one_by_one() -> None:
    """Items of one record go to their own topics; an unroutable one alone goes to the DLQ."""
    pipeline = Pipeline().flat_map(lambda v: v["items"])
    record = _rec({"items": [{"region": "us"}, {"region": "mars"}, {"region": "eu"}]})
    result = process_batch([record], _plan(pipeline, BY_REGION), 0)
    assert [o.topic for o in result.outputs] == ["us", "eu"]
    [entry] = result.dlq
    assert entry.stage == "route"
    assert entry.message.startswith("item 2 of 3:")
    assert json.loads(entry.value or b"") == {"region": "mars"}


def test_without_a_router_outputs_go_to_the_sink() -> None:
    """No route: the sink topic, as before routing existed."""
    result = process_batch([_rec({"region": "eu"})], _plan(Pipeline(), None), 0)
    assert [o.topic for o in result.outputs] == ["out"]


def _window(key: str, total: int) -> WindowResult:
    return WindowResult(key, 0, 1000, {"count": 1, "total": total}, True)


def test_window_results_are_routed_by_their_fields() -> None:
    """A window result is routed by the route function over it; a refused one goes to the
    DLQ with stage route, the result as JSON, its input partition as the origin."""
    router = Router(
        frozenset({"big", "small"}),
        fn=lambda w: "big" if w["total"] > 100 else ("small" if w["total"] > 0 else "none"),
    )
    plan = _plan(Pipeline(), router)
    result = BatchResult()
    windows = [_window("a", 500), _window("b", 5), _window("c", 0)]
    emit(result, windows, [("in", 0), ("in", 1), ("in", 2)], plan, 0)
    assert [(o.topic, o.key) for o in result.outputs] == [("big", b"a"), ("small", b"b")]
    assert result.sources == [("in", 0), ("in", 1)]
    [entry] = result.dlq
    assert entry.stage == "route"
    assert entry.source == ("in", 2)
    assert json.loads(entry.value or b"")["key"] == "c"


def test_window_results_route_by_a_field_of_the_result() -> None:
    """RILL_ROUTE_FIELD names a field of the window result (here its key)."""
    plan = _plan(Pipeline(), Router(frozenset({"a"}), field="key"))
    result = BatchResult()
    emit(result, [_window("a", 1), _window("b", 1)], [("in", 0), ("in", 0)], plan, 0)
    assert [o.topic for o in result.outputs] == ["a"]
    assert [e.stage for e in result.dlq] == ["route"]


def _settings(**extra: Any) -> Any:
    return load_settings(window_type="none", input_format="json", output_format="json", **extra)


def test_the_route_settings_build_a_router() -> None:
    """RILL_ROUTE_FIELD with RILL_ROUTE_TOPICS (comma-separated) route by that field."""
    plan = build_plan(_settings(route_field="region", route_topics="eu, us"))
    assert plan.router == Router(TOPICS, field="region")
    assert build_plan(_settings()).router is None


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"route_field": "region"}, "RILL_ROUTE_TOPICS"),
        ({"route_topics": "eu,us"}, "RILL_ROUTE_FIELD"),
        ({"route_field": "r", "route_topics": "eu,orders"}, "RILL_ROUTE_TOPICS"),
        ({"route_field": "r", "route_topics": "orders-dlq"}, "dlq_topic"),
    ],
    ids=["no-topics", "no-route", "input-topic", "dlq-topic"],
)
def test_bad_route_settings_fail_at_start(settings: dict[str, Any], names: str) -> None:
    """A route without topics, topics without a route, or a route onto the input or DLQ
    topic is refused at start, naming the setting."""
    with pytest.raises(ConfigError, match=names):
        _settings(**settings)


def test_a_python_route_needs_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipeline.route() without RILL_ROUTE_TOPICS, or with RILL_ROUTE_FIELD too, is refused."""
    routed = Pipeline("routed").route(lambda v: "eu")
    monkeypatch.setattr(app, "load_app", lambda _spec: routed)
    with pytest.raises(ConfigError, match="RILL_ROUTE_TOPICS is empty"):
        build_plan(_settings(app="x:y"))
    with pytest.raises(ConfigError, match="unset RILL_ROUTE_FIELD"):
        build_plan(_settings(app="x:y", route_field="r", route_topics="eu"))
    plan = build_plan(_settings(app="x:y", route_topics="eu"))
    assert plan.router is not None
    assert plan.router.fn is routed.route_fn
    unrouted = Pipeline("plain")
    monkeypatch.setattr(app, "load_app", lambda _spec: unrouted)
    with pytest.raises(ConfigError, match="does not call route"):
        build_plan(_settings(app="x:y", route_topics="eu"))


def test_a_record_error_of_the_route_function_keeps_its_reason() -> None:
    """A RecordError raised by the route function is the DLQ reason as it is."""

    def route(v: Any) -> str:
        raise RecordError("route", "no region for this customer")

    plan = replace(_plan(Pipeline(), None), router=Router(TOPICS, fn=route))
    [entry] = process_batch([_rec({})], plan, 0).dlq
    assert entry.message == "no region for this customer"


def test_the_copartition_check_takes_three_values() -> None:
    """RILL_COPARTITION_CHECK is warn (default), fail or off; anything else is refused."""
    assert _settings().routing.copartition_check == "warn"
    assert _settings(copartition_check="fail").routing.copartition_check == "fail"
    with pytest.raises(ConfigError, match="RILL_COPARTITION_CHECK"):
        _settings(copartition_check="strict")


def test_route_takes_a_function() -> None:
    """Pipeline.route() with something that cannot be called fails where it is declared."""
    with pytest.raises(ConfigError, match="route\\(\\) takes a function"):
        Pipeline("p").route("payments-eu")  # type: ignore[arg-type]
