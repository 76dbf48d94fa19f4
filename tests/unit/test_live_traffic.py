"""Live traffic: windows closed by idle ticks, Redis replies lost, state lost or taken over.

Each test runs a whole worker in-process (the real Lua scripts on fakeredis, Kafka as
lists) with one fault injected on cue, and checks every window of the input reaches the
sink (issue: nothing lost under live traffic, items 1-3 and 4).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from service.errors import StateError
from service.records import TP
from service.runtime.real_edges import state_layout
from service.state.store import WindowStore
from service.window_state import ApplyCall, ApplyReply
from tests.support.inprocess import IN, WINDOWED, Run, feed, settings_for, windows
from tests.support.memory_kafka import MemoryBroker
from tests.support.memory_store import MemoryWindowStore

MODES = ["at_least_once", "exactly_once"]
# Windows closed by idle ticks: the watermark moves by wall clock once a partition is
# read to its end and quiet for this long.
LIVE = {**WINDOWED, "window_idle_timeout_ms": 1}


def _events(n: int) -> list[dict[str, Any]]:
    return [{"k": f"c{i % 3}", "ts": 10 * i, "amount": i} for i in range(n)]


def every_window(events: list[dict[str, Any]], partitions: int = 2) -> Counter[Any]:
    """Every window of the input, each once: ticks close the last ones too."""
    per: dict[tuple[int, str, int], list[int]] = {}
    for i, e in enumerate(events):
        per.setdefault((i % partitions, e["k"], e["ts"] - e["ts"] % 100), []).append(e["amount"])
    return Counter((k, start, len(a), sum(a)) for (_p, k, start), a in per.items())


def _has(want: Counter[Any]) -> Callable[[MemoryBroker], bool]:
    return lambda broker: set(windows(broker)) >= set(want)


def _is_tick(calls: dict[TP, ApplyCall]) -> bool:
    return bool(calls) and all(c.first_offset < 0 for c in calls.values())


class OnApply:
    """A store that runs `before(calls)` ahead of the first apply `when(calls)` picks,
    and loses that apply's reply (the script ran) when `lose_reply`."""

    def __init__(
        self,
        inner: WindowStore,
        when: Callable[[dict[TP, ApplyCall]], bool],
        before: Callable[[], None] = lambda: None,
        lose_reply: bool = False,
    ) -> None:
        self.inner, self.when, self.before, self.lose_reply = inner, when, before, lose_reply
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply(self, calls: dict[TP, ApplyCall]) -> dict[TP, ApplyReply]:
        if self.fired or not self.when(calls):
            return self.inner.apply(calls)
        self.fired = True
        self.before()
        replies = self.inner.apply(calls)
        if self.lose_reply:
            raise StateError("Timeout reading from socket (the script ran)")
        return replies


def _run(
    broker: MemoryBroker,
    server: fakeredis.FakeServer,
    mode: str,
    wrap: Callable[[WindowStore], OnApply],
    done: Callable[[MemoryBroker], bool],
    **extra: Any,
) -> tuple[Run, list[OnApply]]:
    stores: list[OnApply] = []

    def store(inner: WindowStore) -> WindowStore:
        stores.append(wrap(inner))
        return stores[-1]  # type: ignore[return-value]

    settings = settings_for(mode, **{**LIVE, "batch_size": 50, **extra})
    run = Run(broker, server, settings, store=store, done=done, deadline_s=8.0)
    _run_bounded(run)
    return run, stores


def _run_bounded(run: Run, seconds: float = 12.0) -> None:
    """Run the worker until the test's condition holds and nothing is in flight, or for
    `seconds` at most: a held (paused) partition keeps the twin from ever reporting the
    input drained, so the condition is watched from a thread too."""
    stop = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + seconds
        while not stop.wait(0.05):
            if time.monotonic() > deadline or (run.done(run.broker) and not run.busy):
                run.worker.request_stop()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run.worker.run()
    finally:
        stop.set()
        watcher.join()


@pytest.mark.parametrize("mode", MODES)
def test_lost_tick_reply_still_delivers_the_windows_it_closed(mode: str) -> None:
    """Item 1: an idle tick's script ran but its reply was lost; the retry finds it applied
    (the store tells a replayed tick by its outbox sequence), claims again and delivers
    the windows the lost tick closed — before, the retry closed nothing and acknowledged
    them away."""
    broker, server, events = MemoryBroker(), fakeredis.FakeServer(), _events(200)
    feed(broker, events)
    want = every_window(events)

    def wrap(inner: WindowStore) -> OnApply:
        return OnApply(inner, _is_tick, lose_reply=True)

    _, stores = _run(broker, server, mode, wrap, _has(want))
    assert stores[0].fired, "a tick's reply was lost"
    got = windows(broker)
    assert set(got) == set(want), f"missing {set(want) - set(got)}"
    if mode == "exactly_once":
        assert got == want, "each window once"


@pytest.mark.parametrize("mode", MODES)
def test_state_gone_in_one_partition_keeps_the_others_tick_replies(mode: str) -> None:
    """Item 2: one round trip of an idle tick where one partition's state is gone (Redis
    lost it) and another's script closed windows: the healthy partition's windows are
    delivered; only the lost partition is held."""
    broker, server, events = MemoryBroker(), fakeredis.FakeServer(), _events(200)
    feed(broker, events)
    healthy = every_window(events[::2], partitions=1)  # partition 0's records
    layout_keys: list[Any] = []

    def wrap(inner: WindowStore) -> OnApply:
        layout_keys.append(inner.keys((IN, 1)))  # type: ignore[attr-defined]

        def forget_partition_1() -> None:
            fakeredis.FakeRedis(server=server).delete(layout_keys[0].meta)

        return OnApply(inner, _is_tick, before=forget_partition_1)

    run, stores = _run(broker, server, mode, wrap, _has(healthy), state_loss="fail")
    assert stores[0].fired
    got = windows(broker)
    assert set(got) >= set(healthy), f"partition 0 lost {set(healthy) - set(got)}"
    ready, why = run.ready_at_stop
    assert not ready, "the lost partition is held"
    assert f"{IN}[1]" in why, "and named"


@pytest.mark.parametrize("mode", MODES)
def test_fenced_partition_still_assigned_is_claimed_again(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3: another claim fences a partition this worker still has assigned (a zombie's
    claim, or a failover that handed out its claim number again). The partition is not
    left fetched-and-skipped: it is rewound, paused, named by /readyz, and claimed again;
    every window goes out and its offsets are committed."""
    monkeypatch.setattr("service.runtime.partitions.FENCED_RETRY_S", 0.2, raising=False)
    broker, server, events = MemoryBroker(), fakeredis.FakeServer(), _events(400)
    feed(broker, events)
    want = every_window(events)
    settings = settings_for(mode, **{**LIVE, "batch_size": 50})

    def wrap(inner: WindowStore) -> OnApply:
        plan_window = run.worker.plan.window
        assert plan_window is not None
        other = MemoryWindowStore(state_layout(settings, plan_window), server)

        def steal() -> None:
            other.claim((IN, 1))

        def second_batch_of_1(calls: dict[TP, ApplyCall]) -> bool:
            call = calls.get((IN, 1))
            return call is not None and call.first_offset >= 50

        return OnApply(inner, second_batch_of_1, before=steal)

    stores: list[OnApply] = []

    def store(inner: WindowStore) -> WindowStore:
        stores.append(wrap(inner))
        return stores[-1]  # type: ignore[return-value]

    def drained(b: MemoryBroker) -> bool:
        done = max(run.consumer.stored.get((IN, 1), 0), b.committed.get((IN, 1), (0, ""))[0])
        return set(windows(b)) >= set(want) and done >= 200

    run = Run(broker, server, settings, store=store, done=drained, deadline_s=8.0)
    _run_bounded(run)
    assert stores[0].fired, "the partition was fenced"
    got = windows(broker)
    assert set(got) == set(want), f"missing {len(set(want) - set(got))} windows"
    assert broker.committed[(IN, 1)][0] == 200, "the fenced partition's offsets committed"
    assert run.worker.metrics.registry.get_sample_value(
        "rill_partitions_fenced_total", {"topic": IN}
    ), "counted"


def test_stale_reply_never_commits_a_lower_outbox_sequence() -> None:
    """Item 4 (exactly-once): the reply of a batch that closed nothing is lost and the
    outbox it finds is empty: the commit carries the sequence Redis reached (the claim's),
    never 0, so a later loss of Redis's state is still detected."""
    broker, server = MemoryBroker(), fakeredis.FakeServer()
    # One partition; the last batch is one record inside a window already open.
    events = [{"k": "a", "ts": 10 * i, "amount": i} for i in range(100)]
    events.append({"k": "a", "ts": 991, "amount": 1})
    feed(broker, events, partitions=1)
    last = len(events) - 1

    def wrap(inner: WindowStore) -> OnApply:
        def last_batch(calls: dict[TP, ApplyCall]) -> bool:
            call = calls.get((IN, 0))
            return call is not None and call.first_offset == last

        return OnApply(inner, last_batch, lose_reply=True)

    def done(b: MemoryBroker) -> bool:
        return b.committed.get((IN, 0), (0, ""))[0] == len(events)

    _, stores = _run(
        broker, server, "exactly_once", wrap, done, window_idle_timeout_ms=0, batch_size=100
    )
    assert stores[0].fired
    offset, meta = broker.committed[(IN, 0)]
    assert offset == len(events)
    keys = stores[0].inner.keys((IN, 0))  # type: ignore[attr-defined]
    redis_seq = int(fakeredis.FakeRedis(server=server).hget(keys.meta, "seq"))
    assert meta == f"rill-outbox-seq={redis_seq}", "the commit names the sequence Redis reached"
