"""The chaos input: keyed Avro events with poison and late records, fed in held steps.

`SteppedFeed` stops at each checkpoint until the scenario releases it, so a fault the
scenario injects after a release lands while input is still arriving, however fast or
slow the machine is (the next checkpoint is still ahead).
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import KafkaError, KafkaException, Producer

SCHEMA_PATH = Path(__file__).with_name("event.avsc")
SCHEMA = fastavro.parse_schema(json.loads(SCHEMA_PATH.read_text()))
KEYS = 40
Item = tuple[bytes | None, bytes | None]


def encode(event: dict[str, Any]) -> bytes:
    """One event in the plain Avro binary encoding."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, event)
    return out.getvalue()


def decode(data: bytes | None) -> dict[str, Any] | None:
    """An event, or None when the bytes are not exactly one event."""
    if data is None:
        return None
    buf = io.BytesIO(data)
    try:
        event = fastavro.schemaless_reader(buf, SCHEMA, None)
    except Exception:  # noqa: BLE001 - any failure means: not an event
        return None
    if buf.tell() != len(data) or not isinstance(event, dict):
        return None
    return event


def poison(i: int) -> bytes:
    """Bytes that are not an event: a string length pointing past the end, then junk."""
    data = b"\x7fpoison-" + str(i).encode()
    assert decode(data) is None
    return data


@dataclass(frozen=True)
class Special:
    """An input record the worker must route to the DLQ with a reason, then carry on."""

    name: str
    value: bytes


def specials(now_ms: int) -> list[Special]:
    """Oversize, near-limit, NaN / infinite and far-future event-time records."""
    rng = random.Random(99)
    return [
        # Just under max_record_bytes (1,000,000): undecodable, its DLQ copy with the
        # reason headers is over the producer's message size limit.
        Special("near-limit", rng.randbytes(999_900)),
        # Over max_record_bytes: refused before decoding.
        Special("oversize", rng.randbytes(1_040_000)),
        Special("nan-time", encode({"customer_id": "c-00", "ts": float("nan"), "amount": 1.0})),
        Special("inf-time", encode({"customer_id": "c-01", "ts": float("inf"), "amount": 1.0})),
        Special("-inf-time", encode({"customer_id": "c-02", "ts": float("-inf"), "amount": 1.0})),
        Special(
            "far-future",
            encode(
                {"customer_id": "c-03", "ts": float(now_ms + 10 * 365 * 86_400_000), "amount": 1.0}
            ),
        ),
    ]


def stream(n: int, seed: int, poison_every: int = 499, extra: Sequence[Special] = ()) -> list[Item]:
    """`n` events (times mostly increasing, some out of order, some late) plus poison.

    `extra` records are spread evenly through the stream.
    """
    rng = random.Random(seed)
    items: list[Item] = []
    for i in range(n):
        jitter = rng.choice([0, 0, 0, -rng.randint(1, 90), -rng.randint(150, 400)])
        key = f"c-{rng.randrange(KEYS):02d}"
        event = {
            "customer_id": key,
            "ts": float(10 * i + jitter),
            "amount": rng.randint(1, 1000) / 4,
        }
        items.append((key.encode(), encode(event)))
        if i % poison_every == poison_every - 1:
            items.append((key.encode(), poison(i)))
    for j, special in enumerate(extra):
        at = (j + 1) * len(items) // (len(extra) + 1)
        items.insert(at, (f"c-{j % KEYS:02d}".encode(), special.value))
    return items


class SteppedFeed:
    """Produces `items` from a thread at `rate` per second, holding at each checkpoint."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        items: Sequence[Item],
        rate: float,
        checkpoints: Sequence[int],
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._items = items
        self._rate = rate
        self._checkpoints = sorted(checkpoints)
        self._held = [threading.Event() for _ in self._checkpoints]
        self._release = [threading.Event() for _ in self._checkpoints]
        self.produced = 0
        self.failed = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _paced(self) -> Iterator[Item]:
        started = time.monotonic()
        step = 0
        for i, item in enumerate(self._items):
            if step < len(self._checkpoints) and i == self._checkpoints[step]:
                self._held[step].set()
                self._release[step].wait(900)
                started = time.monotonic() - i / self._rate
                step += 1
            if i % 250 == 0:
                time.sleep(max(0.0, started + i / self._rate - time.monotonic()))
            self.produced = i
            yield item

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def _run(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "linger.ms": 20,
                "enable.idempotence": True,
                "message.max.bytes": 2_000_000,
                "message.timeout.ms": 600_000,
            }
        )
        try:
            for key, value in self._paced():
                while True:
                    try:
                        producer.produce(self._topic, value, key, on_delivery=self._delivered)
                        break
                    except BufferError:
                        producer.poll(0.05)
                    except KafkaException as exc:
                        # A broker just restarted may not know the topic for a moment.
                        if exc.args[0].code() != KafkaError._UNKNOWN_TOPIC:
                            raise
                        producer.poll(0.5)
                producer.poll(0)
            if producer.flush(600) != 0 or self.failed:
                raise RuntimeError(f"the feed could not deliver {self.failed} records")
        except BaseException as exc:  # noqa: BLE001 - reported to the scenario
            self.error = exc

    def start(self) -> None:
        """Begin producing."""
        self._thread.start()

    def held(self, step: int) -> bool:
        """Whether the feed has reached checkpoint `step` (and waits there)."""
        return self._held[step].is_set()

    def release(self, step: int) -> None:
        """Let the feed go on past checkpoint `step`."""
        self._release[step].set()

    def finished(self) -> bool:
        """Whether every record was produced and delivered."""
        return not self._thread.is_alive()

    def release_all(self) -> None:
        """Let the feed run to its end."""
        for event in self._release:
            event.set()

    def join(self) -> None:
        """Release every checkpoint and wait for delivery."""
        self.release_all()
        self._thread.join()
        if self.error is not None:
            raise self.error
