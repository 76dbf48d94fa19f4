"""Redis losing window state is detected, never silent (issue 9 C, B2, B11), over the
in-process worker: the real scripts on fakeredis, Kafka as lists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from service.errors import StateLayoutError, StateLostError
from service.records import TP
from service.runtime.ledger import SEQ_META, outbox_seq
from service.state.store import WindowStore
from service.window_state import Claim
from tests.support.inprocess import IN, OUT, WINDOWED, Run, events, feed, settings_for
from tests.support.memory_kafka import MemoryBroker

MODES = ["at_least_once", "exactly_once"]
TP0: TP = (IN, 0)


class _Watch:
    """A store that empties Redis on cue (before its n-th apply) and, unless `flush_at` is
    negative, stops the worker once a claim finds state lost (a held partition is paused:
    the input never drains)."""

    def __init__(
        self,
        inner: WindowStore,
        server: fakeredis.FakeServer,
        stop: Callable[[], None],
        flush_at: int = 0,
    ) -> None:
        self.inner, self.server, self.stop, self.flush_at = inner, server, stop, flush_at
        self.applies = 0
        self.lost = 0

    def claim(self, tp: TP, expect: int = 0) -> Claim:
        try:
            return self.inner.claim(tp, expect)
        except StateLostError:
            self.lost += 1
            if self.flush_at >= 0:
                self.stop()
            raise

    def apply(self, calls: Any) -> Any:
        self.applies += 1
        if self.applies == self.flush_at:
            fakeredis.FakeRedis(server=self.server).flushall()
        return self.inner.apply(calls)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _run(
    broker: MemoryBroker, server: fakeredis.FakeServer, guarantee: str, **kw: Any
) -> tuple[Run, list[_Watch]]:
    flush_at = kw.pop("flush_at", 0)
    watches: list[_Watch] = []
    holder: list[Run] = []

    def wrap(store: WindowStore) -> WindowStore:
        watch = _Watch(store, server, lambda: holder[0].worker.request_stop(), flush_at)  # noqa: PLW0108 - holder is filled after Run builds the store
        watches.append(watch)
        return watch

    settings = settings_for(guarantee, **{**WINDOWED, **kw})
    run = Run(broker, server, settings, store=wrap)
    holder.append(run)
    return run, watches


def _sample(run: Run, name: str, **labels: str) -> float | None:
    """A metric as /metrics showed it when the worker began to leave the group."""
    return run.samples_at_stop.get((name, frozenset(labels.items())))


def _first_run(guarantee: str) -> tuple[MemoryBroker, fakeredis.FakeServer]:
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    feed(broker, events(100), partitions=1)
    _run(broker, server, guarantee)[0].worker.run()
    assert broker.records(OUT), "windows closed"
    return broker, server


@pytest.mark.parametrize("guarantee", MODES)
def test_committed_offsets_carry_the_outbox_sequence_redis_reached(guarantee: str) -> None:
    """Both modes commit offset metadata naming the window outbox sequence (the marker)."""
    broker, _server = _first_run(guarantee)
    _offset, meta = broker.committed[TP0]
    assert meta.startswith(SEQ_META)
    assert outbox_seq(meta) > 0


@pytest.mark.parametrize("guarantee", MODES)
def test_redis_emptied_between_owners_holds_the_partition(guarantee: str) -> None:
    """RILL_STATE_LOSS=fail: Kafka has a marker, Redis nothing: held, not ready, counted."""
    broker, server = _first_run(guarantee)
    committed = broker.committed[TP0]
    out = len(broker.records(OUT))
    fakeredis.FakeRedis(server=server).flushall()
    feed(broker, [{"k": "c0", "ts": 10_000 + i, "amount": 1} for i in range(300)], partitions=1)
    run, watches = _run(broker, server, guarantee)
    run.worker.run()
    assert watches[0].lost == 1
    assert broker.committed[TP0] == committed, "nothing of it committed"
    assert len(broker.records(OUT)) == out, "nothing of it processed"
    ready, why = run.ready_at_stop
    assert not ready
    assert "lost" in why
    assert _sample(run, "rill_state_lost", topic=IN, partition="0") == 1
    labels = {"topic": IN, "partition": "0", "action": "held"}
    assert _sample(run, "rill_state_loss_total", **labels) == 1


@pytest.mark.parametrize("guarantee", MODES)
def test_reset_goes_on_counted_with_the_sequence_after_kafkas(guarantee: str) -> None:
    """RILL_STATE_LOSS=reset: the partition goes on from what Redis has; new windows go out."""
    broker, server = _first_run(guarantee)
    marker = outbox_seq(broker.committed[TP0][1])
    out = len(broker.records(OUT))
    fakeredis.FakeRedis(server=server).flushall()
    feed(broker, [{"k": "c0", "ts": 10_000 + 10 * i, "amount": 1} for i in range(50)], partitions=1)
    run, watches = _run(broker, server, guarantee, state_loss="reset", flush_at=-1)
    run.worker.run()
    assert watches[0].lost == 1
    assert len(broker.records(OUT)) > out, "windows closed after the reset go out"
    assert broker.committed[TP0][0] == len(broker.logs[TP0])
    assert outbox_seq(broker.committed[TP0][1]) > marker, "the sequence continues after Kafka's"
    labels = {"topic": IN, "partition": "0", "action": "reset"}
    assert _sample(run, "rill_state_loss_total", **labels) == 1
    assert run.ready_at_stop[0]


@pytest.mark.parametrize("guarantee", MODES)
def test_redis_emptied_while_owned_is_seen_by_the_next_apply(guarantee: str) -> None:
    """FLUSHALL mid-run: the apply answers lost (not fenced), the claim again holds it."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    feed(broker, events(400), partitions=1)
    run, watches = _run(broker, server, guarantee, batch_size=50, flush_at=4)
    run.worker.run()
    assert watches[0].lost == 1
    committed = broker.committed.get(TP0, (0, ""))[0]
    assert committed <= 150, "no offset past the batches Redis lost"
    assert not run.ready_at_stop[0]


@pytest.mark.parametrize("guarantee", MODES)
def test_changed_aggregates_fail_at_claim_with_the_fix(guarantee: str) -> None:
    """B11: other RILL_AGGREGATES over open windows: the worker stops at claim, says why."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    feed(broker, events(50), partitions=1)
    _run(broker, server, guarantee)[0].worker.run()
    committed = broker.committed[TP0]
    out = len(broker.records(OUT))
    feed(broker, events(20), partitions=1)
    run, _watches = _run(broker, server, guarantee, aggregates="count,sum:amount,max:amount")
    with pytest.raises(StateLayoutError, match="RILL_AGGREGATES"):
        run.worker.run()
    assert broker.committed[TP0] == committed
    assert len(broker.records(OUT)) == out
