"""Enrichment from a table on the real broker and Redis: the table read at start gates the
worker, tombstones delete, inner / left / missing, later table updates are seen by later
records, and two readers of one table agree."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from service.config import Settings, load_settings
from service.processing import dlq
from service.processing.join import JoinPlan, field_key
from service.runtime.real_edges import MaterializedTable, open_table
from service.state.client import connect
from service.state.table_store import RedisTable
from tests.integration.conftest import Endpoints
from tests.integration.helpers import (
    create_topics,
    header,
    produce,
    read_all,
    read_once,
    start_worker,
    stop_worker,
    worker_env,
)
from tests.integration.test_operations import LocalRedis, free_port, wait_for

pytestmark = pytest.mark.integration

JSON_STATELESS = {
    "input_format": "json",
    "input_wire": "plain",
    "output_format": "json",
    "output_wire": "plain",
    "filter_field": "",
    "key_by": "k",
    "window_type": "none",
}


def create_compacted(bootstrap: str, topic: str, partitions: int = 3) -> None:
    """A compacted topic, as a table's topic is."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, config={"cleanup.policy": "compact"})
    for future in admin.create_topics([new]).values():
        future.result(timeout=30)


def rows(items: dict[str, Any]) -> Iterator[tuple[bytes, bytes | None]]:
    """Table records: key -> row (None: a tombstone)."""
    for key, row in items.items():
        yield key.encode(), json.dumps(row).encode() if row is not None else None


def records(keys: list[str], start: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """Input records naming table keys, numbered from `start`."""
    for n, key in enumerate(keys, start):
        yield key.encode(), json.dumps({"k": key, "n": n}).encode()


def open_transaction(bootstrap: str, topic: str, items: dict[str, Any]) -> Producer:
    """Table records in a transaction left open: read_committed readers stop before them."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"table-{topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for key, value in rows(items):
        producer.produce(topic, value, key)
    producer.flush(30)
    return producer


def follower_settings(endpoints: Endpoints, unique: str) -> Settings:
    return load_settings(
        bootstrap_servers=endpoints.bootstrap,
        redis_url=endpoints.redis_url,
        redis_prefix=f"rill-{unique}",
        metrics_port=0,
    )


def test_two_readers_of_one_table_agree_and_follow_it(endpoints: Endpoints, unique: str) -> None:
    """Two workers read the same table (updates and tombstones over 3 partitions) into one
    Redis hash at once: both see the latest row per key, deleted keys gone, and later
    records of the table once they follow them."""
    topic = f"table-{unique}"
    create_compacted(endpoints.bootstrap, topic)
    latest: dict[str, Any] = {}
    for version in range(3):
        batch = {f"c{i}": {"v": version, "i": i} for i in range(200)}
        batch.update({f"c{i}": None for i in range(version, 200, 7)})  # tombstones
        produce(endpoints.bootstrap, topic, rows(batch))
        latest.update(batch)
    settings = follower_settings(endpoints, unique)
    join = JoinPlan(topic, field_key("k"))
    readers: list[MaterializedTable] = [open_table(settings, join) for _ in range(2)]
    try:
        for reader in readers:
            reader.start()
        for reader in readers:
            wait_for(reader.loaded, 60, "the table read to its end")
        keys = [f"c{i}".encode() for i in range(201)]
        want = {k.encode(): json.dumps(v).encode() for k, v in latest.items() if v is not None}
        for reader in readers:
            assert reader.get(keys) == want
        produce(endpoints.bootstrap, topic, rows({"c200": {"new": 1}, "c1": None, "c2": {"v": 9}}))
        want[b"c200"] = b'{"new": 1}'
        want[b"c2"] = b'{"v": 9}'
        want.pop(b"c1", None)
        for reader in readers:
            wait_for(lambda r=reader: r.get(keys) == want, 60, "the table's new records")
    finally:
        for reader in readers:
            reader.close()


def test_the_end_at_start_is_the_last_stable_offset(endpoints: Endpoints, unique: str) -> None:
    """Rows of a transaction still open at start are not waited for (read_committed: the
    table's end is its last stable offset); once committed they are followed."""
    topic = f"table-{unique}"
    create_compacted(endpoints.bootstrap, topic, partitions=1)
    produce(endpoints.bootstrap, topic, rows({"before": {"v": 1}}))
    pending = open_transaction(endpoints.bootstrap, topic, {"inside": {"v": 2}})
    reader = open_table(follower_settings(endpoints, unique), JoinPlan(topic, field_key("k")))
    try:
        reader.start()
        wait_for(reader.loaded, 60, "loaded up to the open transaction")
        assert reader.get([b"before", b"inside"]) == {b"before": b'{"v": 1}'}
        pending.commit_transaction(30)
        wait_for(lambda: reader.get([b"inside"]) != {}, 60, "the committed transaction's row")
        assert reader.get([b"inside"]) == {b"inside": b'{"v": 2}'}
    finally:
        reader.close()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_worker_waits_for_the_table_then_joins_and_sees_updates(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """/readyz fails naming the table and nothing is processed until the table is read
    to its end at start; then each record is joined (inner: a record without a row goes
    to the DLQ, stage join), a row updated later is seen by later records, and a record
    ahead of its row (the table lagging) goes to the DLQ while the next one is joined."""
    topic = f"table-{unique}"
    port = free_port()
    redis = LocalRedis(tmp_path)
    redis.start()
    env = worker_env(
        endpoints.bootstrap,
        redis.url,
        unique,
        **JSON_STATELESS,
        processing_guarantee=guarantee,
        redis_prefix=f"rill-{unique}",
        metrics_port=port,
        table_topic=topic,
        table_key_field="k",
    )
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=2)
    create_compacted(endpoints.bootstrap, topic)
    produce(endpoints.bootstrap, topic, rows({f"c{i}": {"tier": i} for i in range(11)}))
    keys = [f"c{i}" for i in range(11)] + ["nobody"]
    produce(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], records(keys))
    # Redis takes no writes: the worker cannot write the table, so it cannot be loaded.
    client = connect(redis.url)
    client.execute_command("CLIENT", "PAUSE", "600000", "WRITE")
    proc = start_worker(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: _readyz(port) == (503, True), 60, "/readyz failing, naming the table")
        assert read_once(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"]) == []
        assert read_once(endpoints.bootstrap, env["RILL_DLQ_TOPIC"]) == []
        client.execute_command("CLIENT", "UNPAUSE")
        out = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 11, settle_s=1)
        joined = {v["k"]: v["table"] for v in (json.loads(r.value or b"") for r in out)}
        assert joined == {f"c{i}": {"tier": i} for i in range(11)}
        [entry] = read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 1, settle_s=1)
        assert header(entry, dlq.ERROR_STAGE) == "join"
        assert json.loads(entry.value or b"")["k"] == "nobody"
        wait_for(lambda: _readyz(port)[0] == 200, 60, "ready")
        # A later update of the table is seen by records processed after it arrived.
        produce(endpoints.bootstrap, topic, rows({"c3": {"tier": "updated"}}))
        store = RedisTable(client, f"rill-{unique}", topic)
        wait_for(lambda: store.get([b"c3"]) == {b"c3": b'{"tier": "updated"}'}, 60, "update")
        produce(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], records(["c3"], start=100))
        out = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 12, settle_s=1)
        later = [json.loads(r.value or b"") for r in out]
        assert [v["table"] for v in later if v["n"] == 100] == [{"tier": "updated"}]
        # The table lags the stream: a record whose row is not there yet goes to the DLQ;
        # once the row reached Redis, the next record of that key is joined.
        produce(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], records(["late"], start=200))
        dlq_records = read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 2, settle_s=0)
        assert [json.loads(r.value or b"")["n"] for r in dlq_records][-1] == 200
        produce(endpoints.bootstrap, topic, rows({"late": {"tier": "arrived"}}))
        wait_for(lambda: store.get([b"late"]) != {}, 60, "the late row in Redis")
        produce(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], records(["late"], start=201))
        out = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 13, settle_s=1)
        by_n = {v["n"]: v["table"] for v in (json.loads(r.value or b"") for r in out)}
        assert by_n.get(201) == {"tier": "arrived"}
        assert 200 not in by_n
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
        assert stop_worker(proc, signal.SIGTERM) == 0
        redis.stop()


@pytest.mark.parametrize(
    ("guarantee", "join", "missing"),
    [("exactly_once", "left", "dlq"), ("at_least_once", "inner", "drop")],
)
def test_deleted_and_unknown_keys(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str, join: str, missing: str
) -> None:
    """A key deleted by a tombstone and a key never written have no row: a left join goes
    on with a null table field, an inner join with missing=drop drops them (no DLQ)."""
    topic = f"table-{unique}"
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        **JSON_STATELESS,
        processing_guarantee=guarantee,
        redis_prefix=f"rill-{unique}",
        table_topic=topic,
        table_key_field="k",
        table_join=join,
        table_missing=missing,
    )
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=2)
    create_compacted(endpoints.bootstrap, topic)
    produce(endpoints.bootstrap, topic, rows({"a": {"x": 1}, "gone": {"x": 2}}))
    produce(endpoints.bootstrap, topic, rows({"gone": None}))
    produce(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], records(["a", "gone", "never", "a"]))
    proc = start_worker(env, tmp_path / "worker.log")
    try:
        expected = 4 if join == "left" else 2
        out = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], expected, settle_s=2)
        got = sorted((v["n"], v["table"]) for v in (json.loads(r.value or b"") for r in out))
        if join == "left":
            assert got == [(0, {"x": 1}), (1, None), (2, None), (3, {"x": 1})]
        else:
            assert got == [(0, {"x": 1}), (3, {"x": 1})]
        assert read_once(endpoints.bootstrap, env["RILL_DLQ_TOPIC"]) == []
    finally:
        assert stop_worker(proc, signal.SIGTERM) == 0


def _readyz(port: int) -> tuple[int, bool]:
    """/readyz's status, and whether its text names the table loading."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return int(resp.status), "loading" in resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), "loading" in exc.read().decode()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_windowed_pipeline_keyed_by_a_table_field(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """A windowed pipeline keyed by a merged table field (region): each closed window's
    count and sum equal those computed from the input and the table; a record without a
    row goes to the DLQ (stage join) and counts in no window."""
    topic = f"table-{unique}"
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        input_format="json",
        input_wire="plain",
        output_format="json",
        output_wire="plain",
        filter_field="",
        key_by="region",
        window_type="tumbling",
        window_size_ms=1000,
        window_grace_ms=0,
        window_time_field="ts",
        window_idle_timeout_ms=0,
        aggregates="count,sum:amount",
        processing_guarantee=guarantee,
        redis_prefix=f"rill-{unique}",
        table_topic=topic,
        table_key_field="customer_id",
        table_as="",
    )
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=1)
    create_compacted(endpoints.bootstrap, topic)
    region = {f"c{i}": "north" if i % 3 else "south" for i in range(12)}
    produce(endpoints.bootstrap, topic, rows({c: {"region": r} for c, r in region.items()}))
    events = [{"customer_id": f"c{i % 12}", "ts": 10 * i, "amount": i} for i in range(600)]
    events.insert(300, {"customer_id": "unknown", "ts": 2995, "amount": 10**6})
    produce(
        endpoints.bootstrap,
        env["RILL_INPUT_TOPIC"],
        ((e["customer_id"].encode(), json.dumps(e).encode()) for e in events),
    )
    want: dict[tuple[str, int], tuple[int, int]] = {}
    for e in events:
        start = e["ts"] - e["ts"] % 1000
        if e["customer_id"] in region and start + 1000 <= 5990:  # closed by the watermark
            count, total = want.get((region[e["customer_id"]], start), (0, 0))
            want[(region[e["customer_id"]], start)] = (count + 1, total + e["amount"])
    proc = start_worker(env, tmp_path / "worker.log")
    try:
        out = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], len(want), settle_s=2)
        got = {
            (v["key"], v["window_start"]): (v["count"], v["sum_amount"])
            for v in (json.loads(r.value or b"") for r in out)
        }
        assert got == want
        assert len(out) == len(want), "each window once"
        [entry] = read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 1, settle_s=1)
        assert header(entry, dlq.ERROR_STAGE) == "join"
    finally:
        assert stop_worker(proc, signal.SIGTERM) == 0


def test_two_worker_processes_each_read_the_whole_table(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """Two workers of one group each read the whole table before they are ready (each
    materializes it into the same hash), and between them join every record."""
    topic = f"table-{unique}"
    ports = [free_port(), free_port()]
    envs = [
        worker_env(
            endpoints.bootstrap,
            endpoints.redis_url,
            unique,
            **JSON_STATELESS,
            redis_prefix=f"rill-{unique}",
            metrics_port=port,
            table_topic=topic,
            table_key_field="k",
            # Two members: one leaving while the other rebalances waits out the session.
            kafka_extra=json.dumps(
                {"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "500"}
            ),
        )
        for port in ports
    ]
    env = envs[0]
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=4)
    create_compacted(endpoints.bootstrap, topic)
    produce(endpoints.bootstrap, topic, rows({f"c{i}": {"tier": i} for i in range(2000)}))
    produce(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], records([f"c{i}" for i in range(2000)]))
    procs = [start_worker(e, tmp_path / f"worker-{i}.log") for i, e in enumerate(envs)]
    try:
        for port in ports:
            wait_for(lambda p=port: _table_loaded(p), 90, "each worker's table loaded")
        out = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 2000, settle_s=1)
        joined = {v["k"]: v["table"] for v in (json.loads(r.value or b"") for r in out)}
        assert joined == {f"c{i}": {"tier": i} for i in range(2000)}
        assert read_once(endpoints.bootstrap, env["RILL_DLQ_TOPIC"]) == []
    finally:
        for proc in procs:
            assert stop_worker(proc, signal.SIGTERM) == 0


def _table_loaded(port: int) -> bool:
    """The worker's rill_table_loaded gauge is 1 (it read the whole table)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return any(
        line.startswith("rill_table_loaded{") and line.endswith(" 1.0")
        for line in text.splitlines()
    )
