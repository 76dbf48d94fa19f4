"""Faults under live traffic, each in both modes: idle ticks close the windows, and still
nothing is lost, nothing is twice in exactly-once, every window is right.

Run by `make chaos` (RILL_CHAOS=1) after the backfill rows. One row in both modes:
`RILL_CHAOS=1 .venv/bin/python -m pytest tests/chaos -p no:cacheprovider -k 'live and stall'`
(rows: redis-stall, sigkill, broker-restart, scale, redis-failover; add `and exactly` or
`and at_least` for one mode; `-k 'live and redis'` takes both Redis rows). `make soak`
runs every live row SOAK_RUNS times in a row (tests/chaos/soak.md).
"""

from __future__ import annotations

import random
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.chaos import live
from tests.chaos.live import REDIS_TIMEOUT_S, RUNS, Fault, LiveRun, LiveScenario
from tests.chaos.stack import ChaosStack
from tests.chaos.verdict import RESULTS, Row, document

pytestmark = pytest.mark.integration

STALL_S = REDIS_TIMEOUT_S + 1.5


def _stall(run: LiveRun) -> None:
    """Redis frozen past the workers' socket timeout: scripts under way run after
    SIGCONT, but their replies were given up."""
    run.stack.stall_redis(STALL_S, run.fleet.pause)


def _kill(run: LiveRun) -> None:
    run.fleet.kill_random()


def _restart_broker(run: LiveRun) -> None:
    run.stack.stop_kafka()
    run.stack.start_missing()


def _scale_out(run: LiveRun) -> None:
    run.fleet.add()
    run.fleet.add()


def _scale_in(run: LiveRun) -> None:
    slot = random.Random(3).choice(run.fleet.live())
    code = run.fleet.leave(slot)
    if code != 0:
        run.notes.append(f"{slot.name} left with exit code {code} after SIGTERM")


def _failover(run: LiveRun) -> None:
    """The replica is cut off (its replication link frozen) while the burst goes on,
    the primary dies (SIGKILL), and the replica is promoted; the proxy follows it."""
    assert run.pair is not None
    assert run.proxy is not None
    pair = run.pair
    pair.link.freeze()
    try:
        run.fleet.pause(2.0)
        written = pair.repl_offset(pair.primary)
        pair.signal(pair.primary, signal.SIGKILL)
    finally:
        pair.link.close()
    missed = written - pair.repl_offset(pair.replica)
    pair.promote()
    run.proxy.switch(pair.replica)
    if missed <= 0:
        run.notes.append("the replica missed no write: the failover row tested nothing")
    slots = run.fleet.live()

    def detected() -> bool:
        return any(
            run.fleet.ready(s) not in (0, 200) and "rill_state_lost{" in run.fleet.metrics(s)
            for s in slots
        )

    if not run.fleet.wait(detected, 45):
        run.notes.append(
            f"state loss not detected: the promoted replica missed {missed} bytes of the "
            "replication stream; 45 s later no worker fails /readyz with rill_state_lost"
        )


def _each_phase(
    in_burst: Sequence[float], in_lull: Sequence[float], act: live.Act, tag: str
) -> live.PlanOf:
    """The fault once in every burst and once in every lull, `in_burst` / `in_lull` s
    into it (taken in turn, cycle by cycle)."""

    def plan(cycles: int) -> list[Fault]:
        out = []
        for c in range(cycles):
            out += [
                Fault("burst", c, in_burst[c % len(in_burst)], act, tag),
                Fault("lull", c, in_lull[c % len(in_lull)], act, tag),
            ]
        return out

    return plan


HOPPING = {"window_type": "hopping", "window_size_ms": 2000, "window_advance_ms": 1000}

SCENARIOS = [
    LiveScenario(
        "redis-stall",
        f"Redis SIGSTOP {STALL_S:g} s (socket timeout {REDIS_TIMEOUT_S:g} s) in every "
        "burst and lull",
        2,
        # A burst's stall ends early in the lull; the lull's lands when idle ticks close
        # the burst's windows (> the idle timeout after the workers' last record).
        _each_phase([0.5, 0.3, 0.7], [1.3, 1.6, 1.9], _stall, "stall"),
    ),
    LiveScenario(
        "sigkill",
        "SIGKILL a random worker (restarted) in every burst and lull",
        2,
        _each_phase([1.5, 1.0, 2.0], [1.5, 1.0, 2.0], _kill, "kill"),
    ),
    LiveScenario(
        "broker-restart",
        "broker stopped and started mid-burst",
        2,
        lambda cycles: [Fault("burst", min(1, cycles - 1), 1.0, _restart_broker, "broker")],
    ),
    LiveScenario(
        "scale",
        "workers 1 → 3 (burst) → 2 (lull), hopping 2 s / 1 s windows",
        1,
        lambda cycles: [
            Fault("burst", 0, 1.5, _scale_out, "out"),
            Fault("lull", min(1, cycles - 1), 1.5, _scale_in, "in"),
        ],
        settings=HOPPING,
    ),
    LiveScenario(
        "redis-failover",
        "Redis replica cut off 2 s mid-burst, primary SIGKILLed, replica promoted "
        "(REPLICAOF NO ONE) behind a proxy; RILL_STATE_LOSS=fail",
        2,
        lambda cycles: [Fault("burst", min(1, cycles - 1), 1.0, _failover, "failover")],
        failover=True,
    ),
]

RUN_IDS = [f"run{i + 1}" for i in range(RUNS)]


@pytest.mark.parametrize("attempt", range(RUNS), ids=RUN_IDS)
@pytest.mark.parametrize("mode", live.MODES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"live-{s.name}" for s in SCENARIOS])
def test_live_traffic_loses_nothing_and_keeps_windows_exact(
    stack: ChaosStack,
    table: list[Row],
    tmp_path: Path,
    scenario: LiveScenario,
    mode: str,
    attempt: int,
) -> None:
    """Under live traffic and the scenario's faults: every window emitted and right,
    nothing twice in exactly-once, every late record explained."""
    row = live.run_live(stack, tmp_path, scenario, mode, seed=17 + attempt)
    if RUNS > 1:
        row.scenario += f" #{attempt + 1}"
    table.append(row)
    RESULTS.write_text(document(table))  # as it goes; rewritten whole at the end
    digest = tmp_path / "digest.txt"
    assert row.failures == [], f"{row.scenario} / {mode}: {row.failures} (logs in {tmp_path})\n" + (
        digest.read_text() if digest.exists() else ""
    )
