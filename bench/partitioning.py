"""Per-record cost of the co-partition check and of routing, in isolation.

No Kafka and no network. The check: `Copartitioning.misplaced` over keyed items
(window keys drawn from a fixed population, as a worker sees them: each distinct key is
hashed once, then looked up); also the cold cost of hashing one key (murmur2 + CRC32).
Routing: `process_batch` of a stateless pipeline with and without a route field. Each
figure is the best of several rounds of process CPU time (less disturbed than the wall
clock by other processes on a shared machine).

Usage: python bench/partitioning.py
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.pipeline import Pipeline  # noqa: E402 - after the path set-up above
from service.processing.batch import Plan, process_batch  # noqa: E402
from service.processing.partitioning import Copartitioning  # noqa: E402
from service.processing.routing import Router  # noqa: E402
from service.records import InRecord, Keyed  # noqa: E402
from service.serde import JsonSerde  # noqa: E402
from service.serde.wire import PlainWire  # noqa: E402

N = 100_000
ROUNDS = 9


def best_ns(run: Callable[[], object], per: int) -> float:
    """Best ns per item over ROUNDS runs."""
    best = float("inf")
    for _ in range(ROUNDS):
        t = time.process_time()
        run()
        best = min(best, (time.process_time() - t) / per * 1e9)
    return best


def check_costs(keys: int) -> tuple[float, float]:
    """(warm ns/item, cold ns/key) of the check with `keys` distinct window keys."""
    rng = random.Random(7)
    population = [f"customer-{i:06d}" for i in range(keys)]
    items = [
        Keyed(InRecord("in", rng.randrange(12), i, None, None, None, 0), rng.choice(population), {})
        for i in range(N)
    ]
    warm = Copartitioning(12)
    warm.misplaced(items)  # every key hashed once, as after a worker's first batches
    hot = best_ns(lambda: warm.misplaced(items), N)
    cold = best_ns(lambda: [Copartitioning(12).expected(k) for k in population], keys)
    return hot, cold


def route_costs() -> tuple[float, float]:
    """(ns/record of a stateless batch without a route, with a route field)."""
    serde = JsonSerde(PlainWire())
    regions = ["eu", "us", "apac"]
    records = [
        InRecord("in", 0, i, b"k", json.dumps({"region": regions[i % 3], "n": i}).encode(), None, 0)
        for i in range(N // 5)
    ]
    steps = tuple(Pipeline().steps)
    plain = Plan(serde, serde, steps, "out", "dlq", 10_000, 0, "bench")
    router = Router(frozenset(regions), field="region")
    routed = Plan(serde, serde, steps, "out", "dlq", 10_000, 0, "bench", router=router)
    return (
        best_ns(lambda: process_batch(records, plain, 0), len(records)),
        best_ns(lambda: process_batch(records, routed, 0), len(records)),
    )


def main() -> None:
    """Measure and print ns/record."""
    print("| what | ns per record |")
    print("|---|---:|")
    for keys in (1_000, 50_000):
        hot, cold = check_costs(keys)
        print(
            f"| co-partition check, {keys:,} distinct keys, each key hashed already | {hot:.0f} |"
        )
        print(f"| co-partition check, first sight of a key (murmur2 + CRC32) | {cold:.0f} |")
    plain, routed = route_costs()
    print(f"| stateless batch (decode, encode), no route | {plain:.0f} |")
    print(f"| stateless batch, routed by a field | {routed:.0f} (+{routed - plain:.0f}) |")


if __name__ == "__main__":
    main()
