"""Pure logic of the operator commands: DLQ summaries and replay records."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service.processing import dlq
from service.records import InRecord, OutRecord

REPLAY_HEADER = "rill.replay"
REPLAY_COUNT = "rill.replay.count"


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which DLQ records to replay; None matches anything."""

    stage: str | None = None
    error_class: str | None = None
    source_partition: int | None = None
    min_offset: int | None = None
    max_offset: int | None = None
    message_contains: str | None = None

    def matches(self, record: InRecord) -> bool:
        """Does this DLQ record match every given criterion?"""
        r = dlq.reason_of(record.headers)
        offset = int(r.get(dlq.SOURCE_OFFSET, "-1"))
        checks = [
            self.stage is None or r.get(dlq.ERROR_STAGE) == self.stage,
            self.error_class is None or r.get(dlq.ERROR_CLASS) == self.error_class,
            self.source_partition is None
            or r.get(dlq.SOURCE_PARTITION) == str(self.source_partition),
            self.min_offset is None or offset >= self.min_offset,
            self.max_offset is None or offset <= self.max_offset,
            self.message_contains is None or self.message_contains in r.get(dlq.ERROR_MESSAGE, ""),
        ]
        return all(checks)


def summarize(records: Iterable[InRecord], samples: int = 2) -> list[dict[str, Any]]:
    """DLQ records grouped by (stage, error class): counts, sources and sample reasons."""
    counts: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[str]] = {}
    sources: dict[tuple[str, str], set[str]] = {}
    for rec in records:
        r = dlq.reason_of(rec.headers)
        group = (r.get(dlq.ERROR_STAGE, "?"), r.get(dlq.ERROR_CLASS, "?"))
        counts[group] += 1
        shown = examples.setdefault(group, [])
        if len(shown) < samples:
            shown.append(r.get(dlq.ERROR_MESSAGE, ""))
        sources.setdefault(group, set()).add(r.get(dlq.SOURCE_TOPIC, "?"))
    return [
        {
            "stage": stage,
            "error_class": cls,
            "count": n,
            "source_topics": sorted(sources[(stage, cls)]),
            "examples": examples[(stage, cls)],
        }
        for (stage, cls), n in counts.most_common()
    ]


def replay_record(record: InRecord, topic: str, now_ms: int | None = None) -> OutRecord:
    """The record to produce to `topic`: original key and value, reason headers removed,
    a replay header added (and a replay count, so loops are visible)."""
    count = 0
    kept = []
    for k, v in record.headers or []:
        if k == REPLAY_COUNT and v is not None:
            count = int(v.decode() or "0")
        elif not k.startswith(dlq.HEADER_PREFIX):
            kept.append((k, v))
    when = str(now_ms if now_ms is not None else time.time_ns() // 1_000_000)
    kept.append(
        (REPLAY_HEADER, f"{record.topic}:{record.partition}:{record.offset}@{when}".encode())
    )
    kept.append((REPLAY_COUNT, str(count + 1).encode()))
    return OutRecord(topic, record.key, record.value, kept)
