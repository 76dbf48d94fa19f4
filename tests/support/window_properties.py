"""The window property tests, once: the unit tier runs them on `MemoryWindowStore`, the
integration tier on a real Redis and a real Redis Cluster. Only the store differs.

`StoreFactory(layout)` returns a store; stores a factory returns share one backend (one
Redis, or one fake server), so two engines are two workers of one group.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from service.errors import RecordError
from service.processing.aggregates import Aggregation, ops_of
from service.processing.windows import WindowPlan, WindowResult, WindowSpec
from service.records import DlqEntry, InRecord, Keyed
from service.runtime.window_engine import WindowEngine
from service.state.codec import StateLayout
from service.state.store import WindowStore
from tests.support.window_model import (
    AGGREGATES,
    Rec,
    run_count_model,
    run_model,
    same_values,
)

StoreFactory = Callable[[StateLayout], WindowStore]

SPECS = {
    "tumbling": WindowSpec("tumbling", size_ms=100, grace_ms=20),
    "hopping": WindowSpec("hopping", size_ms=100, advance_ms=40, grace_ms=20),
    "sliding": WindowSpec("sliding", size_ms=60, grace_ms=15),
    "session": WindowSpec("session", gap_ms=30, grace_ms=10),
}
COUNT_SPECS = {
    "count_tumbling": WindowSpec("count_tumbling", count=3),
    "count_hopping": WindowSpec("count_hopping", count=4, count_advance=2),
    "count_hopping_by_one": WindowSpec("count_hopping", count=3, count_advance=1),
}
EMITS = ("final", "update")

records_st = st.lists(
    st.tuples(
        st.integers(0, 1),  # partition
        st.sampled_from(["a", "b", "c|x"]),  # key (a '|' in a key must not confuse ids)
        st.integers(0, 1000),  # event time: random order, so some records are late
        st.integers(-50, 50),  # amount
    ),
    min_size=1,
    max_size=60,
)
cuts_st = st.lists(st.integers(0, 60), max_size=6)
# One window fed by two batches, then closed: the store's merge always runs (random
# streams find this case only most of the time).
SPLIT_WINDOW = {"raw": [(0, "a", 10, 1), (0, "a", 20, 2), (0, "a", 500, 3)], "cuts": [1, 2]}


def dlq_entry(record: InRecord, error: RecordError) -> DlqEntry:
    """The DLQ entry of a record, as the worker builds it (topic `dlq`, clock 0)."""
    return DlqEntry.of(record, "dlq", error, 0)


def layout_of(plan: WindowPlan, prefix: str | None = None) -> StateLayout:
    """The store layout of a plan, under a fresh prefix unless one is given."""
    spec = plan.spec
    return StateLayout(
        prefix=prefix or f"prop-{uuid.uuid4().hex[:8]}",
        group="g",
        kind=spec.kind,
        size_ms=spec.count if spec.counted else spec.size_ms,
        emit=plan.emit,
        ops=tuple(ops_of(plan.stored)),
        ttl_s=600,
        advance=spec.count_advance if spec.kind == "count_hopping" else 0,
    )


def engine_of(
    make_store: StoreFactory,
    spec: WindowSpec,
    emit: str,
    dlq_of: Callable[[InRecord, RecordError], DlqEntry] = dlq_entry,
) -> WindowEngine:
    """An engine with the model's aggregates, on a store of `make_store`."""
    plan = WindowPlan(spec, tuple(Aggregation.parse(a) for a in AGGREGATES), "ts", emit, 0)
    return WindowEngine(plan, make_store(layout_of(plan)), dlq_of)


def stream_of(raw: list[tuple[int, str, int, int]]) -> list[Rec]:
    """Model records with per-partition offsets; a key lives in one partition."""
    offsets = {0: 0, 1: 0}
    stream = []
    for partition, key, ts, amount in raw:
        # Windows are per input partition: a key lives in one partition, as when the
        # producer partitions by the key.
        stream.append(Rec(partition, offsets[partition], f"{key}{partition}", ts, float(amount)))
        offsets[partition] += 1
    return stream


def drive(
    engine: WindowEngine, stream: list[Rec], cuts: list[int]
) -> tuple[list[WindowResult], int]:
    """Feed the stream in batches cut at `cuts`, acknowledging each; results and late count."""
    for p in (0, 1):
        engine.assign(("t", p), 0)
    keyed = [
        Keyed(
            InRecord("t", r.partition, r.offset, None, None, None, 0),
            r.key,
            {"ts": r.ts, "amount": r.amount},
        )
        for r in stream
    ]
    found: list[WindowResult] = []
    late = 0
    start = 0
    for cut in [*sorted(set(cuts)), len(keyed)]:
        if cut <= start:
            continue
        out = engine.apply(keyed[start:cut], 0)
        found.extend(out.results)
        late += out.late
        for tp, seq in out.seqs.items():
            engine.acknowledge(tp, seq)
        start = cut
    return found, late


def check_windows_equal_model(
    make_store: StoreFactory,
    kind: str,
    emit: str,
    raw: list[tuple[int, str, int, int]],
    cuts: list[int],
) -> None:
    """Every window's aggregate equals the model's (final: exactly the closed windows)."""
    spec = SPECS[kind]
    stream = stream_of(raw)
    model = run_model(stream, kind, spec.size_ms, spec.advance_ms, spec.gap_ms, spec.grace_ms)
    found, late = drive(engine_of(make_store, spec, emit), stream, cuts)
    assert late == len(model.late)
    emitted: dict[tuple[str, int, int], dict[str, Any]] = {}
    for result in found:
        emitted[(result.key, result.start, result.end)] = result.values
    if emit == "final":
        assert all(r.final for r in found)
        assert len(found) == len(emitted), "no window emitted twice"
        assert set(emitted) == model.closed
        for window in model.closed:
            assert same_values(emitted[window], model.windows[window]), window
    else:
        # The last update of each window is its aggregate (sessions merged away are
        # superseded by the merged session's id).
        for window, values in model.windows.items():
            assert window in emitted, window
            assert same_values(emitted[window], values), window


def check_record_without_event_time_is_a_dlq_entry(make_store: StoreFactory) -> None:
    """A record without its event-time field becomes a DLQ entry (with its reason)."""
    errors: list[str] = []

    def entry(rec: InRecord, err: RecordError) -> DlqEntry:
        errors.append(f"{err.stage}:{err}")
        return dlq_entry(rec, err)

    engine = engine_of(make_store, SPECS["tumbling"], "final", entry)
    engine.assign(("t", 0), 0)
    record = InRecord("t", 0, 0, b"k", b"v", None, 0)
    out = engine.apply([Keyed(record, "k", {"amount": 1})], 0)
    assert errors == ["transform:event time field 'ts' is missing"]
    assert [(e.stage, e.key, e.value, e.source_offset) for e in out.dlq] == [
        ("transform", b"k", b"v", 0)
    ]


def check_custom_reducer_moves_to_a_new_owner(make_store: StoreFactory) -> None:
    """A user reducer's accumulator lives in the store: a new owner continues it; the old
    owner is fenced."""
    from service.pipeline import Pipeline  # noqa: PLC0415 - the Python API under test

    pipeline = (
        Pipeline("amounts")
        .window("tumbling", size_ms=100, grace_ms=0, time_field="ts", idle_timeout_ms=0)
        .reduce("amounts", list, lambda acc, rec: [*acc, rec["amount"]])
    )
    plan = pipeline.window_plan
    assert plan is not None
    layout = layout_of(plan)

    def keyed(offset: int, ts: int, amount: float) -> Keyed:
        return Keyed(
            InRecord("t", 0, offset, None, None, None, 0), "k", {"ts": ts, "amount": amount}
        )

    first = WindowEngine(plan, make_store(layout), dlq_entry)
    first.assign(("t", 0), 0)
    assert first.apply([keyed(0, 10, 1.0), keyed(1, 20, 2.0)], 0).results == []
    second = WindowEngine(plan, make_store(layout), dlq_entry)
    second.assign(("t", 0), 0)  # a rebalance: the second worker now owns the partition
    stale = first.apply([keyed(2, 30, 100.0)], 0)
    assert stale.fenced == {("t", 0)}, "the old owner can no longer write"
    out = second.apply([keyed(2, 30, 3.0), keyed(3, 250, 4.0)], 0)
    assert [(r.start, r.end, r.values) for r in out.results] == [
        (0, 100, {"count": 3, "amounts": [1.0, 2.0, 3.0]})
    ]


def check_count_windows_equal_model(
    make_store: StoreFactory,
    kind: str,
    emit: str,
    raw: list[tuple[int, str, int, int]],
    cuts: list[int],
    handovers: set[int],
) -> None:
    """Count windows equal the naive model while the partitions change owner between
    batches, and the new owner is handed the last records again (a replay after a crash):
    final mode emits exactly the full windows, each once; update mode's last row of every
    window is its aggregate."""
    spec = COUNT_SPECS[kind]
    stream = stream_of(raw)
    model = run_count_model(stream, spec.count, spec.step)
    plan = WindowPlan(spec, tuple(Aggregation.parse(a) for a in AGGREGATES), None, emit, 0)
    layout = layout_of(plan)
    engines = [WindowEngine(plan, make_store(layout), dlq_entry) for _ in range(2)]
    keyed = [
        Keyed(
            InRecord("t", r.partition, r.offset, None, None, None, 0), r.key, {"amount": r.amount}
        )
        for r in stream
    ]
    acked: dict[tuple[str, int], int] = {}
    found: list[WindowResult] = []
    owner, start = 0, 0
    for tp in (("t", 0), ("t", 1)):
        engines[owner].assign(tp, 0)
    for turn, cut in enumerate([*sorted({min(c, len(keyed)) for c in cuts}), len(keyed)]):
        if cut <= start:
            continue
        replay = 0
        if turn in handovers:
            owner = 1 - owner
            for tp in (("t", 0), ("t", 1)):
                found.extend(engines[owner].assign(tp, 0, acked.get(tp, 0)).results)
            replay = min(start, 3)
        out = engines[owner].apply(keyed[start - replay : cut], 0)
        assert out.skipped == replay, "records applied before are skipped, not counted again"
        found.extend(out.results)
        for tp, seq in out.seqs.items():
            engines[owner].acknowledge(tp, seq)
            acked[tp] = seq
        start = cut
    if emit == "final":
        emitted = {(r.key, r.start, r.end): r.values for r in found}
        assert all(r.final for r in found)
        assert len(found) == len(emitted), "no window emitted twice"
        assert set(emitted) == model.closed
    else:
        # An update ends after the window's last record so far: the last one names it.
        emitted = {(r.key, r.start): ((r.key, r.start, r.end), r.values) for r in found}
        emitted = dict(emitted.values())
        assert not any(r.final for r in found)
        assert set(emitted) == set(model.windows)
    for window, values in emitted.items():
        assert same_values(values, model.windows[window]), window
