"""Run a whole Worker in-process: the real Lua scripts on fakeredis, Kafka as lists.

For unit tests of the runtime's orchestration and both guarantees, with faults injected
on cue; tests/integration runs the same flows on the real broker and Redis.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import fakeredis

from service.app import build_plan
from service.config import Settings, load_settings
from service.errors import StateError
from service.processing.join import JoinPlan
from service.processing.windows import WindowPlan
from service.records import TP, OutRecord
from service.runtime.edges import Edges, Table
from service.runtime.real_edges import state_layout
from service.runtime.service import Service
from service.state.store import WindowStore
from service.window_state import ApplyCall, ApplyReply, Claim
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer
from tests.support.memory_store import MemoryWindowStore

IN, OUT, DLQ = "in", "out", "dlq"
WINDOWED = {
    "window_type": "tumbling",
    "window_size_ms": 100,
    "window_grace_ms": 0,
    "window_time_field": "ts",
    "window_idle_timeout_ms": 0,
    "aggregates": "count,sum:amount",
}


def settings_for(guarantee: str = "at_least_once", **extra: Any) -> Settings:
    base: dict[str, Any] = {"window_type": "none", "filter_field": "", "key_by": "k", **extra}
    return load_settings(
        input_topic=IN,
        output_topic=OUT,
        dlq_topic=DLQ,
        input_format="json",
        input_wire="plain",
        output_format="json",
        output_wire="plain",
        metrics_port=0,
        processing_guarantee=guarantee,
        retry_base_s=0.001,
        retry_max_s=0.01,
        breaker_reset_s=0.01,
        **base,
    )


class Run:
    """One worker over shared in-memory Kafka and Redis; stops when its input is drained
    and `done(broker)` holds."""

    def __init__(
        self,
        broker: MemoryBroker,
        server: fakeredis.FakeServer,
        settings: Settings,
        producer: MemoryProducer | None = None,
        store: Callable[[WindowStore], WindowStore] = lambda s: s,
        done: Callable[[MemoryBroker], bool] = lambda _b: True,
        deadline_s: float = 30.0,
        input_partitions: int | None = None,
        table: Callable[[Settings, JoinPlan], Table] | None = None,
    ) -> None:
        self.producer = producer or MemoryProducer(broker)
        self.broker = broker
        self.done = done
        self.deadline = time.monotonic() + deadline_s
        # What create_topics tells the worker of its input (None: the co-partition check is off).
        self.input_partitions = input_partitions
        self.table = table
        self.worker = Service(
            settings, build_plan(settings), edges=self._edges(broker, server, store)
        )
        self.ready_at_stop: tuple[bool, str] = (False, "not stopped yet")
        self.samples_at_stop: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    def _closing(self) -> None:
        # What /readyz and /metrics said as the worker began to leave (close() then revokes
        # every partition, which drops their gauges).
        self.ready_at_stop = self.worker.ready()
        self.samples_at_stop = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in self.worker.metrics.registry.collect()
            for sample in family.samples
        }

    @property
    def busy(self) -> bool:
        """A batch is on its way through Redis (RILL_STATE_OVERLAP)."""
        loop = self.worker.worker
        return loop is not None and loop._pending is not None

    def _idle(self) -> None:
        # Input drained: stop once the test's condition holds (or the bound passed, so a
        # broken build fails its assertion instead of hanging), and no batch is still on
        # its way through Redis (RILL_STATE_OVERLAP): the loop finishes it next.
        if self.busy and time.monotonic() <= self.deadline:
            return
        if self.done(self.broker) or time.monotonic() > self.deadline:
            self.worker.request_stop()

    def _edges(
        self,
        broker: MemoryBroker,
        server: fakeredis.FakeServer,
        wrap: Callable[[WindowStore], WindowStore],
    ) -> Edges:
        def consumer(
            s: Settings, topics: list[str], on_assign: Any, on_revoke: Any, _stats: Any
        ) -> MemoryConsumer:
            self.consumer = MemoryConsumer(
                broker, topics, on_assign, on_revoke, self._idle, self._closing
            )
            return self.consumer

        def store(s: Settings, window: WindowPlan | None) -> WindowStore:
            return wrap(MemoryWindowStore(state_layout(s, window), server))

        def create_topics(s: Settings, repartition: str | None) -> dict[str, int]:
            # The input's count (None: the co-partition check is off), and group_by's
            # repartition topic: RILL_REPARTITION_PARTITIONS, else the input's.
            counts = {} if self.input_partitions is None else {s.input_topic: self.input_partitions}
            if repartition is None:
                return counts
            if repartition not in broker.partitions:
                wanted = s.repartition.partitions or broker.partitions.get(s.input_topic, 1)
                broker.create(repartition, wanted)
            return {**counts, repartition: broker.partitions[repartition]}

        return Edges(consumer, lambda _s, _gapless: self.producer, store, create_topics, self.table)


def feed(broker: MemoryBroker, events: list[dict[str, Any]], partitions: int = 2) -> None:
    broker.create(IN, partitions)
    for i, event in enumerate(events):
        record = OutRecord(IN, str(event.get("k", "")).encode(), json.dumps(event).encode())
        broker.append(record, partition=i % partitions)


def events(n: int) -> list[dict[str, Any]]:
    return [{"k": f"c{i % 3}", "ts": 10 * i, "amount": i} for i in range(n)]


def windows(broker: MemoryBroker) -> Counter[tuple[str, int, int, int]]:
    out: Counter[tuple[str, int, int, int]] = Counter()
    for r in broker.records(OUT):
        v = json.loads(r.value or b"")
        out[(v["key"], v["window_start"], v["count"], v["sum_amount"])] += 1
    return out


def expected(
    events: list[dict[str, Any]], partitions: int = 2
) -> Counter[tuple[str, int, int, int]]:
    """Windows the watermark closed: per partition, windows ending at or before its max ts."""
    per: dict[tuple[int, str, int], list[int]] = {}
    top: dict[int, int] = {}
    for i, e in enumerate(events):
        p = i % partitions
        per.setdefault((p, e["k"], e["ts"] - e["ts"] % 100), []).append(e["amount"])
        top[p] = max(top.get(p, 0), e["ts"])
    return Counter(
        (k, start, len(a), sum(a)) for (p, k, start), a in per.items() if start + 100 <= top[p]
    )


class AbortAlways(MemoryProducer):
    """A producer whose transactions all abort, which stops the worker after the first."""

    def __init__(self, broker: MemoryBroker, stop: Callable[[], None]) -> None:
        super().__init__(broker, fail_transactions=10**9)
        self.stop = stop

    def transaction(self, *args: Any, **kwargs: Any) -> None:
        self.stop()
        super().transaction(*args, **kwargs)


class Flaky:
    """A store that fails on cue: apply before the script ran, or after (reply lost);
    claim (Redis loading or timing out on assignment)."""

    def __init__(
        self, inner: WindowStore, before: int = 0, after: int = 0, claims: int = 0
    ) -> None:
        self.inner, self.before, self.after, self.claims = inner, before, after, claims

    def claim(self, tp: TP, expect: int = 0) -> Claim:
        if self.claims:
            self.claims -= 1
            raise StateError("LOADING Redis is loading the dataset in memory")
        return self.inner.claim(tp, expect)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply(self, calls: dict[TP, ApplyCall]) -> dict[TP, ApplyReply]:
        if self.before:
            self.before -= 1
            raise StateError("Redis does not answer")
        replies = self.inner.apply(calls)
        if self.after and calls:
            self.after -= 1
            raise StateError("reply lost")
        return replies
