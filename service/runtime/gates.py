"""Which of a polled batch's records go on now, and which go back to the broker to wait.

A record that waits is never processed, delivered or committed before its turn: its
partition is rewound to it and paused, and it is fetched again when the wait is over.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import structlog

from service.records import TP, InRecord
from service.runtime.ports import Consumer
from service.serde.schema_cache import split_waiting

log = structlog.get_logger("rill.worker")


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


def drop_applied(records: list[InRecord], applied: Mapping[TP, int]) -> list[InRecord]:
    """The records above their partition's applied offset (the others were handled)."""
    if not applied or all(r.offset > applied.get(r.topic_partition(), -1) for r in records):
        return records
    return [r for r in records if r.offset > applied.get(r.topic_partition(), -1)]


def hold_unresolved(
    records: list[InRecord], waiting_ids: Collection[int], consumer: Consumer
) -> tuple[list[InRecord], list[TP]]:
    """Records whose writer schema the registry does not give yet wait in Kafka.

    A partition with a record of a pending id is rewound to it and paused; other
    partitions (and records before it) go on.

    Returns:
        (the records that go on, the partitions that wait).
    """
    if not waiting_ids:
        return records, []
    ready, held = split_waiting(records, set(waiting_ids))
    consumer.rewind(held)
    tps = sorted({r.topic_partition() for r in held})
    consumer.pause(tps)
    log.warning(
        "records wait for the schema registry", schema_ids=sorted(waiting_ids), partitions=tps
    )
    return ready, tps
