"""Which of a polled batch's records go on now, and which go back to the broker to wait.

A record that waits is never processed, delivered or committed before its turn: its
partition is rewound to it and paused, and it is fetched again when the wait is over.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

import structlog

from service.processing.aggregator import Owned
from service.records import TP, InRecord
from service.runtime.edges import Consumer
from service.runtime.partitions import Partitions, State
from service.serde.schema_cache import split_waiting

log = structlog.get_logger("rill.gates")


class CounterChild(Protocol):
    """A labelled counter."""

    def inc(self, amount: float = 1) -> None:
        """Add `amount`."""
        ...


def hold(records: list[InRecord], waiting: Collection[TP], consumer: Consumer) -> list[InRecord]:
    """The records of partitions not in `waiting`; the others are rewound and paused."""
    if not waiting:
        return records
    held = [r for r in records if r.topic_partition() in waiting]
    if not held:
        return records
    consumer.rewind(held)
    consumer.pause(sorted({r.topic_partition() for r in held}))
    return [r for r in records if r.topic_partition() not in waiting]


def drop_replayed(
    records: list[InRecord], owned: Mapping[TP, Owned], replayed: CounterChild
) -> list[InRecord]:
    """The records above their partition's applied offset; the others are counted.

    In exactly-once the outbox holds every output of an applied record, DLQ entries
    included: such records were handled, and a new owner's fetch may start below the
    offset its reconcile committed.
    """
    applied = {tp: o.applied for tp, o in owned.items() if o.applied >= 0}
    if not applied or all(r.offset > applied.get(r.topic_partition(), -1) for r in records):
        return records
    kept = [r for r in records if r.offset > applied.get(r.topic_partition(), -1)]
    replayed.inc(len(records) - len(kept))
    return kept


def hold_unresolved(
    records: list[InRecord], resolver: Any, consumer: Consumer, partitions: Partitions
) -> list[InRecord]:
    """Records whose writer schema the registry does not give yet wait in Kafka.

    `RegistryResolver.prefetch` asks for new ids first; a partition with a record of a
    pending id is rewound to it and paused (`schema`); other partitions (and records
    before it) go on. After RILL_SCHEMA_REGISTRY_WAIT_S such records go to the DLQ.
    """
    if resolver is None or not records:
        return records
    waiting_ids = resolver.prefetch(records)
    if not waiting_ids:
        return records
    ready, held = split_waiting(records, set(waiting_ids))
    consumer.rewind(held)
    tps = sorted({r.topic_partition() for r in held})
    consumer.pause(tps)
    partitions.move(tps, State.SCHEMA)
    log.warning(
        "records wait for the schema registry", schema_ids=sorted(waiting_ids), partitions=tps
    )
    return ready


def release_schema_held(
    resolver: Any, partitions: Partitions, consumer: Consumer, paused: bool
) -> None:
    """Fetch the partitions that wait for the registry again once it may be asked."""
    held = partitions.in_state(State.SCHEMA)
    if held and resolver is not None and resolver.due() and not paused:
        consumer.resume(partitions.move(held, State.ACTIVE))
