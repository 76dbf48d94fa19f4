"""Count windows through a whole worker over the in-memory twins (the real Lua on
fakeredis, Kafka as lists): both guarantees, Redis failing before or after the script
ran, and a first owner whose deliveries all failed."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import fakeredis
import pytest

from service.errors import RillError
from service.state.store import WindowStore
from tests.support.inprocess import OUT, AbortAlways, Flaky, Run, feed, settings_for
from tests.support.memory_kafka import MemoryBroker
from tests.support.window_model import Rec, run_count_model

COUNTED = {
    "window_type": "count_hopping",
    "window_count": 4,
    "window_count_advance": 2,
    "window_idle_timeout_ms": 0,
    "aggregates": "count,sum:amount",
}
PARTITIONS = 2


def _events(n: int) -> list[dict[str, Any]]:
    return [{"k": f"c{i % 3}", "amount": i} for i in range(n)]


def _emitted(broker: MemoryBroker) -> Counter[tuple[str, int, int, int, int]]:
    out: Counter[tuple[str, int, int, int, int]] = Counter()
    for r in broker.records(OUT):
        v = json.loads(r.value or b"")
        out[(v["key"], v["window_start"], v["window_end"], v["count"], v["sum_amount"])] += 1
    return out


def _expected(events: list[dict[str, Any]]) -> Counter[tuple[str, int, int, int, int]]:
    """Each full window once: `feed` puts event i at partition i % 2, offset i // 2."""
    recs = [
        Rec(i % PARTITIONS, i // PARTITIONS, e["k"], 0, e["amount"]) for i, e in enumerate(events)
    ]
    model = run_count_model(recs, 4, 2)
    return Counter(
        (
            key,
            start,
            end,
            model.windows[(key, start, end)]["count"],
            int(model.windows[(key, start, end)]["sum_amount"]),
        )
        for key, start, end in model.closed
    )


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize(("before", "after"), [(0, 0), (3, 0), (0, 2)])
def test_each_full_window_is_emitted_once_whatever_redis_does(
    guarantee: str, before: int, after: int
) -> None:
    """Redis failing before the script ran, or after it (the reply lost, the call answered
    stale when sent again): every full count window is emitted exactly once, with the
    records it should hold, in both modes."""
    broker, events = MemoryBroker(), _events(240)
    feed(broker, events, PARTITIONS)
    flaky: list[Flaky] = []

    def wrap(store: WindowStore) -> WindowStore:
        flaky.append(Flaky(store, before, after))
        return flaky[0]  # type: ignore[return-value]

    settings = settings_for(guarantee, **COUNTED, batch_size=40)
    Run(broker, fakeredis.FakeServer(), settings, store=wrap).worker.run()
    assert _emitted(broker) == _expected(events)
    assert flaky[0].before == flaky[0].after == 0, "the faults happened"


def test_exactly_once_new_owner_emits_what_the_first_applied_once() -> None:
    """Windows the first owner applied but could not deliver are emitted by the next
    owner from the outbox, once, and its counting goes on from the first's open windows."""
    broker, server, events = MemoryBroker(), fakeredis.FakeServer(), _events(200)
    feed(broker, events, PARTITIONS)
    settings = settings_for("exactly_once", **COUNTED)
    first = Run(broker, server, settings)
    first.producer = AbortAlways(broker, first.worker.request_stop)
    with pytest.raises(RillError, match="stopped while kafka was unavailable"):
        first.worker.run()
    assert broker.records(OUT) == [], "nothing delivered by the first owner"
    Run(broker, server, settings).worker.run()
    assert _emitted(broker) == _expected(events)
