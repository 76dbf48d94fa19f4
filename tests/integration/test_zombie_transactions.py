"""Zombie transactions on the real broker: a new owner never reads an offset that an old
owner's open transaction is about to move.

A worker's transactional id is new per process, so `init_transactions` of a new worker
fences nothing of an old one: the old owner's transaction stays open until it commits,
aborts, or the coordinator aborts it after `transaction.timeout.ms`. What keeps a new
owner's `reconcile` from reading the committed offset from *before* that transaction is
KIP-447's require-stable OffsetFetch: librdkafka sets RequireStable on `committed()` when
`isolation.level=read_committed` (what `consumer_config` sets), the group coordinator
answers UNSTABLE_OFFSET_COMMIT for a partition with pending transactional offsets, and
librdkafka sends the request again until the transaction is decided.

Each test opens a transaction of an "old owner" (a group member and a transactional
producer of its own id, built by `consumer_config` / `producer_config` for exactly-once)
that moves the group's offset from A to B, and lets a "new owner" (another member of the
group) call `GroupConsumer.committed` meanwhile. The new owner's librdkafka debug log
(stderr) says when the broker answered its read with UNSTABLE_OFFSET_COMMIT: the read
was in flight while the transaction was open. Then the outcome is decided and the read
must return what the outcome says, after the decision.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaException, TopicPartition

from service.config import Settings
from service.errors import DeliveryError, RillError
from service.kafka.clients import consumer_config, producer_config
from service.kafka.consumer import GroupConsumer
from service.kafka.producer import BatchProducer
from service.records import TP, OutRecord
from service.runtime.ledger import seq_meta
from tests.integration.conftest import Endpoints
from tests.integration.helpers import create_topics, produce, read_once

pytestmark = pytest.mark.integration

# The offset (with the outbox sequence it delivered) committed before the open
# transaction, and the one the open transaction moves it to.
A = (3, seq_meta(1))
B = (7, seq_meta(2))
# Bounds of the waits below: generous, each failing with a message when passed.
WAIT_S = 60.0
# The zombie's transaction timeout (the coordinator aborts it after this).
ZOMBIE_TIMEOUT_MS = 10_000
# The read must return after the decision was *issued*. The coordinator answers EndTxn
# before it writes the markers that make the new offset readable, so the read nearly
# always returns after the call too, but this thread noting "commit returned" races the
# reader's next retry: that order is recorded for the failure message, not asserted.


class Timeline:
    """Named events in the order they happened, from any thread."""

    def __init__(self) -> None:
        self._events: list[str] = []
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self._events.append(name)

    def index(self, name: str) -> int:
        with self._lock:
            return self._events.index(name)

    def __str__(self) -> str:
        with self._lock:
            return " -> ".join(self._events)


class PendingRead:
    """The new owner's `committed()` for one partition, in a thread of its own."""

    def __init__(
        self, consumer: GroupConsumer, tp: TP, timeline: Timeline, timeout_s: float
    ) -> None:
        self.result: tuple[int, str] | None = None
        self.error: str | None = None
        self._consumer = consumer
        self._tp = tp
        self._timeline = timeline
        self._timeout_s = timeout_s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._consumer.committed([self._tp], self._timeout_s)[self._tp]
        except RillError as exc:
            self.error = str(exc)
        self._timeline.add("read returned")

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert self.done(), f"the new owner's committed() still waits after {timeout_s} s"

    def __str__(self) -> str:
        if not self.done():
            return "still waiting"
        return f"returned {self.result}" if self.error is None else f"failed: {self.error}"


@dataclass
class Scene:
    """An old owner with a transaction open that moves `tp` from A to B, and a new owner."""

    settings: Settings
    tp: TP
    output_topic: str
    old_producer: BatchProducer
    new_owner: GroupConsumer
    new_owner_name: str
    timeline: Timeline


def _member(consumer: GroupConsumer, assigned: list[TP], tp: TP) -> None:
    """Poll until `tp` is assigned to `consumer` (a group member with a generation)."""
    deadline = time.monotonic() + WAIT_S
    while tp not in assigned:
        assert time.monotonic() < deadline, f"{tp} not assigned to the old owner in {WAIT_S} s"
        consumer.consume(100, 0.2)


@contextmanager
def _started(consumer: GroupConsumer) -> Iterator[GroupConsumer]:
    """A started consumer, closed at exit."""
    consumer.start()
    try:
        yield consumer
    finally:
        consumer.close()


@contextmanager
def _open_transaction(
    endpoints: Endpoints, unique: str, transaction_timeout_ms: int = 60_000
) -> Iterator[Scene]:
    """The old owner commits A, then opens a transaction that moves the offset to B."""
    input_topic, output_topic = f"in-{unique}", f"out-{unique}"
    create_topics(endpoints.bootstrap, [input_topic, output_topic], partitions=1)
    produce(endpoints.bootstrap, input_topic, ((b"k", b"v") for _ in range(10)))
    tp = (input_topic, 0)
    settings = Settings(
        bootstrap_servers=endpoints.bootstrap,
        group_id=f"g-{unique}",
        input_topic=input_topic,
        output_topic=output_topic,
        processing_guarantee="exactly_once",
        transaction_timeout_ms=transaction_timeout_ms,
    )
    with ExitStack() as stack:
        assigned: list[TP] = []
        old_consumer = GroupConsumer(
            consumer_config(settings), [input_topic], on_assign=assigned.extend
        ).start()
        stack.callback(old_consumer.close)
        _member(old_consumer, assigned, tp)
        old_producer = BatchProducer(producer_config(settings), "test").start()
        stack.callback(old_producer.close)
        old_producer.init_transactions(WAIT_S)
        old_producer.transaction(
            [OutRecord(output_topic, b"k", b"settled")],
            [],
            {tp: A},
            old_consumer.group_metadata(),
            WAIT_S,
        )
        # ExactlyOnce.deliver's transaction, stopped before its commit.
        client = old_producer.client
        client.begin_transaction()
        old_producer.send([OutRecord(output_topic, b"k", b"in-flight")])
        client.send_offsets_to_transaction(
            [TopicPartition(*tp, B[0], B[1])], old_consumer.group_metadata(), WAIT_S
        )
        # The worker's consumer settings; debug and client.id only name its log lines, which
        # go raw to stderr at once (through a logger they wait for a poll).
        name = f"new-owner-{unique}"
        conf = {**consumer_config(settings), "client.id": name, "debug": "topic", "logger": None}
        new_owner = GroupConsumer(conf, [input_topic]).start()
        stack.callback(new_owner.close)
        yield Scene(settings, tp, output_topic, old_producer, new_owner, name, Timeline())


def _await_unstable(capfd: pytest.CaptureFixture[str], scene: Scene, read: PendingRead) -> None:
    """Wait until the broker answered the new owner's read with UNSTABLE_OFFSET_COMMIT.

    Fails when the read returned first: it read an offset while the transaction was open.
    """
    topic, partition = scene.tp
    unstable = re.compile(
        rf"\|{re.escape(scene.new_owner_name)}#consumer-\d+\|.*OffsetFetchResponse: "
        rf"{re.escape(topic)} \[{partition}\] offset -1\b.*UNSTABLE_OFFSET_COMMIT"
    )
    log = ""
    deadline = time.monotonic() + WAIT_S
    while not unstable.search(log):
        assert not read.done(), (
            f"the new owner's committed() {read} while the old owner's transaction was open"
        )
        assert time.monotonic() < deadline, (
            f"no UNSTABLE_OFFSET_COMMIT answer to the new owner in {WAIT_S} s "
            f"(its read: {read}); its log:\n{log[-3000:]}"
        )
        time.sleep(0.05)
        log += capfd.readouterr().err
    assert not read.done(), f"the new owner's committed() {read} while the transaction was open"
    scene.timeline.add("broker answered unstable")


def _outputs(endpoints: Endpoints, topic: str) -> list[bytes]:
    """The output values a read_committed reader sees."""
    return [r.value or b"" for r in read_once(endpoints.bootstrap, topic)]


@pytest.mark.parametrize(
    ("ending", "offset", "outputs"),
    [("commit", B, [b"settled", b"in-flight"]), ("abort", A, [b"settled"])],
)
def test_a_new_owner_reads_the_offset_an_open_transaction_leaves_after_it_ends(
    endpoints: Endpoints,
    unique: str,
    capfd: pytest.CaptureFixture[str],
    ending: str,
    offset: tuple[int, str],
    outputs: list[bytes],
) -> None:
    """While an old owner's transaction that moves the offset A -> B is open, a new owner's
    committed() waits (require-stable); it returns B after the old owner's commit, A after
    its abort."""
    with _open_transaction(endpoints, unique) as scene:
        read = PendingRead(scene.new_owner, scene.tp, scene.timeline, WAIT_S)
        _await_unstable(capfd, scene, read)
        scene.timeline.add(f"{ending} issued")
        client = scene.old_producer.client
        end = client.commit_transaction if ending == "commit" else client.abort_transaction
        end(WAIT_S)
        scene.timeline.add(f"{ending} returned")
        read.wait(WAIT_S)
        order = scene.timeline
        assert read.result == offset, f"after the {ending} the new owner's committed() {read}"
        assert order.index("read returned") > order.index(f"{ending} issued"), str(order)
    assert _outputs(endpoints, scene.output_topic) == outputs


def test_a_zombie_transaction_never_finished_is_read_as_aborted_after_its_timeout(
    endpoints: Endpoints, unique: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """An old owner that never finishes its transaction (a zombie): a new owner's committed()
    waits until the coordinator aborts it at transaction.timeout.ms and returns A, never B;
    a read that gives up first raises DeliveryError (reconcile retries it), never A; the
    zombie's later commit is refused."""
    with _open_transaction(endpoints, unique, ZOMBIE_TIMEOUT_MS) as scene:
        read = PendingRead(scene.new_owner, scene.tp, scene.timeline, WAIT_S)
        _await_unstable(capfd, scene, read)
        # What a reconcile with a timeout shorter than the zombie's transaction gets. (From
        # a client of its own: a committed() on a client where another one waits waited
        # for that one, past its own timeout.)
        with _started(GroupConsumer(consumer_config(scene.settings), [scene.tp[0]])) as other:
            try:
                early = other.committed([scene.tp], 1.0)
            except DeliveryError:
                scene.timeline.add("short read gave up")
            else:
                pytest.fail(f"a short committed() returned {early} while the zombie was open")
        read.wait(WAIT_S)
        assert read.result == A, f"after the zombie's timeout the new owner's committed() {read}"
        scene.timeline.add("zombie commits")
        with pytest.raises(KafkaException) as refused:
            scene.old_producer.client.commit_transaction(WAIT_S)
        scene.timeline.add(f"zombie refused: {refused.value.args[0].name()}")
        assert scene.new_owner.committed([scene.tp], WAIT_S)[scene.tp] == A
        order = scene.timeline
        assert order.index("short read gave up") < order.index("read returned"), str(order)
    assert _outputs(endpoints, scene.output_topic) == [b"settled"]
