"""Which partition a producer would have written a key to: pure hash functions.

A windowed pipeline computes each window in the state of one input partition, so every
record of a window key must come from the same partition ("co-partitioned"). rill checks
it per keyed item against the two partitioners producers use by default:

- the Java client's (and librdkafka's `murmur2_random`): `murmur2(key) & 0x7fffffff % n`
  (Kafka's `Utils.toPositive(Utils.murmur2(bytes)) % numPartitions`);
- librdkafka's default, `consistent_random` (confluent-kafka-python, Go, .NET ...):
  `crc32(key) % n`, the CRC being zlib's.

A key either hashes to counts as co-partitioned. The key bytes are the window key's
UTF-8 text, the bytes rill writes as the window result's key (`batch.encode_key`): a
producer keyed its records by the same text the window groups by.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from service.records import Keyed

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF
# Distinct window keys remembered with their partitions (the cache is dropped when full).
CACHE_KEYS = 100_000


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data`, as the Java client computes it (a signed 32-bit int)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    end = length - length % 4
    for i in range(0, end, 4):
        k = (data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24) * _M & _MASK
        k = (k ^ k >> 24) * _M & _MASK
        h = (h * _M & _MASK) ^ k
    tail = length % 4
    if tail == 3:
        h ^= data[end + 2] << 16
    if tail >= 2:
        h ^= data[end + 1] << 8
    if tail >= 1:
        h ^= data[end]
        h = h * _M & _MASK
    h ^= h >> 13
    h = h * _M & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner picks for a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def librdkafka_partition(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default (`consistent_random`) picks for a keyed record."""
    return zlib.crc32(key) % partitions


@dataclass(frozen=True, slots=True)
class Misplaced:
    """A keyed item from a partition its window key does not hash to (the first of a batch).

    Attributes:
        key: the window key.
        partition: the partition it came from.
        java / librdkafka: the partitions the two default partitioners would pick.
    """

    key: str
    partition: int
    java: int
    librdkafka: int


@dataclass(slots=True)
class Copartitioning:
    """Checks keyed items against the partition they came from, for one input topic.

    Each distinct window key is hashed once: its two partitions are remembered (up to
    `CACHE_KEYS` keys, then the memory starts again), so an item costs a dict lookup.

    Args:
        partitions: the input topic's partition count.
    """

    partitions: int
    _seen: dict[str, tuple[int, int]] = field(default_factory=dict)

    def expected(self, key: str) -> tuple[int, int]:
        """The (java, librdkafka) partitions of a window key."""
        found = self._seen.get(key)
        if found is None:
            data = key.encode()
            found = (java_partition(data, self.partitions), zlib.crc32(data) % self.partitions)
            if len(self._seen) >= CACHE_KEYS:
                self._seen.clear()
            self._seen[key] = found
        return found

    def misplaced(self, keyed: Sequence[Keyed]) -> tuple[int, Misplaced | None]:
        """How many items came from a partition their key hashes to under neither
        partitioner, and the first of them (None when there is none)."""
        seen, expected = self._seen, self.expected
        count = 0
        first: Misplaced | None = None
        for item in keyed:
            key = item.key
            pair = seen.get(key)
            if pair is None:
                pair = expected(key)
            p = item.record.partition
            if p not in pair:
                count += 1
                if first is None:
                    first = Misplaced(key, p, pair[0], pair[1])
        return count, first
