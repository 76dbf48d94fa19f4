"""Contract: GroupConsumer / BatchProducer on the real broker keep the Consumer / Producer
contract (the unit tier runs the same suite on the in-memory twin)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer as KafkaProducer

from service import __version__
from service.config import Settings
from service.kafka.clients import consumer_config, producer_config
from service.kafka.consumer import GroupConsumer
from service.kafka.producer import BatchProducer
from service.records import OutRecord
from service.runtime.edges import Consumer, Producer
from tests.integration.conftest import Endpoints
from tests.integration.helpers import create_topics, read_all
from tests.support.kafka_contract import KafkaContract, PartitionsCallback

pytestmark = pytest.mark.integration


class BrokerBackend:
    """The contract's backend on the real broker: unique topics and groups per test."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._run = uuid.uuid4().hex[:8]
        self._n = 0

    def _name(self, kind: str) -> str:
        self._n += 1
        return f"contract-{kind}-{self._run}-{self._n}"

    def _settings(self, group: str, exactly_once: bool = False) -> Settings:
        return Settings(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            processing_guarantee="exactly_once" if exactly_once else "at_least_once",
        )

    def topic(self, partitions: int) -> str:
        name = self._name("t")
        create_topics(self.bootstrap, [name], partitions)
        return name

    def append(self, topic: str, partition: int, records: list[OutRecord]) -> None:
        producer = KafkaProducer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
        for r in records:
            producer.produce(topic, r.value, r.key, partition=partition, headers=r.headers)
        assert producer.flush(30) == 0

    def consumer(
        self, topic: str, group: str, on_assign: PartitionsCallback, on_revoke: PartitionsCallback
    ) -> Consumer:
        return GroupConsumer(consumer_config(self._settings(group)), [topic], on_assign, on_revoke)

    def producer(self, group: str, exactly_once: bool) -> Producer:
        settings = self._settings(group, exactly_once)
        return BatchProducer(producer_config(settings), __version__).start()

    def read(self, topic: str, expected: int) -> list[OutRecord]:
        found = read_all(self.bootstrap, topic, expected, timeout_s=30, settle_s=0)
        return [OutRecord(r.topic, r.key, r.value, r.headers or None) for r in found]

    def group(self) -> str:
        return self._name("g")


class TestRealKafka(KafkaContract):
    """The contract on GroupConsumer / BatchProducer and the real broker."""

    @pytest.fixture
    def kafka(self, endpoints: Endpoints) -> BrokerBackend:
        return BrokerBackend(endpoints.bootstrap)
