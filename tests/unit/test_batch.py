"""The pure batch function: every record ends in outputs, the DLQ or the filtered count."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.app import build_plan
from service.config import load_settings
from service.demo import demo_orders
from service.pipeline import Pipeline
from service.processing import dlq
from service.processing.batch import Plan, process_batch
from service.records import InRecord
from service.serde import JsonSerde
from service.serde.wire import PlainWire
from tests.support.demo_configs import PROJECTION_SETTINGS


def _rec(
    value: bytes | None,
    offset: int = 0,
    key: bytes | None = b"k",
    headers: list[tuple[str, bytes | None]] | None = None,
) -> InRecord:
    return InRecord("in", 0, offset, key, value, headers, 0)


def _json_plan(pipeline: Pipeline, retries: int = 2, max_bytes: int = 10_000) -> Plan:
    serde = JsonSerde(PlainWire())
    return Plan(serde, serde, tuple(pipeline.steps), "out", "dlq", max_bytes, retries, "test")


def _reasons(result: Any) -> list[dict[str, str]]:
    return [dlq.reason_of(dlq.render(e, "test").headers) for e in result.dlq]


def test_stateless_plan_transforms_demo_orders() -> None:
    """A projection pipeline filters cancelled orders, keys by customer and renames amount."""
    plan = build_plan(load_settings(**PROJECTION_SETTINGS))
    orders = list(demo_orders(200))
    records = [_rec(plan.decoder.encode(o), i) for i, o in enumerate(orders)]
    result = process_batch(records, plan, 0)
    kept = [o for o in orders if o["status"] != "cancelled"]
    assert result.filtered == len(orders) - len(kept)
    assert [r.key for r in result.outputs] == [o["customer_id"].encode() for o in kept]
    first = plan.encoder.decode(result.outputs[0].value)
    assert first["total"] == kept[0]["amount"]
    assert "status" not in first
    assert result.next_offsets == {("in", 0): 200}


def test_bad_records_become_dlq_entries_with_reasons() -> None:
    """Garbage, missing fields, null keys, exceptions and oversized records go to the DLQ."""

    def explode(v: dict[str, Any]) -> dict[str, Any]:
        if v.get("boom"):
            raise ZeroDivisionError("boom")
        return v

    pipeline = Pipeline().map(explode).key_by(lambda v: v.get("user"))
    pipeline.map(lambda v: {"user": v["user"], "n": v["n"]}, name="pick")
    plan = _json_plan(pipeline, max_bytes=200)
    good = json.dumps({"user": "u1", "n": 1}).encode()
    records = [
        _rec(good, 0),
        _rec(b"\xff\xfe garbage", 1),
        _rec(json.dumps({"user": "u2"}).encode(), 2),  # missing field n
        _rec(json.dumps({"n": 3}).encode(), 3),  # null key
        _rec(json.dumps({"user": "u", "n": 1, "boom": True}).encode(), 4, headers=[("h", b"1")]),
        _rec(b'{"user": "' + b"x" * 300 + b'", "n": 1}', 5),  # oversized
        _rec(None, 6),  # tombstone
    ]
    result = process_batch(records, plan, 1234)
    assert [json.loads(r.value or b"") for r in result.outputs] == [json.loads(good)]
    reasons = _reasons(result)
    assert [r[dlq.ERROR_STAGE] for r in reasons] == [
        "decode",
        "transform",
        "transform",
        "transform",
        "decode",
        "decode",
    ]
    assert [r[dlq.SOURCE_OFFSET] for r in reasons] == ["1", "2", "3", "4", "5", "6"]
    assert "'n'" in reasons[1][dlq.ERROR_MESSAGE]
    assert "null key" in reasons[2][dlq.ERROR_MESSAGE]
    assert reasons[3][dlq.ERROR_CLASS] == "ZeroDivisionError"
    assert reasons[3][dlq.ERROR_ATTEMPTS] == "3", "retried transform_retries times"
    assert "max_record_bytes" in reasons[4][dlq.ERROR_MESSAGE]
    assert result.dlq[3].headers is not None
    assert ("h", b"1") in result.dlq[3].headers
    assert result.dlq[0].value == records[1].value, "original bytes kept"
    assert sum(result.dlq_reasons.values()) == 6
    assert result.filtered == 0


def test_flat_map_and_filter_counts() -> None:
    """flat_map fans out; a record with no outputs counts as filtered."""
    pipeline = Pipeline().flat_map(lambda v: [{"i": i} for i in range(v["n"])])
    pipeline.filter(lambda v: v["i"] != 1)
    result = process_batch([_rec(b'{"n": 3}', 0), _rec(b'{"n": 0}', 1)], _json_plan(pipeline), 0)
    assert [json.loads(r.value or b"") for r in result.outputs] == [{"i": 0}, {"i": 2}]
    assert result.filtered == 1


def test_replayed_record_reason_replaced() -> None:
    """A DLQ record that fails again shows the new reason, not two of them."""
    plan = _json_plan(Pipeline())
    old = [(dlq.ERROR_STAGE, b"transform"), ("keep", b"me")]
    result = process_batch([_rec(b"nope", 0, headers=old)], plan, 0)
    headers = dlq.render(result.dlq[0], "test").headers or []
    assert [v for k, v in headers if k == dlq.ERROR_STAGE] == [b"decode"]
    assert ("keep", b"me") in headers


@pytest.mark.parametrize("retries", [0, 3])
def test_transient_exception_is_retried(retries: int) -> None:
    """A step that fails once succeeds on retry when retries are allowed."""
    calls = {"n": 0}

    def flaky(v: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("transient")
        return v

    result = process_batch([_rec(b"{}", 0)], _json_plan(Pipeline().map(flaky), retries), 0)
    assert len(result.outputs) == (1 if retries else 0)
    assert len(result.dlq) == (0 if retries else 1)
