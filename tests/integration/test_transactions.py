"""The transactional producer on the real broker: a client that fails is replaced, and
nothing of the transaction it was in is ever committed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from service.config import Settings
from service.errors import DeliveryError
from service.kafka.clients import producer_config
from service.kafka.producer import BatchProducer
from service.records import OutRecord
from tests.integration.conftest import Endpoints
from tests.integration.helpers import create_topics, read_once

pytestmark = pytest.mark.integration


def _stalled(topic: str, stall_s: float) -> Iterator[OutRecord]:
    """Records whose producing stalls past the transaction timeout half-way."""
    for i in range(4):
        yield OutRecord(topic, f"k{i}".encode(), b"first", None)
    time.sleep(stall_s)
    for i in range(4, 8):
        yield OutRecord(topic, f"k{i}".encode(), b"first", None)


def test_a_transaction_the_coordinator_timed_out_is_redone_by_a_new_producer(
    endpoints: Endpoints, unique: str
) -> None:
    """The coordinator aborts a transaction open past transaction.timeout.ms and fences its
    producer (a fatal librdkafka error). The worker must not die of it: the next attempt
    runs on a new client with the same transactional id, and only it is committed."""
    topic = f"txn-{unique}"
    create_topics(endpoints.bootstrap, [topic])
    settings = Settings(
        bootstrap_servers=endpoints.bootstrap,
        input_topic=f"in-{unique}",
        output_topic=topic,
        processing_guarantee="exactly_once",
        transaction_timeout_ms=1000,
    )
    producer = BatchProducer(producer_config(settings), "test").start()
    try:
        producer.init_transactions(30)
        # The broker aborts timed-out transactions every second (deploy/local/stack.sh).
        with pytest.raises(DeliveryError):
            producer.transaction(_stalled(topic, 4.0), [], {}, None, 10)
        producer.settle(30)
        again = [OutRecord(topic, f"k{i}".encode(), b"again", None) for i in range(8)]
        producer.transaction(again, [], {}, None, 10)
    finally:
        producer.close()
    values = sorted(r.value or b"" for r in read_once(endpoints.bootstrap, topic))
    assert values == [b"again"] * 8
