"""The garbage collector set for a loop that holds a whole batch of objects at a time.

A batch of thousands of records keeps tens of thousands of small containers alive (the
decoded records, their items, the outputs) until it is delivered. With CPython's default
threshold (a young collection every 700 allocations) each batch triggers dozens of young
collections that find nothing to free and promote the live batch, and older collections
that walk it again: a profile of a stateless worker (py-spy `--native`) charged 8 % of the
loop's time to `gc_collect_main`. The loop frees almost everything by reference counting;
reference cycles are rare, so collecting less often costs little memory.
"""

from __future__ import annotations

import gc

# Allocations between young collections: a few batches' worth instead of 700.
YOUNG_THRESHOLD = 50_000
# Young collections before a middle one, middle before an old one (CPython: 10 and 10);
# an old one also waits until a quarter of the long-lived objects are new (CPython's rule).
OLDER_THRESHOLDS = (20, 100)


def settle_for_batches() -> None:
    """Collect once, move what start-up built (modules, clients, plan) out of the
    collector's reach, and collect young objects every `YOUNG_THRESHOLD` allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
