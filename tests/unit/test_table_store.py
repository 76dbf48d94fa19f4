"""The table writer (table_put.lua on fakeredis) and the table settings."""

from __future__ import annotations

import itertools

import fakeredis
import pytest

from service.app import build_plan
from service.config import load_settings
from service.errors import ConfigError
from service.pipeline import Pipeline
from service.records import InRecord
from service.state.table_store import RedisTable, stored_value


def rec(key: bytes | None, value: bytes | None, offset: int, partition: int = 0) -> InRecord:
    return InRecord("customers", partition, offset, key, value, None, 0)


def table(server: fakeredis.FakeServer | None = None) -> RedisTable:
    return RedisTable(
        fakeredis.FakeRedis(server=server or fakeredis.FakeServer()), "t", "customers"
    )


def test_latest_value_per_key_is_read_back() -> None:
    """Within a batch and across batches, the highest offset's value is the row."""
    t = table()
    t.put([rec(b"a", b"1", 0), rec(b"b", b"2", 1), rec(b"a", b"3", 2)])
    t.put([rec(b"b", b"4", 3)])
    assert t.get([b"a", b"b", b"zz"]) == {b"a": b"3", b"b": b"4"}


def test_an_older_value_never_replaces_a_newer_one() -> None:
    """A write of a lower offset (a slower worker) changes nothing."""
    t = table()
    assert t.put([rec(b"a", b"new", 7)]) == 1
    assert t.put([rec(b"a", b"old", 3)]) == 0
    assert t.put([rec(b"a", b"same", 7)]) == 0
    assert t.get([b"a"]) == {b"a": b"new"}


def test_a_tombstone_deletes_and_stays_deleted() -> None:
    """A null value deletes the key; an older value written after it does not revive it."""
    t = table()
    t.put([rec(b"a", b"v", 1)])
    t.put([rec(b"a", None, 2)])
    assert t.get([b"a"]) == {}
    t.put([rec(b"a", b"v", 1)])
    assert t.get([b"a"]) == {}
    t.put([rec(b"a", b"back", 3)])
    assert t.get([b"a"]) == {b"a": b"back"}


def test_records_without_a_key_are_left_out() -> None:
    """A null-keyed record has no place in a table: nothing written."""
    t = table()
    assert t.put([rec(None, b"x", 0)]) == 0


def test_large_offsets_keep_their_digits() -> None:
    """Offsets past 2^53 are compared and stored as written (Lua would print 1e+15)."""
    server = fakeredis.FakeServer()
    t = table(server)
    t.put([rec(b"a", b"x", 10**15)])
    raw = fakeredis.FakeRedis(server=server)
    assert raw.hget(t.key, b"a") == b"0:1000000000000000:+x"
    assert t.put([rec(b"a", b"y", 10**15 + 1)]) == 1


def test_two_writers_in_any_order_agree() -> None:
    """N workers writing the same table's batches in any interleaving end with one table."""
    batches = [
        [rec(b"a", b"1", 0), rec(b"b", b"1", 0, partition=1)],
        [rec(b"a", None, 1), rec(b"c", b"1", 2)],
        [rec(b"a", b"2", 3), rec(b"b", b"2", 1, partition=1)],
    ]
    results = set()
    for order in itertools.permutations(range(3)):
        server = fakeredis.FakeServer()
        first, second = table(server), table(server)
        for i in order:
            first.put(batches[i])
        for i in range(3):
            second.put(batches[i])
        results.add(tuple(sorted(first.get([b"a", b"b", b"c"]).items())))
    assert results == {((b"a", b"2"), (b"b", b"2"), (b"c", b"1"))}


def test_stored_value_reads_values_and_tombstones() -> None:
    """The stored layout: version prefix, then + and the value, or - for a tombstone."""
    assert stored_value(b"1:2:+abc") == b"abc"
    assert stored_value(b"1:2:-") is None
    assert stored_value(None) is None
    with pytest.raises(ValueError, match="not a table field"):
        stored_value(b"garbage")


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"table_topic": "orders"}, "RILL_TABLE_TOPIC"),
        ({"table_topic": "t"}, "RILL_TABLE_KEY_FIELD"),
        (
            {"table_topic": "t", "table_key_field": "k", "table_wire": "registry"},
            "RILL_SCHEMA_REGISTRY_URL",
        ),
        ({"table_topic": "t", "table_key_field": "k", "table_format": "avro"}, "RILL_TABLE_SCHEMA"),
    ],
)
def test_bad_table_settings_fail_at_start_naming_the_setting(
    settings: dict[str, str], names: str
) -> None:
    """A table topic that is the input, no key field, the registry wire without a registry,
    avro without a schema: a ConfigError naming the setting to fix."""
    with pytest.raises(ConfigError, match=names):
        load_settings(input_topic="orders", **settings)


def test_declarative_table_settings_build_the_join() -> None:
    """RILL_TABLE_* give the plan its join: topic, key field, kind, missing, as."""
    s = load_settings(
        table_topic="customers",
        table_key_field="customer_id",
        table_join="left",
        table_missing="drop",
        table_as="",
    )
    join = build_plan(s).join
    assert join is not None
    assert (join.topic, join.kind, join.missing, join.as_) == ("customers", "left", "drop", None)
    assert join.key({"customer_id": "c9"}) == "c9"
    assert build_plan(load_settings()).join is None


def test_python_pipeline_without_a_join_and_a_table_topic_without_key_field_fails() -> None:
    """RILL_APP whose pipeline joins no table, RILL_TABLE_TOPIC set and no key field: a
    ConfigError at start naming both ways out, never a pipeline silently not joining."""
    settings = load_settings(app="tests.integration.apps:lenient", table_topic="customers")
    with pytest.raises(ConfigError, match="RILL_TABLE_KEY_FIELD, or call join_table"):
        build_plan(settings)


def test_python_pipelines_join_wins_and_takes_the_configured_serde() -> None:
    """RILL_APP's join_table() is the join; RILL_TABLE_FORMAT etc. give it its decoder."""
    settings = load_settings(
        app="tests.unit.test_table_store:joined", table_topic="other", table_key_field="x"
    )
    join = build_plan(settings).join
    assert join is not None
    assert (join.topic, join.kind, join.as_) == ("customers", "left", "customer")
    assert join.decoder is not None
    assert join.decoder.decode(b'{"a": 1}') == {"a": 1}


joined = Pipeline("joined").join_table(
    "customers", lambda o: o["customer_id"], join="left", as_="customer"
)
