"""The group consumer: batches of plain `InRecord`s in, stored offsets out."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from service.errors import ConfigError, DeliveryError, RillError
from service.kafka.logs import logged
from service.kafka.messages import to_in_record
from service.kafka.progress import Progress, partitions_of, progress_of
from service.records import TP, InRecord

log = structlog.get_logger("rill.consumer")

PartitionsCallback = Callable[[list[tuple[str, int]]], None]


class GroupConsumer:
    """A cooperative-sticky group member that hands out batches of plain records.

    Args:
        conf: librdkafka consumer configuration.
        topics: topics to subscribe to.
        on_assign / on_revoke: called with the (topic, partition) pairs that change.
    """

    def __init__(
        self,
        conf: dict[str, Any],
        topics: list[str],
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._conf = conf
        self._topics = topics
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_stats = on_stats
        self._consumer: Consumer | None = None
        # librdkafka's default isolation level is read_committed too.
        self._read_committed = conf.get("isolation.level", "read_committed") == "read_committed"
        self._partition_stats: dict[TP, Mapping[str, Any]] = {}

    def start(self) -> GroupConsumer:
        """Create the client and subscribe."""
        conf = logged(self._conf, "consumer")
        if self._on_stats is not None:
            conf["stats_cb"] = self._stats
        try:
            self._consumer = Consumer(conf)
        except KafkaException as exc:
            raise ConfigError(
                f"Kafka consumer settings refused: {exc.args[0].str()} "
                "(check RILL_KAFKA_EXTRA and the security settings)"
            ) from exc
        self._consumer.subscribe(
            self._topics,
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._revoked,
        )
        return self

    @property
    def client(self) -> Consumer:
        """The underlying client (for the runtime's commit protocol)."""
        if self._consumer is None:
            raise RillError("consumer used before start()")
        return self._consumer

    def _stats(self, text: str) -> None:
        stats = json.loads(text)
        self._partition_stats = partitions_of(stats)
        if self._on_stats is not None:
            self._on_stats(stats)

    def _forget_stats(self, pairs: list[TP]) -> None:
        # Statistics from before an assignment change would tell an old committed offset.
        for pair in pairs:
            self._partition_stats.pop(pair, None)

    def progress(self, pairs: list[TP]) -> dict[TP, Progress]:
        """Position, end and lag of each partition now (see `kafka.progress`).

        The position and the high watermark are the client's now (no request to the
        broker); the last statistics add the last stable offset and, before the first
        record, the committed offset the fetch starts from.
        """
        if not pairs:
            return {}
        client = self.client
        try:
            positions = client.position([TopicPartition(t, p) for t, p in pairs])
        except KafkaException as exc:
            log.warning("consumer position unknown", error=str(exc))
            return {}
        out: dict[TP, Progress] = {}
        for tp in positions:
            pair = (tp.topic, tp.partition)
            try:
                marks = client.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                marks = None
            high = marks[1] if marks else -1
            position = tp.offset if tp.error is None else -1
            stats = self._partition_stats.get(pair)
            out[pair] = progress_of(position, high, stats, self._read_committed)
        return out

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        pairs = [(tp.topic, tp.partition) for tp in partitions]
        log.info("partitions assigned", partitions=pairs)
        self._forget_stats(pairs)
        if self._on_assign:
            self._on_assign(pairs)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        pairs = [(tp.topic, tp.partition) for tp in partitions]
        log.info("partitions revoked", partitions=pairs)
        self._forget_stats(pairs)
        # Offsets of finished batches are stored; commit them before the partitions go.
        self.commit(sync=True)
        if self._on_revoke:
            self._on_revoke(pairs)

    def consume(self, max_records: int, timeout_s: float) -> list[InRecord]:
        """Up to `max_records` records; client-level errors are logged, never returned.

        One call into librdkafka: it returns when `max_records` are there or `timeout_s`
        has passed. (Splitting it into a no-wait call and a wait for the first record
        broke the order of a partition's records after a seek: a rewound partition's
        records came back behind later ones.) Low latency comes from a short default
        `RILL_POLL_TIMEOUT_S`; under load a batch fills long before it.
        """
        messages = self.client.consume(num_messages=max_records, timeout=timeout_s)
        records: list[InRecord] = []
        append = records.append
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise RillError(f"fatal consumer error: {err}")
                log.warning("consumer error", error=str(err), code=err.code())
                continue
            append(to_in_record(msg))
        return records

    def store_offsets(
        self,
        next_offsets: dict[tuple[str, int], int],
        metadata: dict[tuple[str, int], str] | None = None,
    ) -> None:
        """Mark offsets as done: the auto-commit, a revoke and close() commit them, each
        with its offset metadata (librdkafka stores it with the offset)."""
        if not next_offsets:
            return
        meta = metadata or {}
        tps = [
            TopicPartition(t, p, o, metadata=meta[(t, p)])
            if (t, p) in meta
            else TopicPartition(t, p, o)
            for (t, p), o in next_offsets.items()
        ]
        try:
            self.client.store_offsets(offsets=tps)
        except KafkaException as exc:
            # A partition revoked meanwhile cannot be stored; its new owner redoes it.
            log.warning("store offsets failed", error=str(exc))

    def commit(self, sync: bool = True) -> None:
        """Commit the stored offsets now."""
        try:
            if sync:
                self.client.commit(asynchronous=False)
            else:
                self.client.commit(asynchronous=True)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed", error=str(exc))

    def group_metadata(self) -> Any:
        """The group generation, for offsets committed in a producer transaction."""
        return self.client.consumer_group_metadata()

    def committed(
        self, pairs: list[tuple[str, int]], timeout_s: float = 10.0
    ) -> dict[tuple[str, int], tuple[int, str]]:
        """The group's committed offsets (-1 where none) and their metadata."""
        try:
            tps = self.client.committed([TopicPartition(t, p) for t, p in pairs], timeout_s)
        except KafkaException as exc:
            raise DeliveryError(f"cannot read committed offsets: {exc}") from exc
        failed = [tp for tp in tps if tp.error is not None]
        if failed:
            # Not "nothing committed": a claim would re-emit what was delivered.
            raise DeliveryError(
                f"cannot read the committed offset of {failed[0].topic}"
                f"[{failed[0].partition}]: {failed[0].error}"
            )
        return {
            (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else -1, tp.metadata or "")
            for tp in tps
        }

    def rewind(self, records: list[InRecord]) -> None:
        """Seek each partition back to the first of `records`, to fetch them again."""
        first: dict[tuple[str, int], int] = {}
        for r in records:
            first.setdefault((r.topic, r.partition), r.offset)
        for (topic, partition), offset in first.items():
            self.client.seek(TopicPartition(topic, partition, offset))

    def pause(self, pairs: list[tuple[str, int]]) -> None:
        """Stop fetching these partitions while staying in the group."""
        self.client.pause([TopicPartition(t, p) for t, p in pairs])

    def resume(self, pairs: list[tuple[str, int]]) -> None:
        """Fetch these partitions again."""
        self.client.resume([TopicPartition(t, p) for t, p in pairs])

    def close(self) -> None:
        """Commit stored offsets and leave the group."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
