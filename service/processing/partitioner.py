"""Kafka's default partitioner of keyed records, as the Java client computes it.

librdkafka calls it `murmur2_random` (random for a null key); the Java client's
`Utils.murmur2` and `Utils.toPositive` give the same partition for the same key bytes, so
rill's repartition topic is partitioned exactly like a Kafka Streams repartition topic.
"""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of `data`, as a signed int like Java's `Utils.murmur2`."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length % 4
    if extra >= 3:
        h ^= data[whole + 2] << 16
    if extra >= 2:
        h ^= data[whole + 1] << 8
    if extra >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a keyed record among `partitions` (Java: toPositive(murmur2) % n)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
