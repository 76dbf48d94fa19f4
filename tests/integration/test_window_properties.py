"""Property: on random out-of-order streams, windows in Redis equal the reference model."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import RecordError
from service.processing.windows import Aggregation, WindowSpec, ops_of
from service.records import InRecord, OutRecord
from service.runtime.windowing import Keyed, WindowEngine, WindowPlan, WindowResult
from service.state.redis_store import RedisWindowStore
from tests.integration.conftest import Endpoints
from tests.support.window_model import AGGREGATES, Rec, run_model, same_values

pytestmark = pytest.mark.integration

SPECS = {
    "tumbling": WindowSpec("tumbling", size_ms=100, grace_ms=20),
    "hopping": WindowSpec("hopping", size_ms=100, advance_ms=40, grace_ms=20),
    "sliding": WindowSpec("sliding", size_ms=60, grace_ms=15),
    "session": WindowSpec("session", gap_ms=30, grace_ms=10),
}

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


def _engine(endpoints: Endpoints, spec: WindowSpec, emit: str) -> WindowEngine:
    plan = WindowPlan(spec, tuple(Aggregation.parse(a) for a in AGGREGATES), "ts", emit, 0)
    store = RedisWindowStore(
        endpoints.redis_url,
        cluster=False,
        prefix=f"prop-{uuid.uuid4().hex[:8]}",
        group="g",
        kind=spec.kind,
        size_ms=spec.size_ms,
        emit=emit,
        ops=ops_of(plan.aggregations),
        ttl_s=600,
    )
    return WindowEngine(plan, store, lambda rec, err: OutRecord("dlq", rec.key, rec.value))


def _drive(
    engine: WindowEngine, stream: list[Rec], cuts: list[int]
) -> tuple[list[WindowResult], int]:
    store = engine.store.start()
    try:
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
    finally:
        store.close()


def _stream(raw: list[tuple[int, str, int, int]]) -> list[Rec]:
    offsets = {0: 0, 1: 0}
    stream = []
    for partition, key, ts, amount in raw:
        # Windows are per input partition: a key lives in one partition, as when the
        # producer partitions by the key.
        stream.append(Rec(partition, offsets[partition], f"{key}{partition}", ts, float(amount)))
        offsets[partition] += 1
    return stream


@pytest.mark.parametrize("emit", ["final", "update"])
@pytest.mark.parametrize("kind", list(SPECS))
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=records_st, cuts=st.lists(st.integers(0, 60), max_size=6))
def test_windows_equal_reference_model(
    endpoints: Endpoints,
    kind: str,
    emit: str,
    raw: list[tuple[int, str, int, int]],
    cuts: list[int],
) -> None:
    """Every window's aggregate equals the model, for all window types and emit modes."""
    spec = SPECS[kind]
    stream = _stream(raw)
    model = run_model(stream, kind, spec.size_ms, spec.advance_ms, spec.gap_ms, spec.grace_ms)
    found, late = _drive(_engine(endpoints, spec, emit), stream, cuts)
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


def test_dlq_factory_is_used_for_records_without_event_time(endpoints: Endpoints) -> None:
    """A record without its event-time field becomes a DLQ entry, not a crash."""
    entries: list[str] = []

    def entry(rec: InRecord, err: RecordError) -> OutRecord:
        entries.append(f"{err.stage}:{err}")
        return OutRecord("dlq", rec.key, rec.value)

    engine = _engine(endpoints, SPECS["tumbling"], "final")
    engine.dlq_entry = entry
    engine.store.start()
    engine.assign(("t", 0), 0)
    out = engine.apply([Keyed(InRecord("t", 0, 0, None, None, None, 0), "k", {"amount": 1})], 0)
    assert len(out.dlq) == 1
    assert entries == ["transform:event time field 'ts' is missing"]


def test_custom_reducer_state_moves_to_a_new_owner_and_fences_the_old(
    endpoints: Endpoints,
) -> None:
    """A user reducer's accumulator lives in Redis: a new owner continues it; the old is fenced."""
    from service.pipeline import Pipeline  # noqa: PLC0415 - the Python API under test

    pipeline = (
        Pipeline("amounts")
        .window("tumbling", size_ms=100, grace_ms=0, time_field="ts", idle_timeout_ms=0)
        .reduce("amounts", list, lambda acc, rec: [*acc, rec["amount"]])
    )
    plan = pipeline.window_plan
    assert plan is not None
    prefix = f"reduce-{uuid.uuid4().hex[:8]}"

    def engine() -> WindowEngine:
        store = RedisWindowStore(
            endpoints.redis_url,
            cluster=False,
            prefix=prefix,
            group="g",
            kind="tumbling",
            size_ms=100,
            emit="final",
            ops=ops_of(plan.aggregations),
            ttl_s=600,
        )
        eng = WindowEngine(plan, store, lambda rec, err: OutRecord("dlq", rec.key, rec.value))
        store.start()
        return eng

    def keyed(offset: int, ts: int, amount: float) -> Keyed:
        return Keyed(
            InRecord("t", 0, offset, None, None, None, 0), "k", {"ts": ts, "amount": amount}
        )

    first = engine()
    first.assign(("t", 0), 0)
    assert first.apply([keyed(0, 10, 1.0), keyed(1, 20, 2.0)], 0).results == []
    second = engine()
    second.assign(("t", 0), 0)  # a rebalance: the second worker now owns the partition
    stale = first.apply([keyed(2, 30, 100.0)], 0)
    assert stale.fenced == {("t", 0)}, "the old owner can no longer write"
    out = second.apply([keyed(2, 30, 3.0), keyed(3, 250, 4.0)], 0)
    assert [(r.start, r.end, r.values) for r in out.results] == [
        (0, 100, {"count": 3, "amounts": [1.0, 2.0, 3.0]})
    ]
