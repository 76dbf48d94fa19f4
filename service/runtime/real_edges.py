"""The real edges of a worker: the Kafka clients, the Redis store and topic creation."""

from __future__ import annotations

import structlog

from service import __version__
from service.config import Settings
from service.kafka.admin import ensure_topics, partition_count
from service.kafka.clients import consumer_config, producer_config
from service.kafka.consumer import GroupConsumer
from service.kafka.producer import BatchProducer
from service.processing.aggregates import ops_of
from service.processing.windows import WindowPlan
from service.runtime.edges import Edges, PartitionsCallback, StatsCallback
from service.state.client import connect
from service.state.codec import StateLayout
from service.state.redis_store import RedisWindowStore

log = structlog.get_logger("rill.edges")

DEFAULT_PARTITIONS = 4


def open_consumer(
    settings: Settings,
    topics: list[str],
    on_assign: PartitionsCallback,
    on_revoke: PartitionsCallback,
    on_stats: StatsCallback,
) -> GroupConsumer:
    """The group consumer of `settings` on `topics` (not started)."""
    return GroupConsumer(consumer_config(settings), topics, on_assign, on_revoke, on_stats)


def open_producer(settings: Settings, gapless: bool = False) -> BatchProducer:
    """The started producer of `settings` (`gapless`: see `producer_config`)."""
    return BatchProducer(producer_config(settings, gapless), __version__).start()


def state_layout(settings: Settings, window: WindowPlan) -> StateLayout:
    """Where the window state of `settings` lives, and what the scripts need to know."""
    s = settings
    return StateLayout(
        prefix=s.state.prefix,
        group=s.kafka.group_id,
        kind=window.spec.kind,
        size_ms=window.spec.size_ms,
        emit=window.emit,
        ops=tuple(ops_of(window.aggregations)),
        ttl_s=s.state.ttl_s,
    )


def open_store(settings: Settings, window: WindowPlan) -> RedisWindowStore:
    """The window store of `settings`, connected and checked to answer."""
    s = settings
    client = connect(
        s.state.url.get_secret_value(),
        cluster=s.state.cluster,
        timeout_s=s.state.timeout_s,
        password=s.state.password.get_secret_value() if s.state.password else None,
        ssl_ca_certs=s.state.ssl_ca_certs,
    )
    return RedisWindowStore(client, state_layout(s, window))


def create_topics(settings: Settings, repartition: str | None = None) -> dict[str, int]:
    """Create the input, output, DLQ (and late) topics where missing, and the repartition
    topic of `group_by` (its partitions: RILL_REPARTITION_PARTITIONS, else the input's).

    Returns:
        The repartition topic's partition count as the broker has it (empty without one).
    """
    s = settings
    common = s.kafka.librdkafka_common()
    partitions = partition_count(common, s.topics.input) or DEFAULT_PARTITIONS
    topics = [s.topics.input, s.topics.output, s.topics.dlq]
    if s.topics.late:
        topics.append(s.topics.late)
    ensure_topics(common, topics, partitions)
    if repartition is None:
        return {}
    wanted = s.repartition.partitions or partitions
    config = {"cleanup.policy": "delete", "retention.ms": str(s.repartition.retention_ms)}
    ensure_topics(common, [repartition], wanted, config=config)
    found = partition_count(common, repartition) or wanted
    if found != wanted:
        # Every worker partitions by the count the broker has, so the windows stay whole.
        log.warning(
            "the repartition topic exists with another partition count: kept",
            topic=repartition,
            partitions=found,
            configured=wanted,
        )
    return {repartition: found}


REAL_EDGES = Edges(open_consumer, open_producer, open_store, create_topics)
