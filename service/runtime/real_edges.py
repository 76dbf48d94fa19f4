"""The real edges of a worker: the Kafka clients, the Redis store and topic creation."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from service import __version__
from service.config import Settings
from service.kafka.admin import ensure_topics, partition_count, settled_count
from service.kafka.clients import consumer_config, producer_config
from service.kafka.consumer import GroupConsumer
from service.kafka.producer import BatchProducer
from service.kafka.table_reader import TableFollower
from service.processing.aggregates import ops_of
from service.processing.join import JoinPlan
from service.processing.windows import WindowPlan
from service.runtime.edges import Edges, PartitionsCallback, StatsCallback
from service.state.client import RedisClient, connect
from service.state.codec import StateLayout
from service.state.redis_store import RedisWindowStore
from service.state.table_store import RedisTable

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


def open_producer(
    settings: Settings, gapless: bool = False, *, transactional_id: str | None = None
) -> BatchProducer:
    """The started producer of `settings` (`gapless`: see `producer_config`; exactly-once:
    with `transactional_id`, or a new one when None)."""
    conf = producer_config(settings, gapless, transactional_id=transactional_id)
    return BatchProducer(conf, __version__).start()


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


def redis_client(settings: Settings) -> RedisClient:
    """A client of the Redis of `settings`, checked to answer."""
    s = settings
    return connect(
        s.state.url.get_secret_value(),
        cluster=s.state.cluster,
        timeout_s=s.state.timeout_s,
        password=s.state.password.get_secret_value() if s.state.password else None,
        ssl_ca_certs=s.state.ssl_ca_certs,
    )


def open_store(settings: Settings, window: WindowPlan | None) -> RedisWindowStore:
    """The window store of `settings`, connected and checked to answer."""
    return RedisWindowStore(redis_client(settings), state_layout(settings, window))


class MaterializedTable:
    """A table's topic followed into its Redis hash (implements `edges.Table`).

    Args:
        follower: reads the topic (its `write` is `store.put`).
        store: the table's hash in Redis.
    """

    def __init__(self, follower: TableFollower, store: RedisTable) -> None:
        self.follower, self.store = follower, store

    def start(self) -> MaterializedTable:
        """Read the topic from the beginning, in the follower's thread."""
        self.follower.start()
        return self

    def loaded(self) -> bool:
        """Read to the ends of the topic at start."""
        return self.follower.loaded()

    def status(self) -> str:
        """How far the reading is."""
        return self.follower.status()

    def lag(self) -> int | None:
        """Records of the topic not in Redis yet."""
        return self.follower.lag()

    def check(self) -> None:
        """Raise what stopped the follower."""
        self.follower.check()

    def get(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """One HMGET of the keys."""
        return self.store.get(keys)

    def ping(self) -> bool:
        """Its Redis answers."""
        return self.store.ping()

    def close(self) -> None:
        """Stop the follower, then drop the Redis client."""
        self.follower.close()
        self.store.close()


def open_table(settings: Settings, join: JoinPlan) -> MaterializedTable:
    """The table of `join` in the Redis of `settings` (not started)."""
    store = RedisTable(redis_client(settings), settings.state.prefix, join.topic)
    conf = {**settings.kafka.librdkafka_common(), **settings.kafka.extra_for("consumer")}
    return MaterializedTable(TableFollower(conf, join.topic, store.put), store)


def create_topics(settings: Settings, repartition: str | None = None) -> dict[str, int]:
    """Create the input, output, DLQ (late, route) topics where missing, and the repartition
    topic of `group_by` (its partitions: RILL_REPARTITION_PARTITIONS, else the input's).

    Returns:
        The partition counts of the input topic and of the repartition topic (absent
        without one), as the broker has them.
    """
    s = settings
    common = s.kafka.librdkafka_common()
    partitions = partition_count(common, s.topics.input) or DEFAULT_PARTITIONS
    topics = [s.topics.input, s.topics.output, s.topics.dlq, *s.routing.allowed]
    if s.topics.late:
        topics.append(s.topics.late)
    ensure_topics(common, topics, partitions)
    # The count the broker has: a topic created a moment ago (by rill, or by whoever made
    # the input just before) can be missing from the first answer above.
    partitions = settled_count(common, s.topics.input)
    if repartition is None:
        return {s.topics.input: partitions}
    wanted = s.repartition.partitions or partitions
    config = {"cleanup.policy": "delete", "retention.ms": str(s.repartition.retention_ms)}
    ensure_topics(common, [repartition], wanted, config=config)
    found = settled_count(common, repartition)
    if found != wanted:
        # Every worker partitions by the count the broker has, so the windows stay whole.
        log.warning(
            "the repartition topic exists with another partition count: kept",
            topic=repartition,
            partitions=found,
            configured=wanted,
        )
    return {s.topics.input: partitions, repartition: found}


REAL_EDGES = Edges(open_consumer, open_producer, open_store, create_topics, open_table)
