"""Topic administration against the real broker: the partition count of a topic that
exists, asked for right after its creation, and the message when no broker answers."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from service.errors import RillError
from service.kafka.admin import settled_count
from tests.integration.conftest import Endpoints
from tests.integration.test_operations import free_port


def test_a_topic_created_a_moment_ago_has_its_count(endpoints: Endpoints, unique: str) -> None:
    """Asked at once after the broker acknowledged the creation: the count it was made with."""
    conf = {"bootstrap.servers": endpoints.bootstrap}
    topics = [f"admin-{unique}-{i}" for i in range(5)]
    admin = AdminClient(conf)
    futures = admin.create_topics([NewTopic(t, num_partitions=3) for t in topics])
    for future in futures.values():
        future.result(timeout=30)
    assert [settled_count(conf, t) for t in topics] == [3] * 5


def test_a_broker_that_does_not_answer_is_asked_again_then_named(unique: str) -> None:
    """A broker restarting does not answer: asked again until `wait_s`, then the error
    names the topic (this port has no broker)."""
    conf = {"bootstrap.servers": f"127.0.0.1:{free_port()}", "socket.timeout.ms": 1000}
    with pytest.raises(RillError, match=rf"cannot reach Kafka to describe 'admin-{unique}'"):
        settled_count(conf, f"admin-{unique}", wait_s=0.5)
