"""De-duplication on the real broker and Redis: a worker SIGKILLed mid-stream on input with
known duplicates, in both guarantee modes."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.processing import dlq
from service.records import InRecord
from tests.integration.conftest import Endpoints
from tests.integration.helpers import (
    HeldFeed,
    create_topics,
    header,
    produce,
    read_all,
    read_once,
    start_worker,
    stop_worker,
    worker_env,
)
from tests.integration.test_operations import JSON_IO, free_port, scrape, total, wait_for

pytestmark = pytest.mark.integration

DISTINCT = 4_000
EVERY = 5  # every 5th id comes twice more: right after, and again at the end of the stream


def stream() -> tuple[list[dict[str, Any]], Counter[str]]:
    """The input in produce order, and how many duplicates of each id it holds."""
    events: list[dict[str, Any]] = [
        {"id": f"o{i}", "customer_id": f"c{i % 7}", "amount": i} for i in range(DISTINCT)
    ]
    out: list[dict[str, Any]] = []
    dups: Counter[str] = Counter()
    for i, event in enumerate(events):
        out.append(event)
        if i % EVERY == 0:
            out.append(dict(event))
            dups[event["id"]] += 1
    for event in events[::EVERY]:
        out.append(dict(event))
        dups[event["id"]] += 1
    return out, dups


def ids_of(records: list[InRecord]) -> Counter[str]:
    return Counter(json.loads(r.value or b"")["id"] for r in records)


def duplicate_entries(records: list[InRecord]) -> list[InRecord]:
    return [r for r in records if header(r, dlq.ERROR_STAGE) == "duplicate"]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_sigkill_mid_stream_drops_exactly_the_duplicates(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """SIGKILL mid-stream and restart: the sink holds every distinct id (each exactly once
    in exactly-once), the DLQ each duplicate with stage `duplicate` (exactly once in
    exactly-once), no record is taken for a duplicate of itself; ids outlive the workers,
    and rill_records_duplicate_total counts the duplicates a worker judged."""
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        batch_size=100,
        processing_guarantee=guarantee,
        transaction_timeout_ms=10_000,
        window_type="none",
        filter_field="",
        key_by="id",
        dedupe_field="id",
        dedupe_window_ms=3_600_000,
        dedupe_dlq="true",
        **JSON_IO,
    )
    topic, out, dead = env["RILL_INPUT_TOPIC"], env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=4)
    events, dups = stream()
    # Keyed by id: a producer's retries of a record land in its partition, where its id is.
    items = [(e["id"].encode(), json.dumps(e).encode()) for e in events]
    feed = HeldFeed(endpoints.bootstrap, topic, items, rate=2_000, hold_at=len(items) // 2)
    first = start_worker(env, tmp_path / "a.log")
    feed.start()
    try:
        read_all(endpoints.bootstrap, out, 300, settle_s=0)
    finally:
        killed = stop_worker(first, signal.SIGKILL)
    assert killed == -signal.SIGKILL
    assert not feed.finished(), "killed while input was still arriving"
    feed.release()
    second = start_worker(env, tmp_path / "b.log")
    try:
        feed.join()
        sink = read_all(endpoints.bootstrap, out, DISTINCT, timeout_s=120, settle_s=5)
        wait_for(
            lambda: len(duplicate_entries(read_once(endpoints.bootstrap, dead))) >= dups.total(),
            60,
            "every duplicate in the DLQ",
        )
    finally:
        assert stop_worker(second) == 0
    sink = read_once(endpoints.bootstrap, out)  # all the second worker wrote
    got = ids_of(sink)
    assert set(got) == {e["id"] for e in events}, "no record dropped as a duplicate of itself"
    entries = duplicate_entries(read_once(endpoints.bootstrap, dead))
    if guarantee == "exactly_once":
        assert got == Counter({e: 1 for e in got}), "each distinct id exactly once"
        assert ids_of(entries) == dups, "each duplicate in the DLQ exactly once"
    else:
        assert set(ids_of(entries)) == set(dups)
        assert len(entries) >= dups.total()

    # A third worker, never killed: repeats of ids the earlier workers kept are dropped
    # (the ids outlived them), and its counter is exactly the duplicates it saw.
    port = free_port()
    tail: list[dict[str, Any]] = [
        {"id": f"o{i}", "customer_id": "c", "amount": 0} for i in range(0, 200, 4)
    ]
    fresh: list[dict[str, Any]] = [
        {"id": f"n{i}", "customer_id": "c", "amount": 0} for i in range(50)
    ]
    produce(
        endpoints.bootstrap,
        topic,
        [(e["id"].encode(), json.dumps(e).encode()) for e in [*tail, *fresh]],
    )
    third = start_worker({**env, "RILL_METRICS_PORT": str(port)}, tmp_path / "c.log")
    try:
        wait_for(
            lambda: total(scrape(port), "rill_records_in_total") >= len(tail) + len(fresh),
            60,
            "the tail consumed",
        )
        wait_for(
            lambda: total(scrape(port), "rill_records_duplicate_total", topic=topic) >= len(tail),
            30,
            "the tail's duplicates counted",
        )
        counted = total(scrape(port), "rill_records_duplicate_total", topic=topic)
    finally:
        assert stop_worker(third) == 0
    assert counted == len(tail)
    final = ids_of(read_all(endpoints.bootstrap, out, len(sink) + len(fresh), settle_s=2))
    assert set(final) - set(got) == {e["id"] for e in fresh}
    assert all(final[e["id"]] == got[e["id"]] for e in tail), "no repeat reached the sink"
    print(
        f"\ndedupe {guarantee} sigkill: {len(sink)} outputs for {DISTINCT} ids, "
        f"{len(entries)} duplicate DLQ entries for {dups.total()} duplicates"
    )


def test_windowed_exactly_once_sigkill_counts_each_id_once(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """A windowed pipeline that de-duplicates, SIGKILLed mid-stream (exactly-once): the
    window counts add up to the distinct ids of the closed windows, each counted once."""
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        batch_size=100,
        processing_guarantee="exactly_once",
        transaction_timeout_ms=10_000,
        window_type="tumbling",
        window_size_ms=1_000,
        window_grace_ms=0,
        window_time_field="ts",
        window_idle_timeout_ms=0,
        aggregates="count",
        filter_field="",
        key_by="customer_id",
        dedupe_field="id",
        dedupe_window_ms=3_600_000,
        **JSON_IO,
    )
    topic, out = env["RILL_INPUT_TOPIC"], env["RILL_OUTPUT_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=4)
    events, dups = stream()
    for i, event in enumerate(events):
        event["ts"] = 1_700_000_000_000 + 10 * i  # event time follows the stream
    items = [(e["id"].encode(), json.dumps(e).encode()) for e in events]
    feed = HeldFeed(endpoints.bootstrap, topic, items, rate=2_000, hold_at=len(items) // 2)
    first = start_worker(env, tmp_path / "a.log")
    feed.start()
    try:
        read_all(endpoints.bootstrap, out, 50, settle_s=0)
    finally:
        assert stop_worker(first, signal.SIGKILL) == -signal.SIGKILL
    assert not feed.finished(), "killed while input was still arriving"
    feed.release()
    # Per partition: the first copy of each id, and the windows its watermark closed.
    firsts: dict[int, dict[str, int]] = {}
    second = start_worker(env, tmp_path / "b.log")
    try:
        feed.join()
        for r in read_once(endpoints.bootstrap, topic):
            event = json.loads(r.value or b"")
            firsts.setdefault(r.partition, {}).setdefault(event["id"], event["ts"])
        # A duplicate is dropped before the window: only kept records move the watermark.
        top = {p: max(ids.values()) for p, ids in firsts.items()}
        want = sum(
            1
            for p, ids in firsts.items()
            for ts in ids.values()
            if ts // 1_000 * 1_000 + 1_000 <= top[p]
        )
        wait_for(
            lambda: (
                sum(
                    json.loads(r.value or b"")["count"] for r in read_once(endpoints.bootstrap, out)
                )
                >= want
            ),
            120,
            "every closed window",
        )
        time.sleep(3)  # and nothing more
    finally:
        assert stop_worker(second) == 0
    counted = sum(json.loads(r.value or b"")["count"] for r in read_once(endpoints.bootstrap, out))
    assert counted == want, "each id counted once in its window"
    assert dups.total() > 0
    print(f"\ndedupe windowed exactly-once sigkill: {counted} records in closed windows")
