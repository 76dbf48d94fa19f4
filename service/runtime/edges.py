"""The Kafka seams the runtime drives, as Protocols.

`kafka.consumer.GroupConsumer` and `kafka.producer.BatchProducer` are the real ones; unit
tests of the runtime use an in-memory twin (tests/support/memory_kafka.py). Integration
tests use the real broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.config import Settings
from service.kafka.producer import Failure, OffsetMeta
from service.kafka.progress import Progress
from service.processing.join import JoinPlan
from service.processing.windows import WindowPlan
from service.records import TP, DlqEntry, InRecord, OutRecord
from service.state.store import WindowStore


class Consumer(Protocol):
    """A group member handing out batches of plain records."""

    def start(self) -> object:
        """Join the group (assignments arrive through the callbacks given at creation)."""
        ...

    def close(self) -> None:
        """Commit what is stored and leave the group."""
        ...

    def consume(self, max_records: int, timeout_s: float) -> list[InRecord]:
        """Up to `max_records` records."""
        ...

    def store_offsets(
        self, next_offsets: dict[TP, int], metadata: dict[TP, str] | None = None
    ) -> None:
        """Mark offsets as done (committed by the auto-commit, a revoke or close), each
        with its offset metadata (none where not given)."""
        ...

    def committed(self, pairs: list[TP], timeout_s: float = 10.0) -> dict[TP, tuple[int, str]]:
        """The group's committed offsets (-1 where none) and their metadata."""
        ...

    def group_metadata(self) -> Any:
        """The group generation, for offsets committed in a transaction."""
        ...

    def rewind(self, records: list[InRecord]) -> None:
        """Seek each partition back to the first of `records`."""
        ...

    def pause(self, pairs: list[TP]) -> None:
        """Stop fetching these partitions while staying in the group."""
        ...

    def resume(self, pairs: list[TP]) -> None:
        """Fetch these partitions again."""
        ...

    def progress(self, pairs: list[TP]) -> dict[TP, Progress]:
        """Position, end and lag of each partition now (absent where not assigned)."""
        ...


class Producer(Protocol):
    """Batches of records and DLQ entries out; idempotent or transactional."""

    def close(self) -> None:
        """Deliver what is queued, then drop the client."""
        ...

    def send(self, records: Iterable[OutRecord]) -> None:
        """Queue records."""
        ...

    def send_dlq(self, entries: Iterable[DlqEntry]) -> None:
        """Queue DLQ entries (rendered with their reason headers)."""
        ...

    def flush(self, timeout_s: float) -> list[Failure]:
        """Wait for every queued delivery; the records Kafka did not take."""
        ...

    def transaction(
        self,
        records: Iterable[OutRecord],
        dlq: Iterable[DlqEntry],
        offsets: dict[TP, OffsetMeta],
        group_metadata: Any,
        timeout_s: float,
    ) -> None:
        """Records, DLQ entries and input offsets in one transaction."""
        ...

    def init_transactions(self, timeout_s: float) -> None:
        """Fence older producers of this transactional id."""
        ...

    def settle(self, timeout_s: float) -> None:
        """Replace a transactional client that failed; then no transaction of it is open."""
        ...


class Table(Protocol):
    """A table materialized in Redis from its topic, followed while the worker runs
    (`runtime.real_edges.MaterializedTable`; an in-memory twin in tests/support)."""

    def start(self) -> object:
        """Begin reading the table's topic from the beginning."""
        ...

    def loaded(self) -> bool:
        """Read and written up to the ends the topic had at start."""
        ...

    def status(self) -> str:
        """How far the reading is (for /readyz)."""
        ...

    def lag(self) -> int | None:
        """Records of the table's topic not in Redis yet (None: not known yet)."""
        ...

    def check(self) -> None:
        """Raise what stopped the reading, if something did."""
        ...

    def get(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The rows of some keys in one round trip; keys without a row are absent."""
        ...

    def ping(self) -> bool:
        """Its Redis answers."""
        ...

    def close(self) -> None:
        """Stop reading, drop the clients."""
        ...


PartitionsCallback = Callable[[list[TP]], None]
StatsCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Edges:
    """How a worker opens its clients: the real ones by default, in-memory twins in unit tests.

    Attributes:
        consumer: (settings, topics, on_assign, on_revoke, on_stats) -> an unstarted group
            consumer of those topics (the input, and the repartition topic of group_by).
        producer: (settings, gapless) -> a started producer; gapless: an error that would
            leave a gap in a partition stops it (group_by at least once).
        store: (settings, window plan or None) -> a connected window store.
        create_topics: (settings, repartition topic or None) -> the partition counts of the
            input topic and of the repartition topic, as the broker has them (a topic not
            known is absent); makes sure the topics exist.
        table: (settings, join) -> an unstarted table (None: pipelines with a table
            join cannot run on these edges).
    """

    consumer: Callable[
        [Settings, list[str], PartitionsCallback, PartitionsCallback, StatsCallback], Consumer
    ]
    producer: Callable[[Settings, bool], Producer]
    store: Callable[[Settings, WindowPlan | None], WindowStore]
    create_topics: Callable[[Settings, str | None], dict[str, int]]
    table: Callable[[Settings, JoinPlan], Table] | None = None
