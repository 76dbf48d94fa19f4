"""Count windows: assignment in offset order, the store closing a window when it is full,
both emit modes, hopping overlap, replays and owner changes, layout and configuration."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from service.app import build_window
from service.config import load_settings
from service.errors import ConfigError, StateLayoutError
from service.pipeline import Pipeline
from service.processing import count_windows
from service.processing.aggregates import ops_of
from service.processing.batch import to_window
from service.processing.count_windows import OpenWindow, join
from service.processing.windows import WindowPlan, WindowResult
from service.records import InRecord, Keyed
from service.runtime.window_engine import WindowEngine, inline_submit
from service.state import codec
from service.state.codec import StateLayout
from tests.support.memory_store import MemoryWindowStore
from tests.support.window_properties import dlq_entry, layout_of

TP0 = ("t", 0)


def _plan(kind: str = "count_tumbling", emit: str = "final", **kw: Any) -> WindowPlan:
    aggs = kw.pop("aggregates", ["count", "sum:amount", "first:amount", "last:amount"])
    plan = Pipeline().window(kind, emit=emit, aggregates=aggs, **kw).window_plan
    assert plan is not None
    return plan


def _engine(plan: WindowPlan, server: fakeredis.FakeServer, prefix: str = "cw") -> WindowEngine:
    engine = WindowEngine(plan, MemoryWindowStore(layout_of(plan, prefix), server), dlq_entry)
    engine.assign(TP0, 0)
    return engine


def _keyed(offset: int, key: str, amount: int, partition: int = 0) -> Keyed:
    return Keyed(InRecord("t", partition, offset, None, None, None, 0), key, {"amount": amount})


def _rows(results: list[WindowResult]) -> list[tuple[str, int, int, int, int, bool]]:
    return [
        (r.key, r.start, r.end, r.values["count"], r.values["sum_amount"], r.final) for r in results
    ]


def test_tumbling_join_opens_a_window_every_count_records() -> None:
    """Tumbling: records 0-2 of a key in one window, 3-5 in the next; a full one is dropped."""
    windows: tuple[OpenWindow, ...] = ()
    joined = []
    for offset in range(7):
        spans, windows = join(windows, offset * 10, 0, 3, 3)
        joined.append(spans)
    assert joined == [[(0, 0)]] * 3 + [[(30, 0)]] * 3 + [[(60, 0)]]
    assert windows == (OpenWindow(60, 0, 1),)


def test_hopping_join_overlaps_windows_advance_records_apart() -> None:
    """Hopping (4 records, every 2): a record joins every window that started within the
    last 4 records of its key, so most records are in two windows."""
    windows: tuple[OpenWindow, ...] = ()
    joined = []
    for offset in range(7):
        spans, windows = join(windows, offset, 0, 4, 2)
        joined.append([start for start, _ in spans])
    assert joined == [[0], [0], [0, 2], [0, 2], [2, 4], [2, 4], [4, 6]]
    assert windows == (OpenWindow(4, 0, 3), OpenWindow(6, 0, 1))


def test_open_windows_are_rebuilt_from_the_state_a_claim_loads() -> None:
    """A claim's state (id -> components, the count last) gives each key's open windows."""
    state: dict[tuple[str, int, int], list[Any]] = {
        ("a", 7, 0): [5, 9, 2],
        ("a", 3, 1): [5, 9, 3],
        ("b", 4, 0): [1, 4, 1],
        ("c", 1, 0): [1, 1, 4],  # full: the store would have closed it
    }
    assert count_windows.from_state(state, 4) == {
        "a": (OpenWindow(3, 1, 3), OpenWindow(7, 0, 2)),
        "b": (OpenWindow(4, 0, 1),),
    }


@pytest.mark.parametrize("emit", ["final", "update"])
def test_a_window_is_emitted_in_the_batch_that_fills_it(emit: str) -> None:
    """Final: a window once, when its count is reached, whatever the batches; update: every
    batch that changes a window, with the window's aggregate so far."""
    engine = _engine(_plan(count=3, emit=emit), fakeredis.FakeServer())
    first = engine.apply([_keyed(0, "a", 1), _keyed(1, "b", 10), _keyed(2, "a", 2)], 0)
    second = engine.apply([_keyed(3, "a", 4), _keyed(4, "a", 8)], 0)
    if emit == "final":
        assert _rows(first.results) == []
        assert _rows(second.results) == [("a", 0, 4, 3, 7, True)]
    else:
        assert sorted(_rows(first.results)) == [
            ("a", 0, 3, 2, 3, False),
            ("b", 1, 2, 1, 10, False),
        ]
        assert _rows(second.results) == [("a", 0, 4, 3, 7, False), ("a", 4, 5, 1, 8, False)]
    assert second.open_windows == {TP0: 2}, "b's and a's second window are still open"


def test_first_and_last_follow_offsets_not_event_time() -> None:
    """A count window's first/last are its first and last records in offset order."""
    engine = _engine(_plan(count=2), fakeredis.FakeServer())
    out = engine.apply([_keyed(0, "a", 5), _keyed(1, "a", 3)], 0)
    assert [(r.values["first_amount"], r.values["last_amount"]) for r in out.results] == [(5, 3)]


def test_hopping_windows_overlap_and_each_closes_when_full() -> None:
    """Hopping (3 records, every 2): windows start at a key's records 0, 2, 4, ...; each
    closes with its third record."""
    engine = _engine(_plan("count_hopping", count=3, count_advance=2), fakeredis.FakeServer())
    out = engine.apply([_keyed(i, "a", 2**i) for i in range(7)], 0)
    assert _rows(out.results) == [
        ("a", 0, 3, 3, 7, True),
        ("a", 2, 5, 3, 28, True),
        ("a", 4, 7, 3, 112, True),
    ]
    assert out.open_windows == {TP0: 1}, "the window from record 6 waits for two more"


def test_a_partial_window_never_closes_by_time() -> None:
    """Idle ticks send nothing for count windows, whatever the idle timeout: a partial
    window stays open until its key's next records fill it."""
    engine = _engine(_plan(count=2, idle_timeout_ms=1), fakeredis.FakeServer())
    assert engine.apply([_keyed(0, "a", 1)], 0).results == []
    tick = engine.begin_tick(10**12, {TP0}, inline_submit)
    assert tick.prepared.calls == {}
    assert engine.finish(tick, 10**12).results == []
    assert _rows(engine.apply([_keyed(1, "a", 2)], 10**12).results) == [("a", 0, 2, 2, 3, True)]


def test_a_new_owner_continues_the_open_windows_and_fences_the_old() -> None:
    """The open windows live in Redis: a new claim counts on from them; the old owner's
    next batch is fenced and counts nothing."""
    server = fakeredis.FakeServer()
    plan = _plan("count_hopping", count=3, count_advance=2)
    old = _engine(plan, server)
    assert old.apply([_keyed(0, "a", 1), _keyed(1, "a", 2), _keyed(2, "a", 4)], 0).results
    new = _engine(plan, server)
    assert old.apply([_keyed(3, "a", 100)], 0).fenced == {TP0}
    out = new.apply([_keyed(3, "a", 8), _keyed(4, "a", 16)], 0)
    assert _rows(out.results) == [("a", 2, 5, 3, 28, True)]


def test_a_replayed_call_whose_reply_was_lost_never_counts_twice() -> None:
    """A round trip that ran but whose reply was lost is answered stale when sent again;
    the claim again takes its outbox, and the records after it count from there."""
    engine = _engine(_plan(count=2), fakeredis.FakeServer())
    engine.apply([_keyed(0, "a", 1)], 0)
    flight = engine.begin([_keyed(1, "a", 2), _keyed(2, "a", 4)], {}, {}, inline_submit)
    again = engine.finish(engine.redo(flight), 0)  # the first reply "lost": sent again
    assert again.stale == [TP0]
    assert again.results == []
    outbox = engine.assign(TP0, 0)
    assert _rows(outbox.results) == [("a", 0, 2, 2, 3, True)], "the lost reply's window"
    out = engine.apply([_keyed(1, "a", 2), _keyed(2, "a", 4), _keyed(3, "a", 8)], 0)
    assert out.skipped == 2, "records already applied are skipped"
    assert _rows(out.results) == [("a", 2, 4, 2, 12, True)]


def test_items_of_one_record_are_counted_each_with_their_own_window_ids() -> None:
    """A record flat_mapped into several items of one key: each item counts, and a window
    that starts at its second item has an id of its own (offset, item)."""
    engine = _engine(_plan(count=1, emit="update"), fakeredis.FakeServer())
    out = engine.apply([_keyed(0, "a", 1), _keyed(0, "a", 2), _keyed(1, "a", 4)], 0)
    assert sorted(_rows(out.results)) == [
        ("a", 0, 1, 1, 1, False),
        ("a", 0, 1, 1, 2, False),
        ("a", 1, 2, 1, 4, False),
    ]


def test_a_reducer_folds_a_count_window_in_offset_order() -> None:
    """reduce() on count windows: the accumulator follows the window, and a new owner
    continues it from Redis."""
    server = fakeredis.FakeServer()
    pipeline = (
        Pipeline("p")
        .window("count_tumbling", count=3, aggregates=["count"])
        .reduce("amounts", list, lambda acc, rec: [*acc, rec["amount"]])
    )
    plan = pipeline.window_plan
    assert plan is not None
    first = _engine(plan, server)
    assert first.apply([_keyed(0, "a", 1), _keyed(1, "a", 2)], 0).results == []
    second = _engine(plan, server)
    out = second.apply([_keyed(2, "a", 3), _keyed(3, "a", 4)], 0)
    assert [(r.start, r.end, r.values) for r in out.results] == [
        (0, 3, {"count": 3, "amounts": [1, 2, 3]})
    ]
    out = second.apply([_keyed(4, "a", 5), _keyed(5, "a", 6)], 0)
    assert [r.values["amounts"] for r in out.results] == [[4, 5, 6]]


def test_the_layout_tells_count_windows_apart() -> None:
    """The recorded layout names the count kind, the count and (hopping) the advance, so
    state of another window definition is never reused."""
    tumbling_ms = codec.layout_of(layout_of(Pipeline().window("tumbling", size_ms=3).window_plan))  # type: ignore[arg-type]
    by_count = codec.layout_of(layout_of(_plan(count=3)))
    hop_2 = codec.layout_of(layout_of(_plan("count_hopping", count=3, count_advance=2)))
    hop_1 = codec.layout_of(layout_of(_plan("count_hopping", count=3, count_advance=1)))
    assert len({tumbling_ms, by_count, hop_2, hop_1}) == 4
    assert "kind=count_hopping" in hop_2
    assert hop_2.endswith(";advance=2")
    assert "RILL_WINDOW_COUNT_ADVANCE=2" in codec.describe_layout(hop_2)
    assert "RILL_WINDOW_COUNT=3" in codec.describe_layout(by_count)


def test_time_window_layouts_are_recorded_as_before() -> None:
    """A time window's recorded layout is unchanged by count windows (no advance in it), so
    running state is not refused after an upgrade."""
    hopping = StateLayout("p", "g", "hopping", 100, "final", ("add",), 60, advance=7)
    assert codec.layout_of(hopping) == "v2;kind=hopping;size_ms=100;ops=add"


def test_a_claim_refuses_open_state_of_another_count_definition() -> None:
    """Open count windows of one definition are not taken over by another (fatal, naming
    the settings); a time-window layout's state is refused the same way."""
    server = fakeredis.FakeServer()
    _engine(_plan(count=3), server).apply([_keyed(0, "a", 1)], 0)
    for other in (_plan(count=4), _plan("count_hopping", count=3, count_advance=1)):
        store = MemoryWindowStore(layout_of(other, "cw"), server)
        with pytest.raises(StateLayoutError, match="RILL_WINDOW_COUNT=3"):
            store.claim(TP0, 0)
    timed = StateLayout(
        "cw", "g", "tumbling", 3, "final", tuple(ops_of(_plan(count=3).stored)), 600
    )
    with pytest.raises(StateLayoutError, match="RILL_WINDOW_TYPE=count_tumbling"):
        MemoryWindowStore(timed, server).claim(TP0, 0)


def test_count_windows_read_no_event_time() -> None:
    """A record without the time field still reaches a count window (it has no clock)."""
    plan = _plan(count=2, time_field="ts")
    record = InRecord("t", 0, 0, b"k", b"v", None, 0)
    keyed, failed = to_window(plan, record, [("k", {"amount": 1})], 0)
    assert failed == []
    assert [k.key for k in keyed] == ["k"]


def test_settings_build_the_count_window() -> None:
    """RILL_WINDOW_TYPE=count_hopping with RILL_WINDOW_COUNT(_ADVANCE) builds that window."""
    settings = load_settings(window_type="count_hopping", window_count=100, window_count_advance=25)
    plan = build_window(settings.window)
    assert plan is not None
    assert (plan.spec.kind, plan.spec.count, plan.spec.step) == ("count_hopping", 100, 25)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"kind": "count_tumbling"}, "count > 0"),
        ({"kind": "count_hopping", "count": 4}, "count_advance"),
        ({"kind": "count_hopping", "count": 4, "count_advance": 5}, "count_advance"),
    ],
)
def test_the_python_api_refuses_a_count_window_naming_the_argument(
    kwargs: dict[str, Any], names: str
) -> None:
    """Pipeline.window() refuses a count window it cannot assign, naming the argument."""
    kind = kwargs.pop("kind")
    with pytest.raises(ConfigError, match=names):
        Pipeline().window(kind, **kwargs)


def test_an_aggregate_may_not_take_the_name_of_a_hidden_component() -> None:
    """A count window refuses an aggregate named like its own hidden components."""
    with pytest.raises(ConfigError, match="_rill_records"):
        Pipeline().window("count_tumbling", count=2, aggregates=["count as _rill_records"])
