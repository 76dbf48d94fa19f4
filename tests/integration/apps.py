"""Python pipelines the integration tests load with RILL_APP."""

from __future__ import annotations

import os
import time
from typing import Any

from service import Pipeline


def _strict_amount(order: dict[str, Any]) -> dict[str, Any]:
    """A pipeline bug: amounts sent as text are not numbers, so this raises."""
    return {"id": order["id"], "cents": round(order["amount"] * 100)}


def _lenient_amount(order: dict[str, Any]) -> dict[str, Any]:
    """The fix: text amounts are parsed."""
    return {"id": order["id"], "cents": round(float(order["amount"]) * 100)}


def _block_on_marker(order: dict[str, Any]) -> dict[str, Any]:
    """Stalls the poll loop when a record asks for it (to test liveness)."""
    if order.get("block"):
        time.sleep(float(order["block"]))
    return order


strict = Pipeline("strict").key_by(lambda o: o["id"]).map(_strict_amount)
lenient = Pipeline("lenient").key_by(lambda o: o["id"]).map(_lenient_amount)
blocking = Pipeline("blocking").map(_block_on_marker)


def _by_size(window: dict[str, Any]) -> str:
    """Window results of 5 orders or more go to the first route topic, smaller ones to
    the second (RILL_ROUTE_TOPICS, the test's own topics)."""
    big, small = os.environ["RILL_ROUTE_TOPICS"].split(",")
    return big if window["count"] >= 5 else small


# Windows per customer, each result routed by its count (route topics from the env).
routed_windows = (
    Pipeline("routed-windows")
    .key_by(lambda o: o["customer_id"])
    .window("tumbling", size_ms=1000, time_field="ts", idle_timeout_ms=0, aggregates=["count"])
    .route(_by_size)
)
