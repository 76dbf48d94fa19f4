"""Redis key layout: every key of one input partition shares one Cluster hash tag."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TAG_UNSAFE = re.compile(r"[{}]")


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """The keys of one input partition's state.

    Attributes:
        meta: hash with epoch, applied offset, max event time, watermark, outbox seq.
        index: sorted set of window ids by the time they close.
        state: hash of window id -> aggregate components.
        outbox: hash of outbox entries not yet acknowledged.
        key_prefix: prefix of the per-key sorted sets (sessions, sliding buckets).
    """

    meta: str
    index: str
    state: str
    outbox: str
    key_prefix: str

    def all(self) -> list[str]:
        """The fixed keys, in the order the apply script takes them."""
        return [self.meta, self.index, self.state, self.outbox]

    def of_key(self, key: str) -> str:
        """The per-key sorted set of `key` (same hash tag)."""
        return f"{self.key_prefix}k:{key}"


def partition_keys(prefix: str, group: str, topic: str, partition: int) -> PartitionKeys:
    """Keys of (group, topic, partition) under `prefix`, all in one hash slot.

    The tag is `{group:topic:partition}`; braces in names are replaced so the tag
    always ends where it should.
    """
    tag = _TAG_UNSAFE.sub("_", f"{group}:{topic}:{partition}")
    base = f"{_TAG_UNSAFE.sub('_', prefix)}:{{{tag}}}:"
    return PartitionKeys(f"{base}meta", f"{base}idx", f"{base}state", f"{base}outbox", base)
