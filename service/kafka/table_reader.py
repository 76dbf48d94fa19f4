"""Follow a table's topic: every partition, assigned (no group), from the beginning.

Every worker reads the whole table into Redis (the writes are idempotent: N workers
agree, `state.table_store`). `loaded()` turns true once every partition was read and
written up to the high watermark it had when reading began; the worker is not ready
and does not consume its input before that. Afterwards the follower goes on reading
the table's new records for as long as the worker runs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from service.errors import ConfigError, FatalError, RillError, TransientError
from service.kafka.errors import classify, from_exception
from service.kafka.messages import to_in_record
from service.kafka.reader import watermarks
from service.records import InRecord
from service.retry import Backoff

log = structlog.get_logger("rill.table")
BATCH = 500
# How often the table's lag is taken from the client's cached ends.
LAG_EVERY_S = 1.0


class TableFollower:
    """One table topic read in a thread of its own, each batch handed to `write`.

    Args:
        conf: librdkafka connection settings.
        topic: the table's topic (it must exist).
        write: writes a batch of the table's records (`RedisTable.put`); a
            `TransientError` is retried with backoff, the same records, until it passes.
        backoff: the retry's backoff.
    """

    def __init__(
        self,
        conf: dict[str, Any],
        topic: str,
        write: Callable[[list[InRecord]], object],
        backoff: Backoff | None = None,
    ) -> None:
        self.topic = topic
        self._conf = {
            **conf,
            "group.id": f"rill-table-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }
        self._write = write
        self._backoff = backoff or Backoff(0.1, 5.0)
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._ends: dict[int, int] = {}
        self._positions: dict[int, int] = {}
        self._error: RillError | None = None
        self._lag: int | None = None
        self._lag_at = 0.0
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self.records_read = 0

    def start(self) -> TableFollower:
        """Find the partitions and their ends, assign them from the beginning, follow.

        Raises:
            ConfigError: the topic does not exist.
        """
        consumer = Consumer(self._conf)
        self._consumer = consumer
        try:
            found = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        except KafkaException as exc:
            raise from_exception(exc) from exc
        if found is None or found.error is not None or not found.partitions:
            raise ConfigError(
                f"RILL_TABLE_TOPIC: table topic {self.topic!r} does not exist: create it "
                "(cleanup.policy=compact) or set RILL_TABLE_TOPIC to an existing topic"
            )
        tps = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(found.partitions)]
        for tp in tps:
            low, high = watermarks(consumer, tp)
            if high > low:
                self._ends[tp.partition] = high
        consumer.assign(tps)
        if not self._ends:
            self._loaded.set()
        self._thread = threading.Thread(target=self._run, name="rill-table", daemon=True)
        self._thread.start()
        log.info("reading table", topic=self.topic, partitions=len(tps), ends=self._ends)
        return self

    def loaded(self) -> bool:
        """Every partition read and written up to its end at start."""
        return self._loaded.is_set()

    def status(self) -> str:
        """What /readyz says while loading."""
        done = sum(min(self._positions.get(p, 0), end) for p, end in self._ends.items())
        total = sum(self._ends.values())
        return f"table {self.topic!r} loading: {done} of {total} offsets read"

    def lag(self) -> int | None:
        """Records of the table's topic not written to Redis yet (None: not known yet),
        from the ends the client last saw (about once a second, no request of its own)."""
        return self._lag

    def check(self) -> None:
        """Raise what stopped the follower, if something did."""
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop following and close the client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._consumer is not None:
            self._consumer.close()

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(num_messages=BATCH, timeout=0.2)
                records = []
                for msg in msgs:
                    err = msg.error()
                    if err is None:
                        records.append(to_in_record(msg))
                    elif err.fatal():
                        raise classify(err)
                    else:
                        log.warning("table read error (librdkafka retries)", error=str(err))
                if records:
                    self._write_until_done(records)
                    self.records_read += len(records)
                if not self._loaded.is_set():
                    self._check_loaded(consumer)
                if time.monotonic() >= self._lag_at:
                    self._lag = self._measure_lag(consumer)
                    self._lag_at = time.monotonic() + LAG_EVERY_S
        except RillError as exc:
            self._error = exc
            log.error("table follower stopped", topic=self.topic, error=str(exc))
        except KafkaException as exc:
            self._error = FatalError(f"table {self.topic!r}: {from_exception(exc)}")
            log.error("table follower stopped", topic=self.topic, error=str(exc))

    def _write_until_done(self, records: list[InRecord]) -> None:
        """Write one batch, again and again while Redis fails transiently (the table's
        position does not move on meanwhile: nothing read is skipped)."""
        while not self._stop.is_set():
            try:
                self._write(records)
            except TransientError as exc:
                delay = self._backoff.next_delay()
                log.warning("table write failed, retrying", error=str(exc), retry_in_s=delay)
                self._stop.wait(delay)
                continue
            self._backoff.reset()
            return

    def _measure_lag(self, consumer: Consumer) -> int | None:
        total = 0
        for tp in consumer.position(consumer.assignment()):
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                return None  # no fetch answered yet
            position = tp.offset if tp.offset >= 0 else low
            total += max(0, high - position)
        return total

    def _check_loaded(self, consumer: Consumer) -> None:
        assigned = [TopicPartition(self.topic, p) for p in self._ends]
        for tp in consumer.position(assigned):
            if tp.offset >= 0:
                self._positions[tp.partition] = tp.offset
        if all(self._positions.get(p, -1) >= end for p, end in self._ends.items()):
            self._loaded.set()
            log.info("table loaded", topic=self.topic, records=self.records_read)
