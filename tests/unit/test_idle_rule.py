"""The idle rule: a partition's watermark follows the wall clock only when it is read to its end.

Pure: the aggregator's tick is prepared from its owned partitions and the set the consumer
has read to their end; nothing is sent to a store here.
"""

from __future__ import annotations

from typing import Any

from service.processing.aggregates import Aggregation
from service.processing.aggregator import Aggregator, Owned, is_idle
from service.processing.windows import PartitionClock, WindowPlan, WindowSpec
from service.window_state import NO_TIME, Claim

TP0, TP1 = ("in", 0), ("in", 1)
TIMEOUT = 5_000


def _aggregator(idle_timeout_ms: int = TIMEOUT) -> Aggregator:
    spec = WindowSpec("tumbling", size_ms=1000, grace_ms=100)
    plan = WindowPlan(spec, (Aggregation.parse("count"),), "ts", "final", idle_timeout_ms)
    return Aggregator(plan, dlq_of=_no_dlq)


def _no_dlq(*_: Any) -> Any:
    raise AssertionError("no record goes to the DLQ here")


def _owned(last_record_wall_ms: int, watermark: int = 10_000) -> Owned:
    return Owned(
        epoch=1,
        applied=99,
        clock=PartitionClock(watermark + 100, watermark),
        last_record_wall_ms=last_record_wall_ms,
        watermark_at_last_record=watermark,
    )


def test_read_to_the_end_and_quiet_for_the_timeout_is_idle() -> None:
    """At its end and no record for the idle timeout: idle."""
    assert is_idle(_owned(last_record_wall_ms=0), True, TIMEOUT, TIMEOUT)
    assert not is_idle(_owned(last_record_wall_ms=0), True, TIMEOUT - 1, TIMEOUT)


def test_a_partition_behind_its_end_is_never_idle() -> None:
    """Records wait for it (fetched or not): however long the fetcher served others, not idle.

    This is the exactly-once clean-run bug: a partition served less for longer than the
    timeout counted as idle and its watermark jumped past its own waiting records.
    """
    assert not is_idle(_owned(last_record_wall_ms=0), False, 10 * TIMEOUT, TIMEOUT)


def test_a_partition_without_a_record_yet_is_never_idle() -> None:
    """No watermark yet (no record ever): nothing to advance from."""
    owned = _owned(last_record_wall_ms=0, watermark=NO_TIME)
    assert not is_idle(owned, True, 10 * TIMEOUT, TIMEOUT)


def test_tick_advances_only_partitions_at_their_end() -> None:
    """Of two quiet partitions, only the one read to its end moves, by the time it was quiet."""
    agg = _aggregator()
    agg.claimed(TP0, Claim(1, 99, 10_100, 10_000, []), now_wall_ms=0)
    agg.claimed(TP1, Claim(1, 99, 10_100, 10_000, []), now_wall_ms=0)
    prepared = agg.prepare_tick(7_000, at_end={TP0})
    assert set(prepared.calls) == {TP0}
    assert prepared.clocks[TP0].watermark == 10_000 + 7_000
    assert not prepared.calls[TP0].deltas, "a tick carries no records"
    assert agg.prepare_tick(7_000, at_end=set()).calls == {}


def test_no_idle_timeout_never_ticks() -> None:
    """RILL_WINDOW_IDLE_TIMEOUT_MS=0: watermarks move by records only."""
    agg = _aggregator(idle_timeout_ms=0)
    agg.claimed(TP0, Claim(1, 99, 10_100, 10_000, []), now_wall_ms=0)
    assert agg.prepare_tick(10**9, at_end={TP0}).calls == {}


def test_a_resume_restarts_the_idle_clock() -> None:
    """Time paused by back-pressure is not idleness, even at the end."""
    agg = _aggregator()
    agg.claimed(TP0, Claim(1, 99, 10_100, 10_000, []), now_wall_ms=0)
    agg.restart_idle_clocks(6_000)
    assert agg.prepare_tick(7_000, at_end={TP0}).calls == {}
    assert set(agg.prepare_tick(11_000, at_end={TP0}).calls) == {TP0}
