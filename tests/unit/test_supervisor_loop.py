"""The supervisor's loop with real child processes that open no client: reports merged,
a killed child restarted and counted, SIGTERM drains (no broker, no Redis)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from prometheus_client import CollectorRegistry, Counter, Gauge

from service.config import Settings, load_settings
from service.runtime.child import ChildReport
from service.runtime.slots import Probe
from service.runtime.supervisor import Supervisor


def counting_child(_settings: Settings, slot: int, _txn: str, conn: Connection) -> None:
    """A child that counts 10 x (slot + 1) records, reports every 50 ms, stops on SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    registry = CollectorRegistry()
    Counter("rill_records_in", "in", ["topic"], registry=registry).labels("t").inc(10 * (slot + 1))
    Gauge("rill_assigned_partitions", "p", registry=registry).set(2)
    probe = Probe(True, "loop turned", True, "ready")
    while True:
        conn.send(ChildReport(probe, list(registry.collect())))
        if stop.wait(0.05):
            break
    conn.send(ChildReport(probe, list(registry.collect())))
    conn.close()


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60  # a bound on the wait, not a timed assertion
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _sample(supervisor: Supervisor, name: str, labels: dict[str, str] | None = None) -> float:
    for family in supervisor.registry.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == (labels or {}):
                return float(sample.value)
    return float("nan")


def test_supervisor_restarts_a_killed_child_keeps_its_counts_and_drains() -> None:
    """Two children report; SIGKILL of one -> started again and counted, its counted records
    kept in the total; request_stop -> every child gets SIGTERM, run() returns 0."""
    settings = load_settings(processes=2, metrics_port=0, retry_base_s=0.05)
    supervisor = Supervisor(settings, target=counting_child)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(supervisor.run()))
    runner.start()
    try:
        _until(lambda: supervisor.ready_check()[0], "both children ready")
        assert _sample(supervisor, "rill_records_in_total", {"topic": "t"}) == 30
        assert _sample(supervisor, "rill_assigned_partitions") == 4
        assert supervisor.live() == (True, "2 processes live")
        victim = supervisor.pids[0]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _until(lambda: supervisor.slots[0].starts == 2, "the restart")
        _until(lambda: supervisor.ready_check()[0], "the new child ready")
        assert supervisor.pids[0] != victim
        assert _sample(supervisor, "rill_child_restarts_total", {"process": "0"}) == 1
        assert _sample(supervisor, "rill_records_in_total", {"topic": "t"}) == 40
        children = [pid for pid in supervisor.pids.values() if pid is not None]
    finally:
        supervisor.request_stop()
        runner.join(60)
    assert result == [0]
    assert supervisor.pids == {}
    for pid in children:
        assert not _alive(pid), f"child {pid} left running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
