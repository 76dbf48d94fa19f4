"""Count windows through worker processes on the real broker and Redis, with a SIGKILL."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import pytest

from tests.integration.conftest import Endpoints
from tests.integration.helpers import (
    HeldFeed,
    create_topics,
    emitted_windows,
    read_all,
    read_once,
    start_worker,
    stop_worker,
    worker_env,
)
from tests.support.window_model import AGGREGATES, Rec, run_count_model, same_values

pytestmark = pytest.mark.integration

SETTINGS = {
    "filter_field": "",
    "key_by": "customer_id",
    "window_time_field": "",
    "aggregates": ",".join(AGGREGATES),
    "input_format": "json",
    "input_wire": "plain",
    "output_format": "json",
    "output_wire": "plain",
    "batch_size": 500,
    "transaction_timeout_ms": 10_000,
    "kafka_extra": json.dumps(
        {"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "500"}
    ),
}
WINDOWS = {
    "count_tumbling": {"window_type": "count_tumbling", "window_count": 25},
    "count_hopping": {
        "window_type": "count_hopping",
        "window_count": 20,
        "window_count_advance": 5,
    },
}


def _model_input(endpoints: Endpoints, topic: str) -> list[Rec]:
    recs = []
    for r in read_once(endpoints.bootstrap, topic):
        v = json.loads(r.value or b"")
        recs.append(Rec(r.partition, r.offset, v["customer_id"], 0, float(v["amount"])))
    return recs


@pytest.mark.parametrize(
    ("kind", "guarantee"),
    [
        ("count_tumbling", "at_least_once"),
        ("count_tumbling", "exactly_once"),
        ("count_hopping", "at_least_once"),
        ("count_hopping", "exactly_once"),
    ],
)
def test_sigkill_mid_stream_counts_every_record_once(
    endpoints: Endpoints, unique: str, tmp_path: Path, kind: str, guarantee: str
) -> None:
    """30,000 records, two workers, one SIGKILLed mid-stream and restarted: the full count
    windows equal the naive model (exactly-once: each emitted once; at-least-once: a
    window emitted again has the same value)."""
    total = 30_000
    window = WINDOWS[kind]
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        redis_prefix=unique,
        processing_guarantee=guarantee,
        **SETTINGS,
        **window,
    )
    create_topics(
        endpoints.bootstrap,
        [env["RILL_INPUT_TOPIC"], env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]],
    )
    rng = random.Random(17)
    events = [
        {"customer_id": f"c-{rng.randrange(40):02d}", "amount": rng.randint(1, 1000) / 4}
        for _ in range(total)
    ]
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
        read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 100, settle_s=0)
        assert stop_worker(a, signal.SIGKILL) == -signal.SIGKILL
        assert not feed.finished(), "killed while input was still arriving"
        feed.release()
        a = start_worker(env, tmp_path / "a2.log")
        feed.join()
        model = run_count_model(
            _model_input(endpoints, env["RILL_INPUT_TOPIC"]),
            int(window["window_count"]),
            int(window.get("window_count_advance", window["window_count"])),
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
    assert set(emitted) == model.closed, "every full window, none partial, none extra"
    wrong = [w for w in model.closed if not same_values(emitted[w], model.windows[w])]
    assert wrong == [], f"{len(wrong)} windows differ from the model, e.g. {wrong[:3]}"
    assert read_once(endpoints.bootstrap, env["RILL_DLQ_TOPIC"]) == []
    if guarantee == "exactly_once":
        assert duplicates == 0, "exactly-once: no window emitted twice"
    print(
        f"\nsigkill ({kind}, {guarantee}): {len(model.closed)} full windows of "
        f"{len(model.windows)}, {duplicates} duplicate emissions, all values exact"
    )
