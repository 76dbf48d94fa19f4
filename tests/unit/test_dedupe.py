"""De-duplication: the pure verdict, the engine over the real scripts on fakeredis, and a
whole Worker over the in-memory twins in both guarantee modes and both pipeline kinds."""

from __future__ import annotations

import json
import re
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from service.app import build_plan
from service.cli import main
from service.config import load_settings
from service.errors import ConfigError, RillError, StateError
from service.pipeline import Pipeline
from service.processing import dlq
from service.processing.dedupe import DedupePlan, field_id, judge, record_id
from service.records import TP, InRecord, Mark, OutRecord
from service.runtime.window_engine import WindowEngine, inline_submit
from service.state.codec import StateLayout
from service.state.store import WindowStore
from tests.support.inprocess import (
    DLQ,
    IN,
    OUT,
    WINDOWED,
    AbortAlways,
    Flaky,
    Run,
    feed,
    settings_for,
)
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer
from tests.support.memory_store import MemoryWindowStore

TP0: TP = ("in", 0)
DEDUPE: dict[str, Any] = {"dedupe_field": "id", "dedupe_window_ms": 60_000}


def rec(offset: int, ts: int, tp: TP = TP0) -> InRecord:
    return InRecord(tp[0], tp[1], offset, None, b"{}", None, ts)


def with_duplicates(n: int, every: int = 4) -> tuple[list[dict[str, Any]], int]:
    """`n` distinct events, every `every`-th one sent twice more (once right after, once
    much later), and how many duplicates that makes."""
    events: list[dict[str, Any]] = [
        {"id": f"e{i}", "k": f"c{i % 3}", "ts": 10 * i, "amount": i} for i in range(n)
    ]
    out, dups = [], 0
    for i, event in enumerate(events):
        out.append(event)
        if i % every == 0:
            out.append(dict(event))
            dups += 1
    for i in range(0, n, every):
        out.append(dict(events[i]))
        dups += 1
    return out, dups


def feed_by_id(broker: MemoryBroker, events: list[dict[str, Any]], partitions: int = 2) -> None:
    """Each event to the partition of its id, as a keyed producer's retries land: the ids
    are remembered per input partition."""
    broker.create(IN, partitions)
    for event in events:
        record = OutRecord(IN, event["id"].encode(), json.dumps(event).encode())
        broker.append(record, partition=int(event["id"][1:]) % partitions)


def sink_ids(broker: MemoryBroker) -> Counter[str]:
    return Counter(json.loads(r.value or b"")["id"] for r in broker.records(OUT))


def duplicates_counted(run: Run) -> float:
    return float(run.worker.metrics.records_duplicate.labels(IN)._value.get())


# --- the verdict (pure) ------------------------------------------------------------------


def test_a_repeat_within_the_batch_is_a_duplicate_and_the_first_is_kept() -> None:
    """In-batch repeats: the first record of an id is kept, later ones in the window dropped."""
    marks = [Mark(rec(0, 1_000), "a"), Mark(rec(1, 1_500), "a"), Mark(rec(2, 1_600), "b")]
    verdict = judge(marks, {}, within_ms=1_000)
    assert [m.record.offset for m in verdict.duplicates] == [1]
    assert verdict.marks[TP0].ids == {"a": 2_000, "b": 2_600}
    assert verdict.marks[TP0].trim_ms == 1_600


def test_an_id_past_its_window_is_not_a_duplicate() -> None:
    """Expiry: a repeat at or after first-seen + window is kept, and restarts the window."""
    marks = [Mark(rec(0, 1_000), "a"), Mark(rec(1, 2_000), "a"), Mark(rec(2, 2_999), "a")]
    verdict = judge(marks, {}, within_ms=1_000)
    assert [m.record.offset for m in verdict.duplicates] == [2]
    assert verdict.marks[TP0].ids == {"a": 3_000}


def test_an_id_the_state_remembers_is_a_duplicate_until_it_expires() -> None:
    """Ids read from Redis count as seen until their expiry time."""
    marks = [Mark(rec(5, 1_000), "a"), Mark(rec(6, 1_000), "b")]
    verdict = judge(marks, {TP0: {"a": 1_001, "b": 1_000}}, within_ms=500)
    assert [m.id for m in verdict.duplicates] == ["a"]
    assert [m.id for m in verdict.kept] == ["b"]


def test_record_id_reads_nested_fields_and_refuses_a_missing_one() -> None:
    """A dotted field reaches nested values; a record without the id is a `dedupe` RecordError."""
    plan = DedupePlan(field_id("meta.id"), 1_000, name="meta.id")
    assert record_id(plan, {"meta": {"id": 7}}) == "7"
    with pytest.raises(RillError, match="no dedupe id"):
        record_id(plan, {"meta": {}})


def test_a_window_that_is_not_positive_is_refused_at_start() -> None:
    """A window of 0, or RILL_DEDUPE_DLQ without a field, fails at start with a
    ConfigError naming the setting (Pipeline.dedupe: the argument)."""
    with pytest.raises(ConfigError, match="within_ms"):
        Pipeline("p").dedupe("id", within_ms=0)
    with pytest.raises(ConfigError, match="RILL_DEDUPE_WINDOW_MS"):
        settings_for(dedupe_field="id", dedupe_window_ms=0)
    with pytest.raises(ConfigError, match="RILL_DEDUPE_FIELD"):
        settings_for(dedupe_dlq=True)


# --- the engine over the real scripts ----------------------------------------------------


def engine(server: fakeredis.FakeServer | None = None) -> WindowEngine:
    layout = StateLayout("rill", "g", "none", 0, "final", (), 3_600)
    store = MemoryWindowStore(layout, server)
    plan = DedupePlan(field_id("id"), 1_000)
    eng = WindowEngine(None, store, lambda r, e: pytest.fail(f"no DLQ entry expected: {e}"), plan)
    eng.assign(TP0, 0)
    return eng


def out(name: str) -> tuple[OutRecord, ...]:
    return (OutRecord(OUT, None, name.encode()),)


def test_engine_remembers_ids_across_batches_and_forgets_them_after_the_window() -> None:
    """Expiry across batches: an id kept in one batch drops its repeat in the next, until
    the window passed (Redis trims it)."""
    eng = engine()
    first = eng.begin([], {}, {TP0: 0}, inline_submit, [Mark(rec(0, 1_000), "a", out("a0"))])
    done = eng.finish(first, 0)
    assert [o.value for o in done.outputs] == [b"a0"]
    second = eng.begin([], {}, {TP0: 1}, inline_submit, [Mark(rec(1, 1_999), "a", out("a1"))])
    done = eng.finish(second, 0)
    assert done.outputs == []
    assert done.duplicates == 1
    third = eng.begin([], {}, {TP0: 2}, inline_submit, [Mark(rec(2, 2_000), "a", out("a2"))])
    assert [o.value for o in eng.finish(third, 0).outputs] == [b"a2"]
    seen = eng.store.client.zrange(eng.store.keys(TP0).seen, 0, -1, withscores=True)  # type: ignore[attr-defined]
    assert seen == [(b"a", 3_000.0)], "the expired entry was replaced"


def test_an_apply_that_did_not_run_leaves_no_id_behind() -> None:
    """A call fenced by another claim records nothing: its records are not duplicates later."""
    server = fakeredis.FakeServer()
    old = engine(server)
    sent: list[Any] = []

    def later(call: Any) -> Future[Any]:
        sent.append(call)
        return Future()

    flight = old.begin([], {}, {TP0: 0}, later, [Mark(rec(0, 1_000), "a", out("a"))])
    new = engine(server)  # another worker claims the partition before the apply runs
    assert flight.future is not None
    flight.future.set_result(sent[0]())
    done = old.finish(flight, 0)
    assert done.fenced == {TP0}
    assert done.outputs == []
    assert done.duplicates == 0
    again = new.begin([], {}, {TP0: 0}, inline_submit, [Mark(rec(0, 1_000), "a", out("a"))])
    assert [o.value for o in new.finish(again, 0).outputs] == [b"a"]


# --- the worker over the twins -------------------------------------------------------------


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "in-turn"])
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_stateless_sink_holds_each_id_once_and_the_counter_the_duplicates(
    guarantee: str, overlap: bool
) -> None:
    """A stateless pipeline drops exactly the input's duplicates (in-batch and across
    batches), counts them and sends them to the DLQ with stage `duplicate`."""
    broker = MemoryBroker()
    events, dups = with_duplicates(60)
    feed_by_id(broker, events)
    settings = settings_for(
        guarantee, **DEDUPE, dedupe_dlq=True, batch_size=7, state_overlap=overlap
    )
    run = Run(broker, fakeredis.FakeServer(), settings)
    run.worker.run()
    assert sink_ids(broker) == Counter(f"e{i}" for i in range(60))
    assert duplicates_counted(run) == dups
    stages = Counter(dlq.reason_of(r.headers)[dlq.ERROR_STAGE] for r in broker.records(DLQ))
    assert stages == {"duplicate": dups}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_windowed_aggregates_count_each_id_once(guarantee: str) -> None:
    """A windowed pipeline aggregates only the first record of each id; duplicates are
    counted, and without RILL_DEDUPE_DLQ not sent to the DLQ."""
    broker = MemoryBroker()
    events, dups = with_duplicates(90)
    feed(broker, events, partitions=1)
    settings = settings_for(guarantee, **WINDOWED, **DEDUPE, batch_size=11)
    run = Run(broker, fakeredis.FakeServer(), settings)
    run.worker.run()
    counted = sum(json.loads(r.value or b"")["count"] for r in broker.records(OUT))
    closed = sum(1 for i in range(90) if (10 * i) // 100 * 100 + 100 <= 890)
    assert counted == closed, "each id aggregated once"
    assert duplicates_counted(run) == dups
    assert broker.records(DLQ) == []


def test_a_filtered_record_is_remembered_and_a_record_without_id_goes_to_the_dlq() -> None:
    """Duplicates of a record the filter drops are still duplicates; a record without the
    id field is a DLQ entry with stage `dedupe`, never dropped silently."""
    broker = MemoryBroker()
    rows: list[dict[str, Any]] = [
        {"id": "a", "status": "cancelled"},
        {"id": "a", "status": "cancelled"},
        {"x": 1},
    ]
    feed(broker, rows, partitions=1)
    settings = settings_for(
        **DEDUPE, filter_field="status", filter_op="ne", filter_value="cancelled"
    )
    run = Run(broker, fakeredis.FakeServer(), settings)
    run.worker.run()
    assert broker.records(OUT) == []
    assert duplicates_counted(run) == 1
    [bad] = broker.records(DLQ)
    assert dlq.reason_of(bad.headers)[dlq.ERROR_STAGE] == "dedupe"


@pytest.mark.parametrize("window", [{}, WINDOWED], ids=["stateless", "windowed"])
def test_a_replay_after_a_crash_is_not_a_duplicate_of_itself(window: dict[str, Any]) -> None:
    """Exactly-once: the first worker applies (ids recorded) but its transaction never
    commits; the next owner re-emits the outbox and skips the replayed records: no record
    is taken for a duplicate of itself, each id reaches the sink once."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    events, dups = with_duplicates(40)
    feed(broker, events, partitions=1)
    settings = settings_for("exactly_once", **window, **DEDUPE, batch_size=1_000)
    first = Run(broker, server, settings)
    first.producer = AbortAlways(broker, first.worker.request_stop)
    with pytest.raises(RillError, match="stopped while kafka was unavailable"):
        first.worker.run()
    assert broker.records(OUT) == []
    second = Run(broker, server, settings)
    second.worker.run()
    assert duplicates_counted(second) == 0, "replays are skipped, never judged"
    if not window:
        assert sink_ids(broker) == Counter(f"e{i}" for i in range(40))
    else:
        counted = sum(json.loads(r.value or b"")["count"] for r in broker.records(OUT))
        assert counted == sum(1 for i in range(40) if (10 * i) // 100 * 100 + 100 <= 390)
    assert dups > 0


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize(("before", "after"), [(2, 0), (0, 2)])
def test_lost_replies_and_failed_applies_drop_exactly_the_duplicates(
    guarantee: str, before: int, after: int
) -> None:
    """Redis failing before the script ran, or after (reply lost: claimed again, outbox
    re-emitted): each id once at the sink in exactly-once, at least once in
    at-least-once, and never a kept record counted as a duplicate."""
    broker = MemoryBroker()
    events, dups = with_duplicates(50)
    feed_by_id(broker, events)
    flaky: list[Flaky] = []

    def wrap(store: WindowStore) -> WindowStore:
        flaky.append(Flaky(store, before, after))
        return flaky[0]  # type: ignore[return-value]

    settings = settings_for(guarantee, **DEDUPE, batch_size=9)
    run = Run(broker, fakeredis.FakeServer(), settings, store=wrap)
    run.worker.run()
    ids = sink_ids(broker)
    assert set(ids) == {f"e{i}" for i in range(50)}
    if guarantee == "exactly_once":
        assert ids == Counter(f"e{i}" for i in range(50))
    assert duplicates_counted(run) <= dups
    assert flaky[0].before == flaky[0].after == 0


# --- the documentation's examples run ------------------------------------------------------


def _blocks(language: str) -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "dedupe.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def test_the_documented_yaml_and_python_examples_run(tmp_path: Path) -> None:
    """docs/dedupe.md: its YAML loads into the dedupe settings, its Python builds the plan."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(_blocks("yaml")[0])
    settings = load_settings(config)
    assert (settings.dedupe.id_field, settings.dedupe.window_ms) == ("order_id", 3_600_000)
    assert build_plan(settings).dedupe is not None
    scope: dict[str, Any] = {}
    exec(_blocks("python")[0], scope)  # noqa: S102 - the documentation's own example
    plan = scope["pipeline"].dedupe_plan
    assert plan.id_of({"source": "web", "order_id": 7}) == "web:7"
    assert plan.to_dlq


class FailingReads:
    """A store whose dedupe read fails `n` times (Redis not answering), then works."""

    def __init__(self, inner: WindowStore, n: int) -> None:
        self.inner, self.n = inner, n

    def seen(self, ids: Any) -> Any:
        if self.n:
            self.n -= 1
            raise StateError("Redis does not answer")
        return self.inner.seen(ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_failed_dedupe_read_is_retried_behind_back_pressure(guarantee: str) -> None:
    """The batch's id read failing (Redis down) pauses and retries; nothing is dropped or
    delivered twice meanwhile."""
    broker = MemoryBroker()
    events, dups = with_duplicates(30)
    feed_by_id(broker, events)
    stores: list[FailingReads] = []

    def wrap(store: WindowStore) -> WindowStore:
        stores.append(FailingReads(store, 3))
        return stores[0]

    run = Run(
        broker, fakeredis.FakeServer(), settings_for(guarantee, **DEDUPE, batch_size=8), store=wrap
    )
    run.worker.run()
    assert sink_ids(broker) == Counter(f"e{i}" for i in range(30))
    assert duplicates_counted(run) == dups
    assert stores[0].n == 0
    assert run.worker.metrics.retries.labels("redis")._value.get() >= 3


def test_partition_revoked_while_its_round_trip_is_under_way_goes_out_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exactly-once, stateless dedupe: a rebalance takes a partition while its batch's apply
    is in flight; the old owner delivers nothing of it, the new owner re-emits its outputs
    from the outbox: each id once, each duplicate once in the DLQ."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    events, dups = with_duplicates(200)
    feed_by_id(broker, events)
    settings = settings_for("exactly_once", **DEDUPE, dedupe_dlq=True, batch_size=150)
    calls = {"n": 0}
    consume = MemoryConsumer.consume

    def revoking(self: MemoryConsumer, max_records: int, timeout_s: float) -> list[Any]:
        calls["n"] += 1
        if calls["n"] == 3 and (IN, 1) in self.positions:
            assert first.busy, "a round trip is under way"
            self.revoke([(IN, 1)])
        return consume(self, max_records, timeout_s)

    monkeypatch.setattr(MemoryConsumer, "consume", revoking)
    first = Run(broker, server, settings)
    first.worker.run()
    assert calls["n"] >= 3, "the revoke happened"
    monkeypatch.setattr(MemoryConsumer, "consume", consume)
    Run(broker, server, settings).worker.run()
    assert sink_ids(broker) == Counter(f"e{i}" for i in range(200))
    reasons = [dlq.reason_of(r.headers) for r in broker.records(DLQ)]
    positions = Counter((r[dlq.SOURCE_PARTITION], r[dlq.SOURCE_OFFSET]) for r in reasons)
    assert len(positions) == dups
    assert set(positions.values()) == {1}, "each duplicate once in the DLQ"


def test_check_config_names_the_dedupe_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rill check-config` says what is de-duplicated, by which field, within how long."""
    for name, value in {"RILL_DEDUPE_FIELD": "order_id", "RILL_DEDUPE_DLQ": "true"}.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "de-duplicated by order_id within 3600000 ms (duplicates to the DLQ: True)" in out


def test_routed_outputs_of_a_replay_go_out_once_to_their_topics() -> None:
    """Exactly-once, stateless dedupe with routing: the outputs kept in the outbox carry
    their routed topic; after a first owner whose transactions abort, each id reaches its
    own topic once."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    events, _dups = with_duplicates(40)
    for event in events:
        event["region"] = "eu" if int(event["id"][1:]) % 3 else "us"
    feed_by_id(broker, events)
    settings = settings_for(
        "exactly_once", **DEDUPE, route_field="region", route_topics="eu,us", batch_size=1_000
    )
    first = Run(broker, server, settings)
    first.producer = AbortAlways(broker, first.worker.request_stop)
    with pytest.raises(RillError, match="stopped while kafka was unavailable"):
        first.worker.run()
    Run(broker, server, settings).worker.run()
    for topic in ("eu", "us"):
        got = Counter(json.loads(r.value or b"")["id"] for r in broker.records(topic))
        want = {f"e{i}" for i in range(40) if (topic == "eu") == bool(i % 3)}
        assert got == Counter({i: 1 for i in want}), topic
