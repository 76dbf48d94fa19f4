"""The real edges of a worker: the Kafka clients, the Redis store and topic creation."""

from __future__ import annotations

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

DEFAULT_PARTITIONS = 4


def open_consumer(
    settings: Settings,
    on_assign: PartitionsCallback,
    on_revoke: PartitionsCallback,
    on_stats: StatsCallback,
) -> GroupConsumer:
    """The group consumer of `settings` (not started)."""
    return GroupConsumer(
        consumer_config(settings), [settings.topics.input], on_assign, on_revoke, on_stats
    )


def open_producer(settings: Settings) -> BatchProducer:
    """The started producer of `settings`."""
    return BatchProducer(producer_config(settings), __version__).start()


def state_layout(settings: Settings, window: WindowPlan | None) -> StateLayout:
    """Where the window state of `settings` lives, and what the scripts need to know
    (`window` None: a stateless pipeline that keeps dedupe ids, kind `none`)."""
    s = settings
    if window is None:
        return StateLayout(s.state.prefix, s.kafka.group_id, "none", 0, "final", (), s.state.ttl_s)
    return StateLayout(
        prefix=s.state.prefix,
        group=s.kafka.group_id,
        kind=window.spec.kind,
        size_ms=window.spec.count if window.spec.counted else window.spec.size_ms,
        emit=window.emit,
        ops=tuple(ops_of(window.stored)),
        ttl_s=s.state.ttl_s,
        advance=window.spec.count_advance if window.spec.kind == "count_hopping" else 0,
    )


def open_store(settings: Settings, window: WindowPlan | None) -> RedisWindowStore:
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


def create_topics(settings: Settings) -> int:
    """Create the input, output, DLQ (late, route) topics where missing.

    Returns:
        The input topic's partition count.
    """
    s = settings
    common = s.kafka.librdkafka_common()
    partitions = partition_count(common, s.topics.input) or DEFAULT_PARTITIONS
    topics = [s.topics.input, s.topics.output, s.topics.dlq, *s.routing.allowed]
    if s.topics.late:
        topics.append(s.topics.late)
    ensure_topics(common, topics, partitions)
    return partitions


REAL_EDGES = Edges(open_consumer, open_producer, open_store, create_topics)
