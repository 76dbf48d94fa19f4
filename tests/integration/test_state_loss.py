"""Redis losing window state, through worker processes on the real broker and a Redis of
the test's own (issue 9 C, B2, B11): detected and held, never silent."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.conftest import Endpoints
from tests.integration.helpers import (
    create_topics,
    produce,
    read_all,
    read_once,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = pytest.mark.integration

WINDOW = {
    "filter_field": "",
    "key_by": "k",
    "window_type": "tumbling",
    "window_size_ms": 1000,
    "window_grace_ms": 0,
    "window_time_field": "ts",
    "window_idle_timeout_ms": 0,
    "aggregates": "count,sum:amount",
    "input_format": "json",
    "input_wire": "plain",
    "output_format": "json",
    "output_wire": "plain",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test alone, without persistence: restarted, it is empty."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers."""
        server = shutil.which("redis-server") or "redis-server"
        args = [server, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, cwd=self.folder, stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("the test's redis-server does not answer")

    def stop(self) -> None:
        """Stop it; what it held is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of the test's own, started."""
    made = PrivateRedis(tmp_path)
    made.start()
    yield made
    made.stop()


def _feed(endpoints: Endpoints, topic: str, events: list[dict[str, Any]]) -> None:
    produce(endpoints.bootstrap, topic, ((b"k", json.dumps(e).encode()) for e in events))


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _wait(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def _windows(endpoints: Endpoints, topic: str) -> dict[int, int]:
    return {
        json.loads(r.value or b"")["window_start"]: json.loads(r.value or b"")["count"]
        for r in read_once(endpoints.bootstrap, topic)
    }


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_redis_restarted_empty_holds_the_partition(
    endpoints: Endpoints, private_redis: PrivateRedis, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """C: Redis restarted empty between owners: held, /readyz fails, metric says why."""
    create_topics(endpoints.bootstrap, [f"in-{unique}"], partitions=1)
    port = _free_port()
    env = worker_env(
        endpoints.bootstrap,
        private_redis.url,
        unique,
        processing_guarantee=guarantee,
        metrics_port=port,
        **WINDOW,
    )
    _feed(endpoints, f"in-{unique}", [{"k": "a", "ts": 100 * i, "amount": 1} for i in range(30)])
    first = start_worker(env, tmp_path / "first.log")
    assert len(read_all(endpoints.bootstrap, f"out-{unique}", 2, settle_s=2)) >= 2
    assert stop_worker(first) == 0
    before = _windows(endpoints, f"out-{unique}")

    private_redis.stop()
    private_redis.start()  # empty: no AOF, no RDB
    _feed(
        endpoints,
        f"in-{unique}",
        [{"k": "a", "ts": 5000 + 100 * i, "amount": 1} for i in range(30)],
    )
    second = start_worker(env, tmp_path / "second.log")
    try:
        held = _wait(
            lambda: _get(port, "/readyz")[0] == 503 and "lost" in _get(port, "/readyz")[1], 60
        )
        metrics = _get(port, "/metrics")[1]
        time.sleep(3)  # long enough for a worker that goes on to emit the new windows
        after = _windows(endpoints, f"out-{unique}")
    finally:
        stop_worker(second)
    assert held, (tmp_path / "second.log").read_text()[-3000:]
    assert 'rill_state_lost{partition="0",topic="in-' in metrics
    assert 'action="held"' in metrics
    assert after == before, "nothing of the held partition processed"


def test_a_quiet_owner_past_the_ttl_is_not_fenced(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """B2: quiet longer than RILL_STATE_TTL_S while owned: the windows still count it all."""
    create_topics(endpoints.bootstrap, [f"in-{unique}"], partitions=1)
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        redis_prefix=f"ttl-{unique}",
        state_ttl_s=2,
        **WINDOW,
    )
    proc = start_worker(env, tmp_path / "worker.log")
    try:
        _feed(endpoints, f"in-{unique}", [{"k": "a", "ts": 100 * i, "amount": 1} for i in range(5)])
        time.sleep(8)  # quiet for four TTLs, still the owner
        _feed(
            endpoints,
            f"in-{unique}",
            [{"k": "a", "ts": 500 + 100 * i, "amount": 1} for i in range(20)],
        )
        read_all(endpoints.bootstrap, f"out-{unique}", 1, timeout_s=60, settle_s=2)
    finally:
        stop_worker(proc)
    log = (tmp_path / "worker.log").read_text()
    assert "fenced" not in log
    assert _windows(endpoints, f"out-{unique}").get(0) == 10, log[-3000:]


def test_changed_aggregates_stop_the_worker_at_claim(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """B11: RILL_AGGREGATES changed over open windows: the worker exits at claim and says how."""
    create_topics(endpoints.bootstrap, [f"in-{unique}"], partitions=1)
    base = {**WINDOW, "redis_prefix": f"agg-{unique}"}
    env = worker_env(endpoints.bootstrap, endpoints.redis_url, unique, **base)
    _feed(endpoints, f"in-{unique}", [{"k": "a", "ts": 100 * i, "amount": 1} for i in range(25)])
    first = start_worker(env, tmp_path / "first.log")
    assert read_all(endpoints.bootstrap, f"out-{unique}", 2, settle_s=2)
    assert stop_worker(first) == 0  # the window [2000, 3000) is still open
    before = _windows(endpoints, f"out-{unique}")

    changed = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        **{**base, "aggregates": "count,sum:amount,max:amount"},
    )
    _feed(
        endpoints,
        f"in-{unique}",
        [{"k": "a", "ts": 2500 + 100 * i, "amount": 1} for i in range(20)],
    )
    second = start_worker(changed, tmp_path / "second.log")
    try:
        code = second.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        stop_worker(second)
    log = (tmp_path / "second.log").read_text()
    assert code not in (None, 0), log[-3000:]
    assert "RILL_AGGREGATES" in log
    assert _windows(endpoints, f"out-{unique}") == before
