"""Shared helpers of the integration tests: topics, producing, reading, worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from service.errors import RillError
from service.kafka.admin import ensure_topics
from service.kafka.reader import read_topic
from service.records import InRecord
from service.serde import AvroSerde
from service.serde.wire import ConfluentWire

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "service" / "schemas"


def avro_serde(name: str, schema_id: int) -> AvroSerde:
    """A serde for one of the built-in schemas in the Confluent wire format."""
    return AvroSerde(json.loads((SCHEMAS / name).read_text()), ConfluentWire(schema_id))


def create_topics(bootstrap: str, topics: Iterable[str], partitions: int = 4) -> None:
    """Create topics (no-op for existing ones)."""
    ensure_topics({"bootstrap.servers": bootstrap}, list(topics), partitions)


def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Produce (key, value) pairs and wait for delivery; returns how many."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True}
    )
    count = 0
    for key, value in items:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    assert producer.flush(60) == 0
    return count


class HeldFeed:
    """Produces records from a thread at a steady rate and holds back the second half.

    A test stops a worker while the feed is held, then releases it: the stop lands
    mid-stream however fast or slow the machine is (pacing alone raced on slow CI).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        items: Sequence[tuple[bytes | None, bytes | None]],
        rate: float,
        hold_at: int,
    ) -> None:
        self._items = items
        self._rate = rate
        self._hold_at = hold_at
        self._release = threading.Event()
        self.held = threading.Event()
        self._thread = threading.Thread(
            target=produce, args=(bootstrap, topic, self._paced()), daemon=True
        )

    def _paced(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        started = time.monotonic()
        for i, item in enumerate(self._items):
            if i == self._hold_at:
                self.held.set()
                self._release.wait(600)
                started = time.monotonic() - i / self._rate
            if i % 500 == 0:
                time.sleep(max(0.0, started + i / self._rate - time.monotonic()))
            yield item

    def start(self) -> None:
        self._thread.start()

    def release(self) -> None:
        self._release.set()

    def finished(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> None:
        self._release.set()
        self._thread.join()


def read_once(bootstrap: str, topic: str) -> list[InRecord]:
    """Every record of a topic now; none when it does not exist yet."""
    try:
        return list(read_topic({"bootstrap.servers": bootstrap}, topic, idle_timeout_s=1.0))
    except RillError:
        return []


def read_all(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 90.0, settle_s: float = 3.0
) -> list[InRecord]:
    """Read a topic until `expected` records are there (then `settle_s` more, to see extras)."""
    deadline = time.monotonic() + timeout_s
    records: list[InRecord] = []
    while time.monotonic() < deadline:
        records = read_once(bootstrap, topic)
        if len(records) >= expected:
            time.sleep(settle_s)
            return read_once(bootstrap, topic) if settle_s else records
        time.sleep(1.0)
    return records


def worker_env(bootstrap: str, redis_url: str, unique: str, **settings: Any) -> dict[str, str]:
    """Environment for a worker process on this test's topics and group."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RILL_")}
    env.update(
        {
            "RILL_BOOTSTRAP_SERVERS": bootstrap,
            "RILL_REDIS_URL": redis_url,
            "RILL_GROUP_ID": f"g-{unique}",
            "RILL_INPUT_TOPIC": f"in-{unique}",
            "RILL_OUTPUT_TOPIC": f"out-{unique}",
            "RILL_DLQ_TOPIC": f"dlq-{unique}",
            "RILL_METRICS_PORT": "0",
            "RILL_SUMMARY_INTERVAL_S": "2",
        }
    )
    env.update({f"RILL_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `python -m service run` as its own process, logging to `log_path`."""
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "service", "run"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_worker(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 30.0
) -> int:
    """Send `sig` and wait for the process; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout_s)


def header(record: InRecord, name: str) -> str | None:
    """One header's value as text."""
    for key, value in record.headers or []:
        if key == name and value is not None:
            return value.decode()
    return None


def emitted_windows(sink: Iterable[Any]) -> tuple[dict[tuple[str, int, int], Any], int]:
    """The window results read from a sink, by (key, start, end), and how many repeated one
    already read; a repeat must carry the same values (asserted here)."""
    emitted: dict[tuple[str, int, int], dict[str, Any]] = {}
    duplicates = 0
    for rec in sink:
        v = json.loads(rec.value or b"")
        window = (v.pop("key"), v.pop("window_start"), v.pop("window_end"))
        if window in emitted:
            duplicates += 1
            assert emitted[window] == v, f"window {window} emitted with two values"
        emitted[window] = v
    return emitted, duplicates
