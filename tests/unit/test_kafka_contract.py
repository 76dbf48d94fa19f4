"""Contract: the in-memory Kafka twin keeps the Consumer / Producer contract (the
integration tier runs the same suite on GroupConsumer / BatchProducer and a real broker)."""

from __future__ import annotations

import itertools

import pytest

from service.records import OutRecord
from service.runtime.edges import Consumer, Producer
from tests.support.kafka_contract import KafkaContract, PartitionsCallback
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer


class MemoryBackend:
    """The contract's backend on one in-memory broker."""

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self._names = itertools.count()

    def topic(self, partitions: int) -> str:
        name = f"t{next(self._names)}"
        self.broker.create(name, partitions)
        return name

    def append(self, topic: str, partition: int, records: list[OutRecord]) -> None:
        for record in records:
            self.broker.append(record, partition)

    def consumer(
        self, topic: str, group: str, on_assign: PartitionsCallback, on_revoke: PartitionsCallback
    ) -> Consumer:
        return MemoryConsumer(self.broker, topic, on_assign, on_revoke)

    def producer(self, group: str, exactly_once: bool) -> Producer:
        return MemoryProducer(self.broker)

    def read(self, topic: str, expected: int) -> list[OutRecord]:
        return self.broker.records(topic)

    def group(self) -> str:
        return f"g{next(self._names)}"


class TestMemoryKafka(KafkaContract):
    """The contract on the twin."""

    @pytest.fixture
    def kafka(self) -> MemoryBackend:
        return MemoryBackend()
