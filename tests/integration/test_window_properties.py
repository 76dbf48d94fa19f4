"""Property: on random out-of-order streams, windows in a real Redis and a real Redis
Cluster equal the reference model (the same tests the unit tier runs in-process)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.state.client import RedisClient
from service.state.codec import StateLayout
from service.state.redis_store import RedisWindowStore
from service.state.store import WindowStore
from tests.support import window_properties as props
from tests.support.redis_clients import MODES, real_redis

pytestmark = pytest.mark.integration


@pytest.fixture(params=MODES)
def redis_client(request: pytest.FixtureRequest) -> Iterator[RedisClient]:
    """A client of the real Redis, or of the real 3-node Redis Cluster."""
    made = real_redis(request)
    yield made
    made.close()


@pytest.fixture
def make_store(redis_client: RedisClient) -> props.StoreFactory:
    """Stores over one shared client: every store sees the same Redis."""

    def make(layout: StateLayout) -> WindowStore:
        return RedisWindowStore(redis_client, layout)

    return make


@pytest.mark.parametrize("emit", props.EMITS)
@pytest.mark.parametrize("kind", list(props.SPECS))
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=props.records_st, cuts=props.cuts_st)
@example(**props.SPLIT_WINDOW)
def test_windows_equal_reference_model(
    make_store: props.StoreFactory,
    kind: str,
    emit: str,
    raw: list[tuple[int, str, int, int]],
    cuts: list[int],
) -> None:
    """Every window's aggregate equals the model, for all window types and emit modes."""
    props.check_windows_equal_model(make_store, kind, emit, raw, cuts)


def test_record_without_event_time_is_a_dlq_entry(make_store: props.StoreFactory) -> None:
    """A record without its event-time field becomes a DLQ entry, not a crash."""
    props.check_record_without_event_time_is_a_dlq_entry(make_store)


def test_custom_reducer_state_moves_to_a_new_owner_and_fences_the_old(
    make_store: props.StoreFactory,
) -> None:
    """A user reducer's accumulator lives in Redis: a new owner continues it; the old is fenced."""
    props.check_custom_reducer_moves_to_a_new_owner(make_store)


@pytest.mark.parametrize("emit", props.EMITS)
@pytest.mark.parametrize("kind", list(props.COUNT_SPECS))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=props.records_st, cuts=props.cuts_st, handovers=st.sets(st.integers(0, 6)))
def test_count_windows_equal_reference_model(
    make_store: props.StoreFactory,
    kind: str,
    emit: str,
    raw: list[tuple[int, str, int, int]],
    cuts: list[int],
    handovers: set[int],
) -> None:
    """Count windows in real Redis equal the naive model across owner changes and replays."""
    props.check_count_windows_equal_model(make_store, kind, emit, raw, cuts, handovers)
