"""The dedupe chaos run: a stateless de-duplicating pipeline on input with known duplicates,
faults on cue, and the verdict "drops exactly the duplicates the input holds".

The input is JSON events keyed by their id (a producer's retries land in the partition of
the first copy), about a fifth of them sent again once or twice, some right after, some
thousands of records later, with poison records among them. The expected sink is every
distinct id; the expected DLQ is every later copy of an id in its partition (stage
`duplicate`) and every poison record. The verdict compares by input position.
"""

from __future__ import annotations

import heapq
import json
import random
import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from service.processing import dlq
from tests.chaos.feed import Item, SteppedFeed, poison
from tests.chaos.fleet import Fleet
from tests.chaos.harness import (
    DRAIN_TIMEOUT_S,
    PARTITIONS,
    PIPELINE,
    RATE,
    Probe,
    Run,
    Scenario,
    _grew,
    _produced,
)
from tests.chaos.stack import ChaosStack
from tests.chaos.verdict import Row, Source, judge_dedupe
from tests.integration.helpers import create_topics, header, read_once, worker_env

DISTINCT = 40_000

SETTINGS: dict[str, Any] = {
    **{k: PIPELINE[k] for k in ("batch_size", "transaction_timeout_ms", "state_loss")},
    "kafka_extra": PIPELINE["kafka_extra"],
    "input_format": "json",
    "input_wire": "plain",
    "output_format": "json",
    "output_wire": "plain",
    "window_type": "none",
    "filter_field": "",
    "key_by": "id",
    "dedupe_field": "id",
    "dedupe_window_ms": 3_600_000,
    "dedupe_dlq": "true",
}


def stream(n: int, seed: int) -> list[Item]:
    """`n` distinct ids; about a fifth sent again (once or twice, soon or much later);
    a poison record after every 499."""
    rng = random.Random(seed)
    items: list[Item] = []
    later: list[tuple[int, int, Item]] = []  # (due, order, copy): a heap
    for i in range(n):
        event: dict[str, Any] = {"id": f"e{i}", "amount": rng.randint(1, 1000)}
        item = (event["id"].encode(), json.dumps(event).encode())
        items.append(item)
        if rng.random() < 0.2:
            for _ in range(rng.choice([1, 1, 2])):
                due = i + rng.choice([0, rng.randint(1, 50), rng.randint(1_000, 10_000)])
                heapq.heappush(later, (due, len(later) + i, item))
        while later and later[0][0] <= i:
            items.append(heapq.heappop(later)[2])
        if i % 499 == 498:
            items.append((event["id"].encode(), poison(i)))
    items.extend(heapq.heappop(later)[2] for _ in range(len(later)))
    return items


def expected(bootstrap: str, topic: str) -> tuple[set[str], set[Source], set[Source]]:
    """From the input as the broker holds it: the distinct ids, the positions of the
    duplicates (a later copy of an id in its partition) and of the poison records."""
    ids: set[str] = set()
    dups: set[Source] = set()
    bad: set[Source] = set()
    seen: dict[int, set[str]] = {}
    for r in sorted(read_once(bootstrap, topic), key=lambda r: (r.partition, r.offset)):
        try:
            event = json.loads(r.value or b"")
        except ValueError:
            bad.add((r.partition, r.offset))
            continue
        mine = seen.setdefault(r.partition, set())
        if event["id"] in mine:
            dups.add((r.partition, r.offset))
        mine.add(event["id"])
        ids.add(event["id"])
    return ids, dups, bad


def outputs(
    bootstrap: str, dlq_topic: str, sink: str
) -> tuple[Counter[str], list[Source], list[Source]]:
    """The sink's ids (read_committed), and the DLQ's duplicate and other entries by source."""
    ids = Counter(json.loads(r.value or b"")["id"] for r in read_once(bootstrap, sink))
    dup_src: list[Source] = []
    other: list[Source] = []
    for r in read_once(bootstrap, dlq_topic):
        p, o = header(r, dlq.SOURCE_PARTITION), header(r, dlq.SOURCE_OFFSET)
        src = (int(p) if p else -1, int(o) if o else -1)
        (dup_src if header(r, dlq.ERROR_STAGE) == "duplicate" else other).append(src)
    return ids, dup_src, other


def run(stack: ChaosStack, logs: Path, scenario: Scenario, mode: str) -> Row:
    """Run the dedupe scenario in one mode and return its judged row."""
    started = time.monotonic()
    unique = uuid.uuid4().hex[:10]
    env = worker_env(
        stack.bootstrap,
        stack.redis_url,
        unique,
        redis_prefix=unique,
        processing_guarantee=mode,
        **{**SETTINGS, **scenario.settings},
    )
    topics = [env["RILL_INPUT_TOPIC"], env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]]
    create_topics(stack.bootstrap, topics, partitions=PARTITIONS)
    items = stream(DISTINCT, seed=17)
    cuts = [len(items) * (k + 1) // (scenario.steps + 1) for k in range(scenario.steps)]
    feed = SteppedFeed(stack.bootstrap, topics[0], items, RATE, cuts)
    row = Row(scenario.name, mode, records_in=len(items), faults=scenario.faults)
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
            if not fleet.wait(partial(_grew, probe, topics[1], out_seen), 180):
                row.problems.append(f"no new outputs before fault {k + 1} within 180 s")
            scenario.act(ctx, k)
        fleet.wait(feed.finished, 900)
        feed.join()
        if not fleet.wait(lambda: probe.lag(topics[0]) == 0, DRAIN_TIMEOUT_S):
            row.problems.append(
                f"input not all committed {DRAIN_TIMEOUT_S:.0f} s after the feed ended "
                f"(lag {probe.lag(topics[0])})"
            )
    finally:
        feed.release_all()
        fleet.stop_all()
    probe.close()
    ids, dups, bad = expected(stack.bootstrap, topics[0])
    sink, dup_src, other = outputs(stack.bootstrap, topics[2], topics[1])
    judge_dedupe(row, ids, dups, bad, sink, dup_src, other)
    row.problems.extend(ctx.notes)
    row.worker_exits = len(fleet.unexpected_exits)
    if fleet.unexpected_exits:
        row.problems.append(f"workers exited {row.worker_exits} times on their own")
        (logs / "exits.txt").write_text("\n\n".join(fleet.unexpected_exits))
    if row.failures:
        (logs / "digest.txt").write_text(fleet.digest())
    row.seconds = time.monotonic() - started
    return row
