"""Contract: the Lua scripts and `state.codec` agree on the layout, on a real Redis and a
real Redis Cluster (the unit tier checks the same on fakeredis)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from service.state.client import RedisClient, connect
from service.window_state import Component
from tests.integration.conftest import Endpoints
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


@pytest.mark.parametrize("kind", [*KINDS, "none"])
def test_dedupe_ids_and_outputs_are_recorded_only_by_an_applied_call(
    client: RedisClient, kind: str
) -> None:
    """`seen` holds the kept ids by expiry, trimmed; stale or fenced calls record none;
    `<seq>:r` outputs decode as sent and return with the next claim."""
    contract.check_dedupe_ids(client, kind)


@pytest.mark.parametrize("kind", ["count_tumbling", "count_hopping"])
def test_a_count_window_closes_in_the_apply_that_fills_it(client: RedisClient, kind: str) -> None:
    """A count window never closes by the watermark, only when its count is reached."""
    contract.check_count_window_closes_when_full(client, kind)


def test_source_marks_are_written_and_claimed_back(client: RedisClient) -> None:
    """group_by's source marks: written by apply into meta, handed back by the next claim."""
    contract.check_source_marks(client)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=contract.components_st, b=contract.components_st)
def test_script_merge_equals_python_merge(
    client: RedisClient, a: list[Component], b: list[Component]
) -> None:
    """The script merges every op (add, min, max, first, last, set) as windows.merge does."""
    contract.check_script_merge_equals_python(client, a, b)


class _Monitor:
    """Every command a real Redis runs, as MONITOR shows them (from a thread)."""

    def __init__(self, client: RedisClient) -> None:
        self.lines: list[tuple[str, str]] = []
        self.client = client  # holds the connection pool MONITOR's connection is from
        self._monitor = client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                found = self._monitor.next_command()
            except Exception as exc:  # noqa: BLE001 - ends the thread; the test shows it
                self.lines.append(("error", repr(exc)))
                return
            self.lines.append((str(found["client_type"]), str(found["command"])))
            if found["command"] == "ECHO monitor-end":
                return

    def stop(self, client: RedisClient) -> list[tuple[str, str]]:
        client.echo("monitor-end")
        self._thread.join(10)
        self._monitor.__exit__()
        return self.lines


# Commands whose every argument is a key; the others the scripts use take one key first.
_ALL_KEYS = {"DEL", "EXISTS"}


def _undeclared(lines: list[tuple[str, str]]) -> list[str]:
    """Commands a script ran on a key not among the KEYS of the EVALSHA that ran it."""
    declared: set[str] = set()
    out: list[str] = []
    for source, command in lines:
        words = command.split(" ")
        name = words[0].upper()
        if source != "lua":
            if name in ("EVALSHA", "EVAL"):
                declared = set(words[3 : 3 + int(words[2])])
            continue
        keys = words[1:] if name in _ALL_KEYS else words[1:2]
        out.extend(command for key in keys if key not in declared)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_key_a_script_touches_is_in_its_keys(kind: str, endpoints: Endpoints) -> None:
    """B13: MONITOR on a real Redis: every key a script reads or writes was in its KEYS, so a
    Cluster slot migration moves it with the others (the script never sees half a state)."""
    client = connect(endpoints.redis_url)
    monitor = _Monitor(connect(endpoints.redis_url))
    try:
        contract.check_keys_and_members(client, kind)
        contract.check_outbox(client, kind)
        contract.check_dedupe_ids(client, kind)
    finally:
        lines = monitor.stop(client)
        client.close()
    assert any(source == "lua" for source, _ in lines), "MONITOR saw no script run"
    assert _undeclared(lines) == []
