"""Contract: the in-memory table twin keeps the Table contract (the integration tier runs
the same suite on MaterializedTable, the real broker and Redis)."""

from __future__ import annotations

import itertools
import zlib

import fakeredis
import pytest

from service.records import OutRecord
from tests.support.memory_kafka import MemoryBroker
from tests.support.memory_table import MemoryTable
from tests.support.table_contract import TableContract


class MemoryTables:
    """The contract's backend on one in-memory broker and one fake Redis."""

    def __init__(self) -> None:
        self.broker, self.server = MemoryBroker(), fakeredis.FakeServer()
        self._names = itertools.count()

    def topic(self, partitions: int) -> str:
        name = f"table{next(self._names)}"
        self.broker.create(name, partitions)
        return name

    def write(self, topic: str, rows: dict[bytes, bytes | None]) -> None:
        parts = self.broker.partitions[topic]
        for key, value in rows.items():
            self.broker.append(OutRecord(topic, key, value), zlib.crc32(key) % parts)

    def table(self, topic: str) -> MemoryTable:
        return MemoryTable(self.broker, topic, self.server)


class TestMemoryTable(TableContract):
    """The contract on the twin."""

    @pytest.fixture
    def tables(self) -> MemoryTables:
        return MemoryTables()
