"""Process-level faults, each in both modes: nothing lost, nothing twice in exactly-once,
every window right (state is exactly-once in both modes).

Run by `make chaos` (RILL_CHAOS=1) on the suite's own broker and Redis.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.chaos import dedupe, harness
from tests.chaos.feed import specials
from tests.chaos.harness import MODES, REDIS_STALL_S, SESSION_TIMEOUT_MS, Run, Scenario
from tests.chaos.regroup import run_regrouped
from tests.chaos.stack import ChaosStack
from tests.chaos.verdict import RESULTS, Row, document

pytestmark = pytest.mark.integration


def _kill(run: Run, step: int) -> None:
    run.fleet.kill_random()


def _freeze_redis(run: Run, step: int) -> None:
    run.stack.stall_redis(REDIS_STALL_S, run.fleet.pause)


def _lose_redis(run: Run, step: int) -> None:
    """Redis restarted empty; with RILL_STATE_LOSS=fail every worker holds and says why."""
    run.stack.drop_redis()
    run.stack.start_missing()
    slots = run.fleet.live()

    def held() -> bool:
        return all(
            run.fleet.ready(s) not in (0, 200) and "rill_state_los" in run.fleet.metrics(s)
            for s in slots
        )

    if not run.fleet.wait(held, 60):
        states = {s.name: run.fleet.ready(s) for s in slots}
        run.notes.append(
            "state loss not detected: 60 s after Redis restarted empty, /readyz "
            f"{states} and no rill_state_loss / rill_state_lost metric"
        )


def _restart_broker(run: Run, step: int) -> None:
    run.stack.stop_kafka()
    run.stack.start_missing()


def _scale(run: Run, step: int) -> None:
    if step == 0:
        run.fleet.add()
        run.fleet.add()
    else:
        slot = random.Random(3).choice(run.fleet.live())
        code = run.fleet.leave(slot)
        if code != 0:
            run.notes.append(f"{slot.name} left with exit code {code} after SIGTERM")


def _zombie(run: Run, step: int) -> None:
    slot = run.fleet.live()[0]
    run.fleet.freeze(slot)
    try:
        run.fleet.pause(2.5 * SESSION_TIMEOUT_MS / 1000)
    finally:
        run.fleet.thaw(slot)


def _nothing(run: Run, step: int) -> None:
    del run, step


def _kill_or_freeze(run: Run, step: int) -> None:
    """A Redis stall first, then SIGKILLs (a worker started while Redis does not answer
    exits at its start-up check, as it does in any pipeline: not this row's subject)."""
    if step == 0:
        _freeze_redis(run, step)
    else:
        _kill(run, step)


SCENARIOS = [
    Scenario("sigkill", "10 x SIGKILL a random worker, restarted", 2, 10, _kill),
    Scenario("redis-sigstop", f"Redis SIGSTOP {REDIS_STALL_S} s, SIGCONT", 2, 1, _freeze_redis),
    Scenario("redis-empty", "Redis restarted empty (no AOF)", 2, 1, _lose_redis, holds=True),
    Scenario("broker-restart", "broker stopped and started", 2, 1, _restart_broker),
    Scenario("scale", "workers 1 → 3 → 2 under load", 1, 2, _scale),
    Scenario("zombie", "SIGSTOP a worker 15 s (> session 6 s), SIGCONT", 2, 1, _zombie),
    Scenario(
        "routed-sigkill",
        "5 x SIGKILL a random worker, restarted; window results routed by key to 2 topics",
        2,
        5,
        _kill,
        routed=True,
    ),
    Scenario(
        "bad-input",
        "near-limit, oversize, NaN/±Inf and far-future records",
        2,
        1,
        _nothing,
        extra=specials(int(time.time() * 1000)),
    ),
]


DEDUPE = Scenario(
    "dedupe",
    "dedupe drops exactly the duplicates the input holds: "
    f"Redis SIGSTOP {REDIS_STALL_S} s, 3 x SIGKILL",
    2,
    4,
    _kill_or_freeze,
)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_fault_loses_nothing_and_keeps_windows_exact(
    stack: ChaosStack, table: list[Row], tmp_path: Path, scenario: Scenario, mode: str
) -> None:
    """Under the scenario's fault: no record lost, no EOS duplicate, no wrong window."""
    row = harness.run(stack, tmp_path, scenario, mode)
    table.append(row)
    RESULTS.write_text(document(table))  # as it goes; rewritten whole at the end
    digest = tmp_path / "digest.txt"
    assert row.failures == [], (
        f"{scenario.name} / {mode}: {row.failures} (logs in {tmp_path})\n"
        + (digest.read_text() if digest.exists() else "")
    )


@pytest.mark.parametrize("mode", MODES)
def test_dedupe_drops_exactly_the_duplicates_the_input_holds(
    stack: ChaosStack, table: list[Row], tmp_path: Path, mode: str
) -> None:
    """SIGKILLs and a Redis stall under a de-duplicating pipeline: every id in the sink
    (once in exactly-once), exactly the input's duplicates in the DLQ, no more, no fewer."""
    row = dedupe.run(stack, tmp_path, DEDUPE, mode)
    table.append(row)
    RESULTS.write_text(document(table))
    digest = tmp_path / "digest.txt"
    assert row.failures == [], f"dedupe / {mode}: {row.failures} (logs in {tmp_path})\n" + (
        digest.read_text() if digest.exists() else ""
    )


@pytest.mark.parametrize("mode", MODES)
def test_rekeyed_windows_exact(
    stack: ChaosStack, table: list[Row], tmp_path: Path, mode: str
) -> None:
    """group_by under a Redis stall and SIGKILLs: every window exact (each event counted
    once, in both modes); in exactly-once every event re-keyed once and every window
    emitted once."""
    row = run_regrouped(stack, tmp_path, mode)
    table.append(row)
    RESULTS.write_text(document(table))
    assert row.failures == [], f"group-by / {mode}: {row.failures} (logs in {tmp_path})"
