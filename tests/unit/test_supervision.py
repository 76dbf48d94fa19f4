"""RILL_PROCESSES: the supervisor's pure rules (restart backoff, container health) and the
merge of the children's metrics into one /metrics."""

from __future__ import annotations

import sys

import pytest
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric

from service.config import load_settings
from service.errors import ConfigError
from service.kafka.clients import producer_config
from service.observability.logging import configure_logging
from service.observability.merge import MergedCollector, merge, monotonic
from service.runtime.slots import (
    CRASH_LOOP,
    STABLE_S,
    Probe,
    Slot,
    container_live,
    container_ready,
    restart_at,
    restart_delay,
)

READY = Probe(True, "loop turned", True, "ready")


def _running(index: int, now: float, probe: Probe = READY) -> Slot:
    slot = Slot(index)
    slot.started(now - 5)
    slot.reported(now - 0.5, probe)
    return slot


def test_restart_backoff_doubles_up_to_the_maximum() -> None:
    """A slot waits base, 2x, 4x ... after exits in a row, never longer than the maximum."""
    assert [restart_delay(n, 0.2, 1.0) for n in range(6)] == [0.0, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert restart_delay(10_000, 0.2, 10.0) == 10.0


def test_an_exit_after_a_long_run_starts_the_backoff_again() -> None:
    """A child that ran STABLE_S is not part of a crash loop: its restart waits base only."""
    slot = Slot(0)
    for t in (0.0, 1.0, 2.0):
        slot.started(t)
        slot.exited(t + 0.5)
    assert slot.failures == 3
    assert restart_at(slot, 0.2, 10.0) == pytest.approx(2.5 + 0.8)
    slot.started(10.0)
    slot.exited(10.0 + STABLE_S)
    assert slot.failures == 1
    assert restart_at(slot, 0.2, 10.0) == pytest.approx(10.0 + STABLE_S + 0.2)
    assert slot.starts == 4


def test_container_is_ready_only_when_every_child_is() -> None:
    """/readyz: every child running and ready; otherwise each one that is not is named."""
    now = 100.0
    both = [_running(0, now), _running(1, now)]
    assert container_ready(both, now, 60) == (True, "2 processes ready")
    waiting = Probe(True, "ok", False, "no partitions assigned")
    ok, why = container_ready([_running(0, now), _running(1, now, waiting)], now, 60)
    assert not ok
    assert why == "process 1: no partitions assigned"
    dead = Slot(1)
    dead.started(now - 10)
    dead.exited(now - 1)
    ok, why = container_ready([_running(0, now), dead], now, 60)
    assert (ok, why) == (False, "process 1: not running")
    starting = Slot(0)
    starting.started(now)
    assert container_ready([starting], now, 60) == (False, "process 0: starting")


def test_a_child_that_stopped_reporting_is_not_ready() -> None:
    """A report older than the stall threshold does not count as ready."""
    slot = _running(0, 100.0)
    assert container_ready([slot], 100.0 + 61, 60)[0] is False


def test_container_liveness_tolerates_a_restart_but_not_a_stall() -> None:
    """/healthz holds while a dead child is within the stall threshold of its exit, and
    fails when it stays down, when a child's loop stalls or when it stops reporting."""
    now = 1000.0
    dead = Slot(1)
    dead.started(now - 30)
    dead.exited(now - 5)
    assert container_live([_running(0, now), dead], now, 60)[0] is True
    assert container_live([_running(0, now + 60), dead], now + 60, 60) == (
        False,
        "process 1: down for 65.0s, not restarted",
    )
    stalled = _running(0, now, Probe(False, "poll loop stalled for 61.0s", True, "ready"))
    assert container_live([stalled], now, 60) == (False, "process 0: poll loop stalled for 61.0s")
    silent = _running(0, now)
    assert container_live([silent], now + 61, 60)[0] is False
    quiet_start = Slot(0)
    quiet_start.started(now)
    assert container_live([quiet_start], now + 30, 60)[0] is True
    assert container_live([quiet_start], now + 61, 60)[0] is False


def test_a_crash_loop_fails_liveness_until_a_child_runs_stably() -> None:
    """CRASH_LOOP quick exits in a row fail /healthz, also while the next child runs; once
    that child has run STABLE_S the slot is live again."""
    slot = Slot(0)
    for t in range(CRASH_LOOP):
        slot.started(t * 10.0)
        slot.exited(t * 10.0 + 2)
    assert container_live([slot], 50.0, 60)[1].startswith("process 0: exited 5 times in a row")
    slot.started(52.0)
    slot.reported(53.0, READY)
    assert container_live([slot], 53.5, 60)[0] is False
    slot.reported(52.0 + STABLE_S, READY)
    assert container_live([slot], 52.5 + STABLE_S, 60)[0] is True


def _child_snapshot(records: float, partitions: float, last_poll: float) -> list[Metric]:
    registry = CollectorRegistry()
    Counter("rill_records_in", "in", ["topic"], registry=registry).labels("t").inc(records)
    Gauge("rill_assigned_partitions", "p", registry=registry).set(partitions)
    Gauge("rill_last_poll_timestamp_seconds", "lp", registry=registry).set(last_poll)
    return list(registry.collect())


def _value(families: list[Metric], sample: str) -> float:
    values = [s.value for f in families for s in f.samples if s.name == sample]
    assert len(values) == 1, values
    return values[0]


def test_merge_sums_counters_and_partitions_and_takes_the_oldest_poll() -> None:
    """/metrics of N children: counters and assigned partitions summed, the last poll the
    oldest child's, no `_created` sample."""
    merged = merge([_child_snapshot(100, 2, 50.0), _child_snapshot(40, 1, 45.0)])
    assert _value(merged, "rill_records_in_total") == 140
    assert _value(merged, "rill_assigned_partitions") == 3
    assert _value(merged, "rill_last_poll_timestamp_seconds") == 45.0
    assert not [s for f in merged for s in f.samples if s.name.endswith("_created")]


def test_a_dead_childs_counters_stay_in_the_totals() -> None:
    """The counters a dead child left are added to the living ones' (a total never drops
    at a restart); its gauges are not."""
    dead = _child_snapshot(100, 2, 50.0)
    retired = merge([[], monotonic(dead)])
    merged = merge([retired, _child_snapshot(5, 4, 60.0)])
    assert _value(merged, "rill_records_in_total") == 105
    assert _value(merged, "rill_assigned_partitions") == 4


def test_the_merged_collector_renders_as_one_exposition() -> None:
    """The supervisor's registry renders the merge as Prometheus text, one series each."""
    registry = CollectorRegistry()
    registry.register(MergedCollector(lambda: [_child_snapshot(3, 1, 1.0)] * 2))
    text = generate_latest(registry).decode()
    assert 'rill_records_in_total{topic="t"} 6.0' in text
    assert [line for line in text.splitlines() if line.startswith("rill_assigned")] == [
        "rill_assigned_partitions 2.0"
    ]


def test_processes_below_one_is_a_config_error() -> None:
    """RILL_PROCESSES=0 fails at start naming the setting."""
    with pytest.raises(ConfigError, match="RILL_PROCESSES"):
        load_settings(processes=0)


def test_a_slots_transactional_id_is_used_as_given() -> None:
    """Exactly-once: the producer takes the slot's transactional id; without one each
    process draws a new id."""
    settings = load_settings(processing_guarantee="exactly_once")
    conf = producer_config(settings, transactional_id="rill-g-abc-p1")
    assert conf["transactional.id"] == "rill-g-abc-p1"
    first = producer_config(settings)["transactional.id"]
    assert first.startswith("rill-rill-")
    assert first != producer_config(settings)["transactional.id"]


class _Writes:
    """A stdout that records each write call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        return


def test_each_log_line_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log line and its newline go out in one write, so the lines of several processes
    sharing one unbuffered stdout (PYTHONUNBUFFERED, RILL_PROCESSES) never interleave."""
    out = _Writes()
    monkeypatch.setattr(sys, "stdout", out)
    configure_logging("info", "json")
    structlog.get_logger("rill.test").info("one line", process=1)
    structlog.get_logger("rill.test").warning("another line", process=0)
    assert len(out.calls) == 2
    assert all(call.endswith("\n") and call.count("\n") == 1 for call in out.calls)
