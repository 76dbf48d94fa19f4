"""Contract: MaterializedTable (the table follower and RedisTable) on the real broker and
Redis keeps the Table contract (the unit tier runs the same suite on the in-memory twin)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from service.config import load_settings
from service.processing.join import JoinPlan, field_key
from service.runtime.real_edges import MaterializedTable, open_table
from tests.integration.conftest import Endpoints
from tests.support.table_contract import TableContract

pytestmark = pytest.mark.integration


class RealTables:
    """The contract's backend: compacted topics on the broker, the tables in Redis."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._run = uuid.uuid4().hex[:8]
        self._n = 0
        self.settings = load_settings(
            bootstrap_servers=endpoints.bootstrap,
            redis_url=endpoints.redis_url,
            redis_prefix=f"contract-{self._run}",
            metrics_port=0,
        )

    def topic(self, partitions: int) -> str:
        self._n += 1
        name = f"contract-table-{self._run}-{self._n}"
        admin = AdminClient({"bootstrap.servers": self.endpoints.bootstrap})
        new = NewTopic(name, num_partitions=partitions, config={"cleanup.policy": "compact"})
        for future in admin.create_topics([new]).values():
            future.result(timeout=30)
        return name

    def write(self, topic: str, rows: dict[bytes, bytes | None]) -> None:
        producer = Producer({"bootstrap.servers": self.endpoints.bootstrap})
        for key, value in rows.items():
            producer.produce(topic, value, key)
        assert producer.flush(30) == 0

    def table(self, topic: str) -> MaterializedTable:
        return open_table(self.settings, JoinPlan(topic, field_key("k")))


class TestMaterializedTable(TableContract):
    """The contract on the real follower and Redis."""

    @pytest.fixture
    def tables(self, endpoints: Endpoints) -> RealTables:
        return RealTables(endpoints)
