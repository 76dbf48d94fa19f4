"""Operating rill: metrics, health, Redis outage and back-pressure, DLQ replay, secrets."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ROOT, Endpoints
from tests.integration.helpers import (
    create_topics,
    produce,
    read_all,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = pytest.mark.integration

JSON_IO = {
    "input_format": "json",
    "input_wire": "plain",
    "output_format": "json",
    "output_wire": "plain",
}


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def status_of(port: int, path: str) -> int:
    """HTTP status of an endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def wait_for(check: Callable[[], bool], timeout_s: float = 60.0, what: str = "") -> None:
    """Poll `check` until true, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:  # the worker's HTTP server is not up yet
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    return sum(
        v for (n, lab), v in samples.items() if n == name and set(labels.items()) <= set(lab)
    )


class LocalRedis:
    """A redis-server of one test, which the test can stop and start (state kept in AOF)."""

    def __init__(self, root: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.root = root
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(self.root),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        cli = ["redis-cli", "-p", str(self.port)] + (["-a", self.password] if self.password else [])
        wait_for(
            lambda: (
                "PONG"
                in subprocess.run(
                    [*cli, "ping"], capture_output=True, text=True, check=False
                ).stdout
            ),
            10,
            "redis-server",
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def local_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A dedicated, restartable Redis."""
    server = LocalRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_metrics_count_a_known_stream(endpoints: Endpoints, unique: str, tmp_path: Path) -> None:
    """After 300 good, 40 filtered and 20 corrupt records, /metrics shows exactly those."""
    port = free_port()
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        metrics_port=port,
        window_type="none",
        filter_field="keep",
        filter_op="eq",
        filter_value="true",
        key_by="id",
        stats_interval_ms=1000,
        **JSON_IO,
    )
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=2)
    items: list[tuple[bytes | None, bytes | None]] = []
    items += [(b"k", json.dumps({"id": i, "keep": True}).encode()) for i in range(300)]
    items += [(b"k", json.dumps({"id": i, "keep": False}).encode()) for i in range(40)]
    items += [(b"k", b"{not json") for _ in range(20)]
    produce(endpoints.bootstrap, env["RILL_INPUT_TOPIC"], items)
    proc = start_worker(env, tmp_path / "w.log")
    try:
        topic = env["RILL_INPUT_TOPIC"]
        wait_for(lambda: total(scrape(port), "rill_records_in_total") >= 360, what="360 in")
        m = scrape(port)
        assert total(m, "rill_records_in_total", topic=topic) == 360
        assert total(m, "rill_records_out_total", topic=topic) == 300
        assert total(m, "rill_records_filtered_total", topic=topic) == 40
        assert total(m, "rill_records_dlq_total", topic=topic, stage="decode") == 20
        assert total(m, "rill_assigned_partitions") == 2
        assert status_of(port, "/healthz") == 200
        assert status_of(port, "/readyz") == 200
        wait_for(
            lambda: ("rill_consumer_lag", (("partition", "0"), ("topic", topic))) in scrape(port),
            20,
            "lag gauges",
        )
        assert total(scrape(port), "rill_consumer_lag", topic=topic) == 0
    finally:
        code = stop_worker(proc)
    assert code == 0


def test_healthz_fails_while_the_loop_is_blocked(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """/healthz answers 503 while a step stalls the poll loop, and 200 again after."""
    port = free_port()
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        metrics_port=port,
        window_type="none",
        app="tests.integration.apps:blocking",
        health_stall_s=1,
        **JSON_IO,
    )
    create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=1)
    proc = start_worker(env, tmp_path / "w.log")
    try:
        wait_for(lambda: status_of(port, "/readyz") == 200, what="ready")
        assert status_of(port, "/healthz") == 200
        produce(
            endpoints.bootstrap,
            env["RILL_INPUT_TOPIC"],
            [(b"k", json.dumps({"block": 6}).encode())],
        )
        wait_for(lambda: status_of(port, "/healthz") == 503, 10, "healthz to fail")
        wait_for(lambda: status_of(port, "/healthz") == 200, 15, "healthz to recover")
    finally:
        code = stop_worker(proc)
    assert code == 0


def test_redis_outage_opens_breaker_pauses_and_resumes_losing_nothing(
    endpoints: Endpoints, unique: str, tmp_path: Path, local_redis: LocalRedis
) -> None:
    """Redis stops mid-stream: breaker opens, partitions pause, lag grows; then all counted."""
    port = free_port()
    env = worker_env(
        endpoints.bootstrap,
        local_redis.url,
        unique,
        metrics_port=port,
        filter_field="",
        key_by="k",
        window_type="tumbling",
        window_size_ms=1000,
        window_grace_ms=0,
        window_time_field="ts",
        window_idle_timeout_ms=1000,
        aggregates="count",
        stats_interval_ms=1000,
        redis_timeout_s=1,
        breaker_threshold=2,
        breaker_reset_s=1,
        retry_max_s=1,
        **JSON_IO,
    )
    topic = env["RILL_INPUT_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=2)

    def batch(start: int, n: int) -> list[tuple[bytes | None, bytes | None]]:
        return [
            (f"k{i % 5}".encode(), json.dumps({"k": f"k{i % 5}", "ts": i * 10}).encode())
            for i in range(start, start + n)
        ]

    proc = start_worker(env, tmp_path / "w.log")
    try:
        produce(endpoints.bootstrap, topic, batch(0, 500))
        wait_for(lambda: total(scrape(port), "rill_records_in_total") >= 500, what="first 500")
        local_redis.stop()
        produce(endpoints.bootstrap, topic, batch(500, 1500))
        wait_for(
            lambda: total(scrape(port), "rill_circuit_state", dependency="redis") == 1,
            30,
            "the Redis breaker to open",
        )
        wait_for(lambda: total(scrape(port), "rill_paused") == 1, 10, "partitions paused")
        # Every record produced during the outage is behind, whether it waits in Kafka or
        # in the worker's hands (a batch held behind back-pressure is not done either).
        wait_for(
            lambda: total(scrape(port), "rill_consumer_lag", topic=topic) >= 1500,
            30,
            "lag to count all 1500 records of the outage while paused",
        )
        lag_seconds = total(scrape(port), "rill_consumer_lag_seconds", topic=topic)
        local_redis.start()
        wait_for(lambda: total(scrape(port), "rill_paused") == 0, 60, "partitions resumed")
        wait_for(
            lambda: total(scrape(port), "rill_consumer_lag", topic=topic) == 0, 60, "lag back to 0"
        )
        assert total(scrape(port), "rill_circuit_state", dependency="redis") == 0
        assert total(scrape(port), "rill_retries_total", dependency="redis") > 0
        sink = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 1, settle_s=4)
        wait_for(
            lambda: (
                sum(
                    json.loads(r.value or b"")["count"]
                    for r in _unique(
                        read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 1, settle_s=0)
                    )
                )
                >= 2000
            ),
            60,
            "every record counted in a closed window",
        )
        sink = _unique(read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 1, settle_s=2))
        assert sum(json.loads(r.value or b"")["count"] for r in sink) == 2000
        print(f"\nredis outage: lag seconds while paused {lag_seconds:.1f}")
    finally:
        stop_worker(proc)


def _unique(records: list) -> list:  # type: ignore[type-arg]
    seen: dict[tuple[str, int], object] = {}
    for r in records:
        v = json.loads(r.value or b"")
        seen[(v["key"], v["window_start"])] = r
    return list(seen.values())


def test_dlq_replay_brings_fixed_records_to_the_sink(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """Records a pipeline bug sent to the DLQ reach the sink after the fix and a replay."""
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        window_type="none",
        app="tests.integration.apps:strict",
        **JSON_IO,
    )
    topic = env["RILL_INPUT_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=2)
    good = [(f"{i}".encode(), json.dumps({"id": i, "amount": 1.5}).encode()) for i in range(20)]
    bad = [
        (f"{i}".encode(), json.dumps({"id": i, "amount": "2.25"}).encode()) for i in range(20, 30)
    ]
    produce(endpoints.bootstrap, topic, good + bad)
    proc = start_worker(env, tmp_path / "w.log")
    try:
        assert len(read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 10)) == 10
    finally:
        assert stop_worker(proc) == 0
    env["RILL_APP"] = "tests.integration.apps:lenient"
    proc = start_worker(env, tmp_path / "w2.log")
    try:
        inspect = subprocess.run(
            [sys.executable, "-m", "service", "dlq", "inspect", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        groups = json.loads(inspect.stdout)
        assert [(g["stage"], g["error_class"], g["count"]) for g in groups] == [
            ("transform", "TypeError", 10)
        ]
        replay = subprocess.run(
            [sys.executable, "-m", "service", "dlq", "replay", "--stage", "transform"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "replayed 10 records" in replay.stdout
        sink = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 30)
    finally:
        assert stop_worker(proc) == 0
    values = sorted(json.loads(r.value or b"")["cents"] for r in sink)
    assert values == [150] * 20 + [225] * 10
    assert sorted(int(r.key or b"0") for r in sink) == list(range(30)), "keys preserved"


def test_secrets_never_appear_in_logs(endpoints: Endpoints, unique: str, tmp_path: Path) -> None:
    """Passwords of Redis (AUTH) and SASL stay out of every log line, also on errors."""
    redis = LocalRedis(tmp_path, password="s3cret-redis-pw")
    redis.start()
    try:
        port = free_port()
        env = worker_env(
            endpoints.bootstrap,
            redis.url,
            unique,
            metrics_port=port,
            filter_field="",
            key_by="k",
            window_time_field="",
            kafka_sasl_password="hunter2-sasl-pw",
            log_level="debug",
            window_idle_timeout_ms=500,
            **JSON_IO,
        )
        create_topics(endpoints.bootstrap, [env["RILL_INPUT_TOPIC"]], partitions=1)
        produce(
            endpoints.bootstrap,
            env["RILL_INPUT_TOPIC"],
            [(b"k", b'{"k": "a"}'), (b"k", b"garbage")],
        )
        log_path = tmp_path / "w.log"
        proc = start_worker(env, log_path)
        try:
            read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 1)
            redis.stop()  # errors mention the connection, never the password
            time.sleep(3)
        finally:
            stop_worker(proc)
        bad = dict(
            env, RILL_REDIS_URL="redis://:s3cret-redis-pw@127.0.0.1:1/0", RILL_BATCH_SIZE="-1"
        )
        check = subprocess.run(
            [sys.executable, "-m", "service", "check-config"],
            env=bad,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        text = log_path.read_text() + check.stdout + check.stderr
        assert "RILL_BATCH_SIZE" in check.stderr
        assert '"partitions assigned"' in text
        assert "s3cret-redis-pw" not in text
        assert "hunter2-sasl-pw" not in text
    finally:
        redis.stop()


def test_rill_status_shows_offsets_and_lag(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """`rill status`: committed and end offsets per partition, lag in records and seconds."""
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        window_type="none",
        filter_field="",
        key_by="",
        **JSON_IO,
    )
    topic = env["RILL_INPUT_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=2)
    produce(endpoints.bootstrap, topic, [(b"a", b'{"n": 1}')] * 50)
    proc = start_worker(env, tmp_path / "w.log")
    try:
        read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 50)
    finally:
        assert stop_worker(proc) == 0

    def status() -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "service", "status", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(done.stdout))

    caught_up = status()
    rows = caught_up["partitions"]
    assert isinstance(rows, list)
    assert sum(r["end"] for r in rows) == 50
    assert sum(r["lag"] for r in rows) == 0
    produce(endpoints.bootstrap, topic, [(b"a", b'{"n": 2}')] * 7)
    time.sleep(1.5)
    behind = status()["partitions"]
    assert isinstance(behind, list)
    assert sum(r["lag"] for r in behind) == 7
    assert max(r["lag_seconds"] for r in behind) >= 1.0
    assert caught_up["state"] == "EMPTY", "the stopped worker left the group"


def test_rill_tail_since_shows_only_newer_records(endpoints: Endpoints, unique: str) -> None:
    """`rill tail --since-ms`: records stamped before the time are left out, on every partition."""
    env = worker_env(endpoints.bootstrap, endpoints.redis_url, unique, **JSON_IO)
    topic = env["RILL_INPUT_TOPIC"]
    create_topics(endpoints.bootstrap, [topic], partitions=3)
    produce(endpoints.bootstrap, topic, [(f"k{i}".encode(), b'{"run": "old"}') for i in range(30)])
    time.sleep(0.05)
    since = time.time_ns() // 1_000_000
    produce(endpoints.bootstrap, topic, [(f"k{i}".encode(), b'{"run": "new"}') for i in range(12)])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "tail",
            topic,
            "--since-ms",
            str(since),
            "--timeout",
            "2",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    runs = [json.loads(line)["value"]["run"] for line in done.stdout.splitlines()]
    assert runs == ["new"] * 12
    assert f"12 records from {topic}" in done.stderr
