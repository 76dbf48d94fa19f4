"""The contract of the table seam (`runtime.edges.Table`), once.

`TableContract` holds the tests; a tier subclasses it and gives the `tables` fixture:
the unit tier the in-memory twin (tests/support/memory_table.py), the integration tier
`MaterializedTable` on the real broker and Redis. So the twin the worker's unit tests run
on keeps what the worker relies on: loaded means every record written before the start
is readable; the latest value per key wins; a tombstone deletes; records written later
are followed; a key without a row is absent from a lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Protocol

import pytest

from service.runtime.edges import Table


class TableBackend(Protocol):
    """What the contract needs of a tier: table topics, writing them, opening a table."""

    def topic(self, partitions: int) -> str:
        """A new (compacted) topic with this many partitions."""
        ...

    def write(self, topic: str, rows: dict[bytes, bytes | None]) -> None:
        """Write table records (None: a tombstone), partitioned by key, as a producer would."""
        ...

    def table(self, topic: str) -> Table:
        """An unstarted table of `topic`."""
        ...


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Wait until `check` holds (the real table follows in a thread of its own)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class TableContract:
    """The tests; a tier provides `tables`."""

    @pytest.fixture
    def opened(self, tables: TableBackend) -> Iterator[list[Table]]:
        """Tables the test opened, closed after it."""
        made: list[Table] = []
        yield made
        for table in made:
            table.close()

    def start(self, tables: TableBackend, opened: list[Table], topic: str) -> Table:
        table = tables.table(topic)
        opened.append(table)
        table.start()
        eventually(table.loaded, "the table loaded")
        return table

    def test_loaded_holds_the_latest_row_of_every_key_written_before(
        self, tables: TableBackend, opened: list[Table]
    ) -> None:
        """Once loaded, each key written before the start reads its latest value; a key
        never written is absent."""
        topic = tables.topic(3)
        tables.write(topic, {f"k{i}".encode(): f"v{i}".encode() for i in range(50)})
        tables.write(topic, {b"k7": b"newer", b"k8": b"newer"})
        table = self.start(tables, opened, topic)
        want = {f"k{i}".encode(): f"v{i}".encode() for i in range(50)}
        want.update({b"k7": b"newer", b"k8": b"newer"})
        assert table.get([*want, b"never"]) == want

    def test_a_tombstone_deletes_the_row(self, tables: TableBackend, opened: list[Table]) -> None:
        """A null value written after a key's row deletes it."""
        topic = tables.topic(2)
        tables.write(topic, {b"a": b"1", b"b": b"2"})
        tables.write(topic, {b"a": None})
        table = self.start(tables, opened, topic)
        assert table.get([b"a", b"b"]) == {b"b": b"2"}

    def test_records_written_after_the_start_are_followed(
        self, tables: TableBackend, opened: list[Table]
    ) -> None:
        """A new key, an update and a tombstone written while the table runs are seen."""
        topic = tables.topic(2)
        tables.write(topic, {b"a": b"1", b"b": b"1"})
        table = self.start(tables, opened, topic)
        tables.write(topic, {b"a": b"2", b"b": None, b"c": b"1"})
        want = {b"a": b"2", b"c": b"1"}
        eventually(lambda: table.get([b"a", b"b", b"c"]) == want, "the new records")
        eventually(lambda: table.lag() == 0, "no lag once every record is in")

    def test_an_empty_table_is_loaded_and_has_no_rows(
        self, tables: TableBackend, opened: list[Table]
    ) -> None:
        """A table topic with no record yet: loaded at once, every lookup empty."""
        table = self.start(tables, opened, tables.topic(2))
        assert table.get([b"a"]) == {}
        assert table.ping()
