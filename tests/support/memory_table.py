"""The in-memory twin of a materialized table (`runtime.real_edges.MaterializedTable`).

The table's topic is a `MemoryBroker` topic and the rows are written by the real
`RedisTable` (the same `table_put.lua`) on fakeredis. No thread: each `loaded()` reads
one chunk per partition (so the worker's wait at start drives the reading), and `get`
first reads what is new when `follow` is on (a follower that keeps up); with `follow`
off the table lags the stream by whatever was appended after start.
"""

from __future__ import annotations

from collections.abc import Sequence

import fakeredis

from service.records import TP, InRecord
from service.state.table_store import RedisTable
from tests.support.memory_kafka import MemoryBroker


class MemoryTable:
    """A table read from `topic` of `broker` into a fake Redis shared by `server`."""

    def __init__(
        self,
        broker: MemoryBroker,
        topic: str,
        server: fakeredis.FakeServer,
        chunk: int = 2,
        follow: bool = True,
        prefix: str = "rill",
    ) -> None:
        self.broker, self.topic, self.chunk, self.follow = broker, topic, chunk, follow
        self.store = RedisTable(fakeredis.FakeRedis(server=server), prefix, topic)
        self.positions: dict[TP, int] = {}
        self.ends: dict[TP, int] = {}
        self.loaded_calls = 0
        self.started = False

    def start(self) -> MemoryTable:
        """The ends of every partition now; reading starts at offset 0."""
        parts = self.broker.partitions.get(self.topic, 1)
        for p in range(parts):
            tp = (self.topic, p)
            self.positions[tp] = 0
            self.ends[tp] = len(self.broker.logs.get(tp, []))
        self.started = True
        return self

    def pump(self, limit: int | None = None) -> int:
        """Read up to `limit` records per partition (all when None) and write them."""
        batch: list[InRecord] = []
        for tp, pos in self.positions.items():
            log = self.broker.logs.get(tp, [])
            stop = len(log) if limit is None else min(len(log), pos + limit)
            for offset in range(pos, stop):
                r = log[offset]
                batch.append(InRecord(tp[0], tp[1], offset, r.key, r.value, r.headers, 0))
            self.positions[tp] = max(pos, stop)
        if batch:
            self.store.put(batch)
        return len(batch)

    def loaded(self) -> bool:
        """Read one more chunk; whether every partition reached its end at start."""
        self.loaded_calls += 1
        self.pump(self.chunk)
        return all(self.positions[tp] >= end for tp, end in self.ends.items())

    def status(self) -> str:
        """How far it is."""
        return f"table {self.topic!r} loading: {sum(self.positions.values())} read"

    def lag(self) -> int:
        """Records of the topic not read yet."""
        return sum(len(self.broker.logs.get(tp, [])) - pos for tp, pos in self.positions.items())

    def check(self) -> None:
        """Nothing fails here."""

    def get(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The rows, after reading what is new (when following)."""
        if self.follow:
            self.pump()
        return self.store.get(keys)

    def ping(self) -> bool:
        """fakeredis answers."""
        return True

    def close(self) -> None:
        """Nothing to close."""
