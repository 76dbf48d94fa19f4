"""Demo order events: deterministic for a seed, so tests can compute what to expect."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

STATUSES = ("created", "paid", "shipped", "cancelled")
CURRENCIES = ("EUR", "USD", "GBP")


def demo_orders(
    count: int,
    seed: int = 7,
    customers: int = 20,
    start_ms: int = 1_767_225_600_000,
    step_ms: float = 250,
) -> Iterator[dict[str, Any]]:
    """`count` order events with increasing `created_at`.

    Args:
        count: how many.
        seed: the random seed (same seed, same events).
        customers: how many distinct customer ids.
        start_ms: event time of the first order.
        step_ms: mean event-time gap between orders.
    """
    rng = random.Random(seed)
    ts = start_ms
    for i in range(count):
        ts += rng.randint(0, round(2 * step_ms))
        yield {
            "order_id": f"o-{seed}-{i}",
            "customer_id": f"c-{rng.randrange(customers):03d}",
            "amount": round(rng.uniform(1, 500), 2),
            "currency": rng.choice(CURRENCIES),
            "status": rng.choice(STATUSES),
            "created_at": ts,
            "note": None if rng.random() < 0.8 else "gift",
        }
