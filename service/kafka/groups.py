"""Consumer-group facts for the operator CLI: members, committed and end offsets, lag."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from service.errors import RillError


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the group."""

    member_id: str
    client_id: str
    host: str
    partitions: list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition's position."""

    topic: str
    partition: int
    committed: int
    end: int
    lag: int
    lag_seconds: float


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """What `rill status` shows."""

    group: str
    state: str
    members: list[Member]
    partitions: list[PartitionLag]


def group_status(
    conf: dict[str, Any], group: str, topic: str, timeout_s: float = 10.0
) -> GroupStatus:
    """Members, per-partition committed and end offsets, lag in records and seconds."""
    admin = AdminClient(conf)
    try:
        desc = admin.describe_consumer_groups([group])[group].result(timeout=timeout_s)
        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[
            group
        ].result(timeout=timeout_s)
    except KafkaException as exc:
        raise RillError(f"cannot describe group {group!r}: {exc}") from exc
    members = [
        Member(
            m.member_id,
            m.client_id,
            m.host,
            sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions),
        )
        for m in desc.members
    ]
    committed = {(tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions}
    probe = Consumer(
        {**conf, "group.id": f"rill-status-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    )
    try:
        meta = probe.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise RillError(f"topic {topic!r} does not exist")
        rows = []
        for p in sorted(meta.partitions):
            low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            done = committed.get((topic, p), -1)
            start = done if done >= 0 else low
            lag = max(0, high - start)
            rows.append(
                PartitionLag(
                    topic, p, done, high, lag, _age_at(probe, topic, p, start) if lag else 0.0
                )
            )
    finally:
        probe.close()
    return GroupStatus(group, str(desc.state).rsplit(".", 1)[-1], members, rows)


def _age_at(consumer: Consumer, topic: str, partition: int, offset: int) -> float:
    """Seconds since the first unprocessed record was produced."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    msg = consumer.consume(1, timeout=5.0)
    consumer.unassign()
    if not msg or msg[0].error() is not None:
        return 0.0
    return max(0.0, time.time() - msg[0].timestamp()[1] / 1000)
