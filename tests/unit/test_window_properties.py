"""Property: on random out-of-order streams, windows equal the reference model — the real
Lua scripts on the in-process store (`MemoryWindowStore`, fakeredis with Lua)."""

from __future__ import annotations

import fakeredis
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from service.state.codec import StateLayout
from service.state.store import WindowStore
from tests.support import window_properties as props
from tests.support.memory_store import MemoryWindowStore


def _memory() -> props.StoreFactory:
    server = fakeredis.FakeServer()

    def make(layout: StateLayout) -> WindowStore:
        return MemoryWindowStore(layout, server)

    return make


@pytest.mark.parametrize("emit", props.EMITS)
@pytest.mark.parametrize("kind", list(props.SPECS))
@settings(max_examples=100, deadline=None)
@given(raw=props.records_st, cuts=props.cuts_st)
@example(**props.SPLIT_WINDOW)
def test_windows_equal_reference_model(
    kind: str, emit: str, raw: list[tuple[int, str, int, int]], cuts: list[int]
) -> None:
    """Every window's aggregate equals the model, for all window types and emit modes."""
    props.check_windows_equal_model(_memory(), kind, emit, raw, cuts)


def test_record_without_event_time_is_a_dlq_entry() -> None:
    """A record without its event-time field becomes a DLQ entry, not a crash."""
    props.check_record_without_event_time_is_a_dlq_entry(_memory())


def test_custom_reducer_state_moves_to_a_new_owner_and_fences_the_old() -> None:
    """A user reducer's accumulator lives in the store: a new owner continues it."""
    props.check_custom_reducer_moves_to_a_new_owner(_memory())


@pytest.mark.parametrize("emit", props.EMITS)
@pytest.mark.parametrize("kind", list(props.COUNT_SPECS))
@settings(max_examples=40, deadline=None)
@given(raw=props.records_st, cuts=props.cuts_st, handovers=st.sets(st.integers(0, 6)))
@example(raw=[(0, "a", 0, 1)] * 7, cuts=[2, 3, 5], handovers={1, 2})
def test_count_windows_equal_reference_model(
    kind: str,
    emit: str,
    raw: list[tuple[int, str, int, int]],
    cuts: list[int],
    handovers: set[int],
) -> None:
    """Count windows equal the naive model across owner changes and replayed records."""
    props.check_count_windows_equal_model(_memory(), kind, emit, raw, cuts, handovers)
