"""RILL_PROCESSES=2 on the real broker and Redis: two group members in one container, a
child SIGKILLed and restarted, one /metrics for both, SIGTERM drains them."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from service.demo import demo_orders
from service.kafka.groups import group_status
from tests.integration.conftest import Endpoints
from tests.integration.helpers import (
    HeldFeed,
    create_topics,
    produce,
    read_all,
    start_worker,
    stop_worker,
    worker_env,
)
from tests.integration.test_operations import free_port, scrape, status_of
from tests.integration.test_windows_worker import WINDOW, _events, _model_input
from tests.integration.test_worker import IN_SERDE, NO_FILTER, OUT_SERDE
from tests.support.window_model import run_model, same_values

pytestmark = pytest.mark.integration

HALF = 3000


def _started(log: Path) -> list[dict[str, int]]:
    """The supervisor's 'process started' lines so far: process, pid, starts."""
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("event") == "process started"]


def _problems(log: Path) -> str:
    """The warning and error lines of the supervisor's log (children's included)."""
    lines = [x for x in log.read_text().splitlines() if '"level": "warning"' in x or '"error"' in x]
    return "\n".join(lines[-20:])


def _until(what: str, check: object, timeout_s: float = 120.0) -> None:
    """Wait until `check()` is true (a bound on the wait, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_two_processes_share_the_group_survive_a_kill_and_drain(
    endpoints: Endpoints, unique: str, tmp_path: Path, guarantee: str
) -> None:
    """Both children get partitions of a 4-partition topic; a SIGKILLed child is restarted
    and counted; every record is processed (exactly once with exactly_once); /metrics sums
    the children; SIGTERM drains both and the supervisor exits 0."""
    port = free_port()
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        processes=2,
        metrics_port=port,
        processing_guarantee=guarantee,
        **NO_FILTER,
    )
    bootstrap, topic = endpoints.bootstrap, env["RILL_INPUT_TOPIC"]
    create_topics(bootstrap, [topic], partitions=4)
    orders = list(demo_orders(2 * HALF, seed=19))
    items = [(o["customer_id"].encode(), IN_SERDE.encode(o)) for o in orders]
    produce(bootstrap, topic, items[:HALF])
    log = tmp_path / "supervisor.log"
    proc = start_worker(env, log)
    try:
        _until("/readyz", lambda: status_of(port, "/readyz") == 200)
        members = group_status({"bootstrap.servers": bootstrap}, env["RILL_GROUP_ID"], topic)
        assert len(members.members) == 2
        assert all(m.partitions for m in members.members)
        assert scrape(port)[("rill_assigned_partitions", ())] == 4

        victim = _started(log)[0]
        os.kill(victim["pid"], signal.SIGKILL)
        restarted = ("rill_child_restarts_total", (("process", str(victim["process"])),))
        _until("the restart", lambda: scrape(port).get(restarted) == 1)
        assert [x["starts"] for x in _started(log) if x["process"] == victim["process"]] == [1, 2]

        produce(bootstrap, topic, items[HALF:])
        sink = read_all(bootstrap, env["RILL_OUTPUT_TOPIC"], 2 * HALF)
        ids = Counter(OUT_SERDE.decode(r.value)["order_id"] for r in sink if r.value)
        assert set(ids) == {o["order_id"] for o in orders}
        if guarantee == "exactly_once":
            assert max(ids.values()) == 1
        _until("both children ready again", lambda: status_of(port, "/readyz") == 200)
        metrics = scrape(port)
        assert metrics[("rill_records_in_total", (("topic", topic),))] >= 2 * HALF
        assert metrics[("rill_assigned_partitions", ())] == 4
    finally:
        code = stop_worker(proc, signal.SIGTERM, timeout_s=90)
    assert code == 0, _problems(log)
    children = [x["pid"] for x in _started(log)]
    assert not [pid for pid in children if _alive(pid)]
    stopped = [json.loads(x) for x in log.read_text().splitlines() if '"process stopped"' in x]
    assert sorted(x["exit_code"] for x in stopped) == [0, 0]


def test_windows_stay_exact_when_a_child_is_killed_mid_stream(
    endpoints: Endpoints, unique: str, tmp_path: Path
) -> None:
    """Exactly-once windows, two children: one SIGKILLed mid-stream and restarted by the
    supervisor (its slot's transactional id fences the dead one); every window equals the
    model and none is emitted twice."""
    total = 40_000
    port = free_port()
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        redis_prefix=unique,
        processes=2,
        metrics_port=port,
        processing_guarantee="exactly_once",
        transaction_timeout_ms=10_000,
        **WINDOW,
    )
    topics = [env["RILL_INPUT_TOPIC"], env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]]
    create_topics(endpoints.bootstrap, topics)
    events = _events(total, seed=8)
    feed = HeldFeed(
        endpoints.bootstrap,
        env["RILL_INPUT_TOPIC"],
        [(e["customer_id"].encode(), json.dumps(e).encode()) for e in events],
        rate=4_000,
        hold_at=total // 2,
    )
    log = tmp_path / "supervisor.log"
    proc = start_worker(env, log)
    try:
        _until("/readyz", lambda: status_of(port, "/readyz") == 200)
        feed.start()
        read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 200, settle_s=0)
        os.kill(_started(log)[1]["pid"], signal.SIGKILL)
        assert not feed.finished(), "killed while input was still arriving"
        feed.release()
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
        restarts = scrape(port).get(("rill_child_restarts_total", (("process", "1"),)))
        assert restarts == 1, _problems(log)
    finally:
        feed.release()
        code = stop_worker(proc, signal.SIGTERM, timeout_s=90)
    assert code == 0, _problems(log)
    emitted: Counter[tuple[str, int, int]] = Counter()
    values: dict[tuple[str, int, int], dict[str, object]] = {}
    for rec in sink:
        v = json.loads(rec.value or b"")
        window = (v.pop("key"), v.pop("window_start"), v.pop("window_end"))
        emitted[window] += 1
        values[window] = v
    missing, extra = model.closed - set(emitted), set(emitted) - model.closed
    assert (len(missing), len(extra)) == (0, 0), f"{sorted(missing)[:3]} {_problems(log)}"
    twice = [w for w, n in emitted.items() if n > 1]
    assert twice == [], f"exactly-once: emitted twice {twice[:3]} {_problems(log)}"
    wrong = [w for w in model.closed if not same_values(values[w], model.windows[w])]
    assert wrong == []
