"""The collector settings the worker loop runs under (service/runtime/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service.runtime.collector import OLDER_THRESHOLDS, YOUNG_THRESHOLD, settle_for_batches


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    gc.unfreeze()
    kept = [object() for _ in range(10)]  # start-up state that outlives the loop
    settle_for_batches()
    assert gc.get_freeze_count() > len(kept)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    assert YOUNG_THRESHOLD > 700  # CPython's default, the cost this change removes


@pytest.mark.usefixtures("restored")
def test_cycles_are_still_collected() -> None:
    settle_for_batches()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() > 0
