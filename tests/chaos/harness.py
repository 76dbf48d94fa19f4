"""One chaos run: workers on a fresh pipeline, a stepped feed, faults on cue, the verdict.

A scenario gives the number of workers, the number of fault steps and what to do at each
step; the harness feeds 60,000 records (RILL_CHAOS_RECORDS; with poison and late ones),
calls the fault in the middle of each segment between two checkpoints (so input is still
arriving), waits until every input offset is committed, stops the workers and judges the
sink and the DLQ against the reference model.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from service.processing import dlq
from tests.chaos.apps import route_of
from tests.chaos.feed import SCHEMA_PATH, Item, Special, SteppedFeed, decode, stream
from tests.chaos.fleet import Fleet
from tests.chaos.stack import ChaosStack
from tests.chaos.verdict import Row, Source, Window, judge
from tests.integration.helpers import create_topics, header, read_once, worker_env
from tests.support.window_model import AGGREGATES, Rec, run_model

RECORDS = int(os.environ.get("RILL_CHAOS_RECORDS", "60000"))
RATE = float(os.environ.get("RILL_CHAOS_RATE", "5000"))
PARTITIONS = 6
SIZE_MS = 1000
GRACE_MS = 100
DRAIN_TIMEOUT_S = 180.0
HELD_WAIT_S = 60.0
HELD_QUIET_S = 10.0
FUTURE_MS = 86_400_000
SESSION_TIMEOUT_MS = 6000
REDIS_STALL_S = 12  # a Redis SIGSTOP, over twice the workers' Redis socket timeout (5 s)
MODES = ("at_least_once", "exactly_once")

PIPELINE: dict[str, Any] = {
    "input_format": "avro",
    "input_schema": str(SCHEMA_PATH),
    "input_wire": "plain",
    "output_format": "json",
    "output_wire": "plain",
    "filter_field": "",
    "key_by": "customer_id",
    "window_type": "tumbling",
    "window_size_ms": SIZE_MS,
    "window_grace_ms": GRACE_MS,
    "window_time_field": "ts",
    "window_idle_timeout_ms": 0,
    "window_max_future_ms": FUTURE_MS,
    "aggregates": ",".join(AGGREGATES),
    "batch_size": 500,
    "transaction_timeout_ms": 10_000,
    "state_loss": "fail",
    "kafka_extra": json.dumps(
        {
            "consumer.session.timeout.ms": str(SESSION_TIMEOUT_MS),
            "consumer.heartbeat.interval.ms": "500",
        }
    ),
}


@dataclass
class Run:
    """What a fault step can reach: the stack, the workers, the feed and the row."""

    stack: ChaosStack
    fleet: Fleet
    feed: SteppedFeed
    row: Row
    env: dict[str, str]
    notes: list[str] = field(default_factory=list)


Step = Callable[[Run, int], None]


@dataclass(frozen=True)
class Scenario:
    """A fault scenario: how many workers, how many fault steps, and each step."""

    name: str
    faults: str
    workers: int
    steps: int
    act: Step
    extra: Sequence[Special] = ()
    holds: bool = False  # partitions held by design after the fault: missing is not lost
    settings: dict[str, Any] = field(default_factory=dict)
    # Window results routed by key over the sink and a second topic (tests/chaos/apps.py).
    routed: bool = False


def _ends(consumer: Consumer, topic: str) -> dict[int, int]:
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(PARTITIONS)
    }


def _committed(consumer: Consumer, topic: str) -> dict[int, int]:
    tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    return {tp.partition: max(tp.offset, 0) for tp in tps}


class Probe:
    """Reads high watermarks and the group's committed offsets (joins no group)."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )

    def total(self, topic: str) -> int:
        """Sum of the topic's high watermarks (0 while the broker does not answer)."""
        try:
            return sum(_ends(self._consumer, topic).values())
        except Exception:  # noqa: BLE001 - the broker may be down on purpose
            return 0

    def lag(self, topic: str) -> int:
        """Input records not committed yet (-1 while the broker does not answer)."""
        try:
            ends = _ends(self._consumer, topic)
            done = _committed(self._consumer, topic)
        except Exception:  # noqa: BLE001 - the broker may be down on purpose
            return -1
        return sum(ends[p] - done.get(p, 0) for p in ends)

    def ends(self, topic: str) -> dict[int, int]:
        """The high watermark of each partition."""
        return _ends(self._consumer, topic)

    def committed(self, topic: str) -> dict[int, int]:
        """The group's committed offsets."""
        return _committed(self._consumer, topic)

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


def model_input(bootstrap: str, topic: str) -> tuple[list[Rec], set[Source], int]:
    """The model's records, the input offsets that belong in the DLQ, and the input count."""
    recs: list[Rec] = []
    to_dlq: set[Source] = set()
    records = read_once(bootstrap, topic)
    horizon = time.time() * 1000 + FUTURE_MS
    for r in records:
        event = decode(r.value)
        if event is None or not math.isfinite(event["ts"]) or event["ts"] > horizon:
            to_dlq.add((r.partition, r.offset))
            continue
        recs.append(
            Rec(r.partition, r.offset, event["customer_id"], int(event["ts"]), event["amount"])
        )
    return recs, to_dlq, len(records)


def emissions(bootstrap: str, topic: str) -> list[tuple[Window, dict[str, Any]]]:
    """Every window result in the sink (read_committed), as (window, aggregates)."""
    out = []
    for rec in read_once(bootstrap, topic):
        v = json.loads(rec.value or b"")
        out.append(((v.pop("key"), v.pop("window_start"), v.pop("window_end")), v))
    return out


def dlq_sources(bootstrap: str, topic: str) -> tuple[list[Source], list[str]]:
    """Source (partition, offset) of every DLQ record, and those without a reason."""
    sources: list[Source] = []
    unexplained: list[str] = []
    for rec in read_once(bootstrap, topic):
        p, o = header(rec, dlq.SOURCE_PARTITION), header(rec, dlq.SOURCE_OFFSET)
        src = (int(p) if p else -1, int(o) if o else -1)
        sources.append(src)
        if not header(rec, dlq.ERROR_MESSAGE) or not header(rec, dlq.ERROR_STAGE):
            unexplained.append(f"{src}")
    return sources, unexplained


def _grew(probe: Probe, topic: str, seen: int) -> bool:
    return probe.total(topic) > seen


def _produced(feed: SteppedFeed, at_least: int) -> bool:
    return feed.produced >= at_least


def settled(probe: Probe, topic: str) -> Callable[[], bool]:
    """A check: the input's lag is 0, or has not changed for HELD_QUIET_S."""
    last = [-2, time.monotonic()]

    def check() -> bool:
        lag = probe.lag(topic)
        if lag != last[0]:
            last[:] = [lag, time.monotonic()]
        return lag == 0 or (lag > 0 and time.monotonic() - last[1] >= HELD_QUIET_S)

    return check


def run(stack: ChaosStack, logs: Path, scenario: Scenario, mode: str) -> Row:
    """Run one scenario in one mode and return its judged row."""
    started = time.monotonic()
    unique = uuid.uuid4().hex[:10]
    env = worker_env(
        stack.bootstrap,
        stack.redis_url,
        unique,
        redis_prefix=unique,
        processing_guarantee=mode,
        **{**PIPELINE, **scenario.settings},
    )
    topics = [env["RILL_INPUT_TOPIC"], env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]]
    sinks = [topics[1]]
    if scenario.routed:
        sinks.append(f"routed-{unique}")
        env.update(RILL_APP="tests.chaos.apps:routed", RILL_ROUTE_TOPICS=",".join(sinks))
    create_topics(stack.bootstrap, topics, partitions=PARTITIONS)
    items: list[Item] = stream(RECORDS, seed=11, extra=scenario.extra)
    cuts = [len(items) * (k + 1) // (scenario.steps + 1) for k in range(scenario.steps)]
    feed = SteppedFeed(stack.bootstrap, topics[0], items, RATE, cuts)
    row = Row(scenario.name, mode, records_in=len(items), faults=scenario.faults)
    row.missing_allowed = scenario.holds
    fleet = Fleet(env, logs)
    probe = Probe(stack.bootstrap, env["RILL_GROUP_ID"])
    ctx = Run(stack, fleet, feed, row, env)
    try:
        for _ in range(scenario.workers):
            fleet.add()
        feed.start()
        for k, cut in enumerate(cuts):
            fleet.wait(partial(feed.held, k), 600)
            out_seen = probe.total(topics[1])
            feed.release(k)
            end = cuts[k + 1] if k + 1 < len(cuts) else len(items)
            fleet.wait(partial(_produced, feed, (cut + end) // 2), 600)
            # The workers turn the input after the checkpoint into results: the fault
            # lands mid-processing, and the next checkpoint holds the rest of the input.
            if not fleet.wait(partial(_grew, probe, topics[1], out_seen), 180):
                row.problems.append(f"no new results before fault {k + 1} within 180 s")
            scenario.act(ctx, k)
        fleet.wait(feed.finished, 900)
        feed.join()
        # A scenario that holds partitions by design never drains: it is done when the
        # lag stopped moving for HELD_QUIET_S (the partitions not held are committed).
        drained = fleet.wait(
            settled(probe, topics[0]) if scenario.holds else lambda: probe.lag(topics[0]) == 0,
            HELD_WAIT_S if scenario.holds else DRAIN_TIMEOUT_S,
        )
        if not drained and not scenario.holds:
            row.problems.append(
                f"input not all committed {DRAIN_TIMEOUT_S:.0f} s after the feed ended "
                f"(lag {probe.lag(topics[0])})"
            )
    finally:
        feed.release_all()
        fleet.stop_all()
    committed = probe.committed(topics[0]) if scenario.holds else None
    ends = probe.ends(topics[0]) if scenario.holds else {}
    probe.close()
    recs, to_dlq, _ = model_input(stack.bootstrap, topics[0])
    model = run_model(recs, "tumbling", size=SIZE_MS, grace=GRACE_MS)
    expected = to_dlq | model.late
    sources, unexplained = dlq_sources(stack.bootstrap, topics[2])
    if unexplained:
        row.problems.append(f"{len(unexplained)} DLQ records without a reason")
    held = None
    if committed is not None:
        # A partition the workers hold (state lost in Redis, RILL_STATE_LOSS=fail) keeps
        # every window it had not emitted: those whose records were all committed before
        # the fault died with Redis's data and wait for it to be restored. Held, not lost
        # silently; a window that IS emitted must still be right.
        stuck = {p for p, end in ends.items() if committed.get(p, 0) < end}
        held = {
            (r.key, r.ts // SIZE_MS * SIZE_MS, r.ts // SIZE_MS * SIZE_MS + SIZE_MS)
            for r in recs
            if r.offset >= committed.get(r.partition, 0) or r.partition in stuck
        }
    results = [(t, e) for t in sinks for e in emissions(stack.bootstrap, t)]
    astray = sum(1 for t, (w, _v) in results if len(sinks) > 1 and route_of(w[0], sinks) != t)
    if astray:
        row.problems.append(f"{astray} window results in another topic than their route's")
    judge(row, model, [e for _t, e in results], sources, expected, committed, held)
    row.problems.extend(ctx.notes)
    row.worker_exits = len(fleet.unexpected_exits)
    if fleet.unexpected_exits:
        # Every fault here is one rill rides out: a worker that stops on its own is a bug.
        row.problems.append(f"workers exited {row.worker_exits} times on their own")
        (logs / "exits.txt").write_text("\n\n".join(fleet.unexpected_exits))
    if row.failures:
        (logs / "digest.txt").write_text(fleet.digest())
    row.seconds = time.monotonic() - started
    return row
