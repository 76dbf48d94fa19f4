"""The lag arithmetic: librdkafka statistics (and the client's live view) in, lag and at-end out.

The statistics documents are shaped as librdkafka 2.x emits them; the figures are those the
real broker gave for the cases named (see tests/integration/test_lag_idle.py).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from service.kafka.progress import Progress, partitions_of, progress_of
from service.observability.metrics import Metrics
from service.records import InRecord, first_offsets

UNKNOWN = -1001  # librdkafka's "not known"


def _partition(**fields: int) -> dict[str, Any]:
    base = {
        "partition": 0,
        "hi_offset": UNKNOWN,
        "ls_offset": UNKNOWN,
        "lo_offset": UNKNOWN,
        "app_offset": UNKNOWN,
        "next_offset": 0,
        "committed_offset": UNKNOWN,
        "stored_offset": UNKNOWN,
        "fetchq_cnt": 0,
        "consumer_lag": -1,
    }
    return {**base, **fields}


def _stats(partitions: dict[int, dict[str, Any]]) -> dict[str, Any]:
    parts = {str(p): _partition(partition=p, **f) for p, f in partitions.items()}
    parts["-1"] = _partition(partition=-1)
    return {"name": "rill#consumer-1", "type": "consumer", "topics": {"in": {"partitions": parts}}}


def _from_stats(stats: dict[str, Any], read_committed: bool = True) -> dict[Any, Progress]:
    """What the consumer computes when the live view equals the statistics."""
    return {
        tp: progress_of(p["app_offset"], p["hi_offset"], p, read_committed)
        for tp, p in partitions_of(stats).items()
    }


def test_exactly_once_lag_ignores_the_consumer_commit_that_never_happens() -> None:
    """Exactly-once: no consumer commit, librdkafka's consumer_lag is -1; lag is end - position."""
    stats = _stats(
        {
            0: {"hi_offset": 15000, "ls_offset": 15000, "lo_offset": 0, "app_offset": 1990},
            1: {"hi_offset": 15000, "ls_offset": 15000, "lo_offset": 0, "app_offset": 15000},
        }
    )
    got = _from_stats(stats)
    assert {tp: p.lag for tp, p in got.items()} == {("in", 0): 13010, ("in", 1): 0}
    assert {tp for tp, p in got.items() if p.at_end} == {("in", 1)}


def test_a_restart_counts_from_the_commit_read_at_assignment_not_a_stale_one() -> None:
    """After a restart, before any record: the position is the committed offset read at assign.

    With exactly-once that committed offset never moves again (commits go through the
    producer), which is why librdkafka's consumer_lag grows without bound; the position
    takes over as soon as the client knows it.
    """
    before = _stats({0: {"hi_offset": 500, "ls_offset": 500, "committed_offset": 500}})
    assert _from_stats(before)[("in", 0)] == Progress(500, 500)
    after = _stats(
        {0: {"hi_offset": 2000, "ls_offset": 2000, "committed_offset": 500, "app_offset": 2000}}
    )
    progress = _from_stats(after)[("in", 0)]
    assert (progress.lag, progress.at_end) == (0, True)


def test_a_backlog_fetched_but_not_yet_handed_out_is_lag_not_idle() -> None:
    """Fetched but not consumed (fetchq is the shared queue): position from the commit, behind."""
    stats = _stats(
        {
            0: {
                "hi_offset": 15000,
                "ls_offset": 15000,
                "committed_offset": 4000,
                "next_offset": 15000,
                "fetchq_cnt": 14533,
            }
        }
    )
    progress = _from_stats(stats)[("in", 0)]
    assert (progress.lag, progress.at_end) == (11000, False)


def test_nothing_committed_counts_from_the_log_start() -> None:
    """A fresh group before its first record: position is the log start (earliest)."""
    stats = _stats({0: {"hi_offset": 900, "ls_offset": 900, "lo_offset": 100}})
    assert _from_stats(stats)[("in", 0)].lag == 800


def test_an_empty_partition_is_at_its_end() -> None:
    """No record ever: log start = end, lag 0 (librdkafka says -1)."""
    stats = _stats({0: {"hi_offset": 0, "ls_offset": 0, "lo_offset": 0}})
    assert _from_stats(stats)[("in", 0)] == Progress(0, 0)


def test_unknown_end_or_position_is_no_lag_and_never_at_end() -> None:
    """Before the first fetch answer nothing is known: no lag figure, not at the end."""
    progress = _from_stats(_stats({0: {}}))[("in", 0)]
    assert (progress.lag, progress.at_end) == (None, False)


def test_commit_markers_count_once_the_position_moves_past_them() -> None:
    """A transactional input: stored offset = last record + 1, the marker after it.

    The high watermark is one past it; the client's position moves past the marker (as
    librdkafka does once it has read the control batch), and the lag is 0.
    """
    stats = _stats({0: {"hi_offset": 12, "ls_offset": 12, "committed_offset": 11}})
    assert _from_stats(stats)[("in", 0)].lag == 1
    progress = progress_of(12, 12, partitions_of(stats)[("in", 0)], read_committed=True)
    assert (progress.lag, progress.at_end) == (0, True)


def test_an_open_transaction_is_not_lag_when_reading_committed() -> None:
    """Records of an open transaction cannot be read yet: the end is the last stable offset."""
    p = _partition(hi_offset=21, ls_offset=18, app_offset=18)
    assert progress_of(18, 21, p, read_committed=True) == Progress(18, 18)
    assert progress_of(18, 21, p, read_committed=False) == Progress(18, 21)


def test_a_stable_offset_older_than_the_live_high_watermark_is_not_trusted() -> None:
    """The high watermark moved since the statistics: the last stable offset may have too."""
    p = _partition(hi_offset=21, ls_offset=18, app_offset=18)
    progress = progress_of(18, 30, p, read_committed=True)
    assert (progress.end, progress.at_end) == (30, False)


def test_a_rewound_partition_falls_back_to_its_commit_not_the_old_position() -> None:
    """Just rewound (the client's position unknown): the stale app_offset is not used."""
    p = _partition(hi_offset=10, ls_offset=10, app_offset=10, committed_offset=7)
    progress = progress_of(UNKNOWN, 10, p, read_committed=True)
    assert (progress.position, progress.at_end) == (7, False)


def test_no_statistics_use_the_live_view_only() -> None:
    """Statistics off: position and high watermark of the client now, nothing more."""
    assert progress_of(40, 40, None, read_committed=True) == Progress(40, 40)
    assert progress_of(UNKNOWN, 40, None, read_committed=True).lag is None


def test_lag_gauges_records_and_seconds_agree() -> None:
    """Lag 0 shows 0 s; behind, the age of the last record processed, or time seen behind."""
    metrics = Metrics(CollectorRegistry())
    metrics.partition_lag({("in", 0): 0, ("in", 1): 5}, 1_000.0, {("in", 1): 990_000})
    metrics.partition_lag({("in", 2): 7}, 1_000.0, {})
    metrics.partition_lag({("in", 2): 9}, 1_030.0, {})

    def value(name: str, partition: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"topic": "in", "partition": partition})

    assert value("rill_consumer_lag", "0") == 0
    assert value("rill_consumer_lag_seconds", "0") == 0
    assert value("rill_consumer_lag", "1") == 5
    assert value("rill_consumer_lag_seconds", "1") == 10
    assert value("rill_consumer_lag", "2") == 9
    assert value("rill_consumer_lag_seconds", "2") == 30
    metrics.drop_partitions([("in", 2)])
    assert value("rill_consumer_lag", "2") is None


def test_records_in_the_workers_hands_count_as_lag() -> None:
    """A batch fetched but not delivered (held behind back-pressure) is still behind."""
    fetched_all = Progress(position=2000, end=2000)
    assert fetched_all.behind(first_in_hand=500) == 1500
    assert fetched_all.behind(first_in_hand=None) == 0
    assert Progress(position=1200, end=2000).behind(first_in_hand=1500) == 800  # rewound
    assert Progress(position=None, end=2000).behind(first_in_hand=500) is None


def test_first_offsets_of_the_batches_in_hand() -> None:
    """The lowest offset per partition over every batch held (empty ones included)."""

    def rec(partition: int, offset: int) -> InRecord:
        return InRecord("t", partition, offset, None, None, None, 0)

    batches = [[rec(0, 7), rec(1, 3), rec(0, 8)], (), None, [rec(0, 5)]]
    assert first_offsets(batches) == {("t", 0): 5, ("t", 1): 3}
