"""Contract: the Lua scripts and `state.codec` agree on the layout, on a real Redis and a
real Redis Cluster (the unit tier checks the same on fakeredis)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from service.processing.windows import Component
from service.state.client import RedisClient
from tests.support import state_contract as contract
from tests.support.redis_clients import MODES, real_redis

pytestmark = pytest.mark.integration

KINDS = ["tumbling", "hopping", "sliding", "session"]


@pytest.fixture(params=MODES)
def client(request: pytest.FixtureRequest) -> Iterator[RedisClient]:
    """A client of the real Redis, or of the real 3-node Redis Cluster."""
    made = real_redis(request)
    yield made
    made.close()


@pytest.mark.parametrize("kind", KINDS)
def test_scripts_write_the_keys_and_members_the_codec_names(client: RedisClient, kind: str) -> None:
    """Keys are exactly meta/idx/state (+ per-key sets); ids and members parse with the codec."""
    contract.check_keys_and_members(client, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_outbox_fields_parse_with_the_codec(client: RedisClient, kind: str) -> None:
    """Outbox fields are `<seq>:o` / `<seq>:l`; rows and DLQ entries decode as sent."""
    contract.check_outbox(client, kind)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=contract.components_st, b=contract.components_st)
def test_script_merge_equals_python_merge(
    client: RedisClient, a: list[Component], b: list[Component]
) -> None:
    """The script merges every op (add, min, max, first, last, set) as windows.merge does."""
    contract.check_script_merge_equals_python(client, a, b)
