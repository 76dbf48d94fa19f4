"""The group_by chaos row: orders keyed by order id, windowed per customer through the
repartition topic, while Redis is stalled (SIGSTOP past the workers' socket timeout, then
SIGCONT) and then workers are SIGKILLed; judged against a model of the input.

Stage one is judged by the repartition topic: every valid input event in it (exactly
once in exactly-once; at least once, a redone batch re-keys some twice). Stage two by the
windows: the model runs over the repartition topic as a read_committed reader sees it
(partition, offset, event time header), each source (`rill-source`) counted once, so its
windows are exactly those rill must emit. The grace is far above the stream's span
(records of one key come from several input partitions, interleaved), and far-future
events sent once both stages are drained close every window.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from service.processing.regroup import EVENT_TIME_HEADER, SOURCE_HEADER
from tests.chaos.feed import SteppedFeed, decode, encode, stream
from tests.chaos.fleet import Fleet
from tests.chaos.harness import (
    PARTITIONS,
    PIPELINE,
    RECORDS,
    REDIS_STALL_S,
    Probe,
    dlq_sources,
    emissions,
)
from tests.chaos.harness import RATE as FEED_RATE
from tests.chaos.stack import ChaosStack
from tests.chaos.verdict import Row, judge
from tests.integration.helpers import create_topics, header, produce, read_once, worker_env
from tests.support.window_model import ModelResult, Rec, run_model

GRACE_MS = 100_000_000  # > the stream's event-time span (10 ms per event)
FAR_MS = 1_000_000_000
KILLS = 4
# The stall comes first: a worker restarted while Redis does not answer exits at its
# start-up Redis check, as in any pipeline (not this row's subject).
FAULTS = ["stall"] + ["kill"] * KILLS
SETTINGS = {**PIPELINE, "key_by": "", "group_by": "customer_id", "window_grace_ms": GRACE_MS}


def _drained(bootstrap: str, group: str, topics: list[str], timeout_s: float) -> bool:
    """Every record of `topics` (read_committed) committed by the group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ends: dict[tuple[str, int], int] = {}
            for topic in topics:
                for r in read_once(bootstrap, topic):
                    tp = (r.topic, r.partition)
                    ends[tp] = max(ends.get(tp, 0), r.offset + 1)
            asked = [TopicPartition(t, p) for t, p in ends]
            done = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(asked, 10)}
            if ends and all(done.get(tp, -1) >= end for tp, end in ends.items()):
                return True
            time.sleep(2.0)
        return False
    finally:
        consumer.close()


def _grew(probe: Probe, topic: str, seen: int) -> bool:
    return probe.total(topic) > seen


def _verdict(stack: ChaosStack, row: Row, mode: str, topics: list[str]) -> ModelResult:
    """Judge stage one by the repartition topic and stage two by the windows."""
    source, repartition, sink, dlq = topics
    inputs: Counter[tuple[str, float, float]] = Counter()
    poison: set[tuple[int, int]] = set()
    for r in read_once(stack.bootstrap, source):
        event = decode(r.value)
        if event is None:
            poison.add((r.partition, r.offset))
        else:
            inputs[(event["customer_id"], event["ts"], event["amount"])] += 1
    rekeyed: Counter[tuple[str, float, float]] = Counter()
    once: Counter[tuple[str, float, float]] = Counter()
    recs = []
    seen: set[str | None] = set()
    records = read_once(stack.bootstrap, repartition)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        value = json.loads(r.value or b"")
        event = (value["customer_id"], value["ts"], value["amount"])
        rekeyed[event] += 1
        # A copy re-keyed again (at least once, a batch redone) counts once: the first
        # copy of its source in the partition is the one a window must count.
        source = header(r, SOURCE_HEADER)
        if source in seen:
            continue
        seen.add(source)
        once[event] += 1
        ts = int(header(r, EVENT_TIME_HEADER) or 0)
        recs.append(Rec(r.partition, r.offset, value["customer_id"], ts, value["amount"]))
    if once != inputs or (mode == "exactly_once" and rekeyed != inputs):
        row.problems.append(
            f"stage one: {sum((inputs - once).values())} events missing from the "
            f"repartition topic, {sum((rekeyed - inputs).values())} extra"
        )
    model = run_model(recs, "tumbling", size=int(SETTINGS["window_size_ms"]), grace=GRACE_MS)
    if model.late:
        row.problems.append(f"{len(model.late)} records late in the model: raise GRACE_MS")
    sources, unexplained = dlq_sources(stack.bootstrap, dlq)
    if unexplained:
        row.problems.append(f"{len(unexplained)} DLQ records without a reason")
    judge(row, model, emissions(stack.bootstrap, sink), sources, poison)
    twice = sum(rekeyed.values()) - sum(once.values())
    print(f"\ngroup-by / {mode}: {twice} events re-keyed twice, each counted once")
    return model


def run_regrouped(stack: ChaosStack, logs: Path, mode: str) -> Row:
    """Feed, stall Redis once and kill a worker KILLS times mid-stream, drain, close the
    windows, judge."""
    started = time.monotonic()
    unique = uuid.uuid4().hex[:10]
    env = worker_env(
        stack.bootstrap,
        stack.redis_url,
        unique,
        redis_prefix=unique,
        processing_guarantee=mode,
        **SETTINGS,
    )
    source, sink, dlq = env["RILL_INPUT_TOPIC"], env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]
    repartition = f"{env['RILL_GROUP_ID']}-repartition"
    create_topics(stack.bootstrap, [source, sink, dlq], partitions=PARTITIONS)
    # The chaos events, keyed by their position (an order id), not by customer.
    items = [(f"order-{i}".encode(), value) for i, (_key, value) in enumerate(stream(RECORDS, 12))]
    cuts = [len(items) * (k + 1) // (len(FAULTS) + 1) for k in range(len(FAULTS))]
    feed = SteppedFeed(stack.bootstrap, source, items, FEED_RATE, cuts)
    faults = f"Redis SIGSTOP {REDIS_STALL_S} s, {KILLS} x SIGKILL, re-keyed"
    row = Row("group-by", mode, records_in=len(items), faults=faults)
    fleet = Fleet(env, logs)
    probe = Probe(stack.bootstrap, env["RILL_GROUP_ID"])
    try:
        for _ in range(2):
            fleet.add()
        feed.start()
        for k, cut in enumerate(cuts):
            fleet.wait(partial(feed.held, k), 600)
            seen = probe.total(repartition)
            feed.release(k)
            end = cuts[k + 1] if k + 1 < len(cuts) else len(items)
            fleet.wait(lambda at=(cut + end) // 2: feed.produced >= at, 600)
            if not fleet.wait(partial(_grew, probe, repartition, seen), 180):
                row.problems.append(f"stage one wrote nothing before fault {k + 1} within 180 s")
            if FAULTS[k] == "stall":
                stack.stall_redis(REDIS_STALL_S, fleet.pause)
            else:
                fleet.kill_random()
        fleet.wait(feed.finished, 900)
        feed.join()
        if not _drained(stack.bootstrap, env["RILL_GROUP_ID"], [source, repartition], 300):
            row.problems.append("input and repartition topic not all committed within 300 s")
        closing = [
            (
                f"end-{c}".encode(),
                encode({"customer_id": f"c-{c:02d}", "ts": float(FAR_MS), "amount": 0.0}),
            )
            for c in range(40)
        ]
        produce(stack.bootstrap, source, closing)
        _drained(stack.bootstrap, env["RILL_GROUP_ID"], [source, repartition], 300)
    finally:
        feed.release_all()
        fleet.stop_all()
    probe.close()
    model = _verdict(stack, row, mode, [source, repartition, sink, dlq])
    row.windows = len(model.closed)
    row.worker_exits = len(fleet.unexpected_exits)
    if fleet.unexpected_exits:
        row.problems.append(f"workers exited {row.worker_exits} times on their own")
    row.seconds = time.monotonic() - started
    return row
