"""Topic administration: create the topics a pipeline writes, if they are missing."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from service.errors import RillError
from service.kafka.logs import logged


def ensure_topics(
    conf: dict[str, Any],
    topics: Iterable[str],
    partitions: int,
    timeout_s: float = 30.0,
    config: dict[str, str] | None = None,
) -> None:
    """Create each topic that does not exist yet (replication factor: broker default),
    with these topic configs (`config`, e.g. `retention.ms`); an existing one is kept as is.

    Raises:
        RillError: a topic could not be created for another reason than existing.
    """
    admin = AdminClient(logged(conf, "admin"))
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, config=config or {}) for t in set(topics)],
        operation_timeout=timeout_s,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RillError(f"cannot create topic {topic!r}: {exc}") from exc


def partition_count(conf: dict[str, Any], topic: str, timeout_s: float = 10.0) -> int | None:
    """How many partitions `topic` has, or None when it does not exist."""
    admin = AdminClient(logged(conf, "admin"))
    try:
        meta = admin.list_topics(topic=topic, timeout=timeout_s)
    except KafkaException as exc:
        raise RillError(f"cannot reach Kafka to describe {topic!r}: {exc}") from exc
    found = meta.topics.get(topic)
    if found is None or found.error is not None:
        return None
    return len(found.partitions)


def settled_count(conf: dict[str, Any], topic: str, wait_s: float = 60.0) -> int:
    """How many partitions `topic` has, for a topic that exists (just created, by rill or
    by whoever made it a moment before): a broker can answer its metadata without a topic
    it has just created, and a broker restarting does not answer at all; either way it is
    asked again, for up to `wait_s`.

    Raises:
        RillError: the broker did not list the topic, or did not answer, within `wait_s`.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            count = partition_count(conf, topic)
        except RillError:
            if time.monotonic() > deadline:
                raise
            count = None
        if count is not None:
            return count
        if time.monotonic() > deadline:
            raise RillError(
                f"topic {topic!r} exists but the broker did not list it within "
                f"{wait_s:.0f} s; check the broker's health (its log) and start again"
            )
        time.sleep(0.2)
