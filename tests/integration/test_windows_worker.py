"""Windowed aggregation through worker processes on the real broker and Redis."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from service.processing import dlq
from tests.integration.conftest import Endpoints
from tests.integration.helpers import (
    HeldFeed,
    create_topics,
    emitted_windows,
    header,
    read_all,
    read_once,
    start_worker,
    stop_worker,
    worker_env,
)
from tests.support.window_model import AGGREGATES, Rec, run_model, same_values

pytestmark = pytest.mark.integration

WINDOW = {
    "filter_field": "",
    "key_by": "customer_id",
    "window_type": "tumbling",
    "window_size_ms": 1000,
    "window_grace_ms": 100,
    "window_time_field": "ts",
    "window_idle_timeout_ms": 0,
    "aggregates": ",".join(AGGREGATES),
    "input_format": "json",
    "input_wire": "plain",
    "output_format": "json",
    "output_wire": "plain",
    "batch_size": 500,
    "kafka_extra": json.dumps(
        {"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "500"}
    ),
}


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    """Orders with event times mostly increasing, some out of order, a few late."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        jitter = rng.choice([0, 0, 0, -rng.randint(1, 90), -rng.randint(150, 400)])
        events.append(
            {
                "customer_id": f"c-{rng.randrange(40):02d}",
                "ts": 10 * i + jitter,
                "amount": rng.randint(1, 1000) / 4,
            }
        )
    return events


def _model_input(endpoints: Endpoints, topic: str) -> list[Rec]:
    recs = []
    for r in read_once(endpoints.bootstrap, topic):
        v = json.loads(r.value or b"")
        recs.append(Rec(r.partition, r.offset, v["customer_id"], v["ts"], float(v["amount"])))
    return recs


@pytest.mark.parametrize(
    ("redis_mode", "guarantee"),
    [("single", "at_least_once"), ("cluster", "at_least_once"), ("single", "exactly_once")],
)
def test_sigkill_mid_run_counts_no_window_twice(
    endpoints: Endpoints,
    unique: str,
    tmp_path: Path,
    redis_mode: str,
    guarantee: str,
    request: pytest.FixtureRequest,
) -> None:
    """100,000 records, two workers, one SIGKILLed and restarted: windows equal the model."""
    total = 100_000
    extra: dict[str, Any] = {}
    redis_url = endpoints.redis_url
    extra["processing_guarantee"] = guarantee
    extra["transaction_timeout_ms"] = 10_000
    if redis_mode == "cluster":
        redis_url = request.getfixturevalue("redis_cluster_url")
        extra["redis_cluster"] = "true"
    env = worker_env(endpoints.bootstrap, redis_url, unique, redis_prefix=unique, **WINDOW, **extra)
    create_topics(
        endpoints.bootstrap,
        [env["RILL_INPUT_TOPIC"], env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]],
    )
    events = _events(total, seed=4)

    feed = HeldFeed(
        endpoints.bootstrap,
        env["RILL_INPUT_TOPIC"],
        [(e["customer_id"].encode(), json.dumps(e).encode()) for e in events],
        rate=4_000,
        hold_at=total // 2,
    )
    a = start_worker(env, tmp_path / "a.log")
    b = start_worker(env, tmp_path / "b.log")
    feed.start()
    try:
        read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 300, settle_s=0)
        assert stop_worker(a, signal.SIGKILL) == -signal.SIGKILL
        assert not feed.finished(), "killed while input was still arriving"
        feed.release()
        a = start_worker(env, tmp_path / "a2.log")
        feed.join()
        model = run_model(
            _model_input(endpoints, env["RILL_INPUT_TOPIC"]), "tumbling", size=1000, grace=100
        )
        sink = read_all(
            endpoints.bootstrap,
            env["RILL_OUTPUT_TOPIC"],
            len(model.closed),
            timeout_s=180,
            settle_s=5,
        )
    finally:
        feed.release()
        stop_worker(a)
        stop_worker(b)
    emitted, duplicates = emitted_windows(sink)
    assert set(emitted) == model.closed, "no window missing, none extra"
    wrong = [w for w in model.closed if not same_values(emitted[w], model.windows[w])]
    assert wrong == [], f"{len(wrong)} windows differ from the model, e.g. {wrong[:3]}"
    late_records = [
        r
        for r in read_once(endpoints.bootstrap, env["RILL_DLQ_TOPIC"])
        if header(r, dlq.ERROR_STAGE) == "late"
    ]
    late = {(header(r, dlq.SOURCE_PARTITION), header(r, dlq.SOURCE_OFFSET)) for r in late_records}
    assert len(late) == len(model.late)
    if guarantee == "exactly_once":
        assert duplicates == 0, "exactly-once: no window emitted twice"
        assert len(late_records) == len(late), "exactly-once: no DLQ record twice"
    print(
        f"\nsigkill ({redis_mode} Redis, {guarantee}): {len(model.closed)} windows, "
        f"{len(model.late)} late records, "
        f"{duplicates} duplicate emissions, {len(late_records) - len(late)} duplicate DLQ "
        "records, all values exact"
    )
