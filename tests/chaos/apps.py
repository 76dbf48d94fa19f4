"""Python pipelines chaos rows load with RILL_APP (in the worker processes)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import Any

from service import Pipeline
from service.processing.steps import make_key_by
from tests.support.window_model import AGGREGATES


def route_of(key: str, topics: Sequence[str]) -> str:
    """The topic a window of `key` is routed to: one of `topics`, by the key's CRC32."""
    return topics[zlib.crc32(key.encode()) % len(topics)]


def _routed() -> Pipeline:
    """The harness's declarative pipeline (key_by customer_id, tumbling windows of
    RILL_WINDOW_SIZE_MS), each window result routed by its key over RILL_ROUTE_TOPICS."""
    env = os.environ
    topics = env.get("RILL_ROUTE_TOPICS", "").split(",")

    def by_key(window: dict[str, Any]) -> str:
        return route_of(window["key"], topics)

    return (
        Pipeline("routed")
        .key_by(make_key_by("customer_id"), "customer_id")
        .window(
            "tumbling",
            size_ms=int(env.get("RILL_WINDOW_SIZE_MS", "1000")),
            grace_ms=int(env.get("RILL_WINDOW_GRACE_MS", "0")),
            time_field=env.get("RILL_WINDOW_TIME_FIELD", "ts"),
            idle_timeout_ms=int(env.get("RILL_WINDOW_IDLE_TIMEOUT_MS", "0")),
            aggregates=AGGREGATES,
        )
        .route(by_key)
    )


routed = _routed
