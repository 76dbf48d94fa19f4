"""The partitioners' hashes and the co-partition check of window input (pure)."""

from __future__ import annotations

import zlib

import pytest

from service.processing import partitioning
from service.processing.partitioning import (
    Copartitioning,
    java_partition,
    librdkafka_partition,
    murmur2,
)
from service.records import InRecord, Keyed

# Kafka's clients/src/test/.../utils/UtilsTest.testMurmur2 and the Java client's values
# quoted by other ports of it (kafkajs, Akka's Murmur2Spec).
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
    b"1": -1993445489,
    b"12": 126087238,
    b"123": -267702483,
    b"1234": -1614185708,
    b"12345": -1188365604,
    b"kafka": -798503068,
}


@pytest.mark.parametrize(("data", "expected"), KAFKA_MURMUR2.items(), ids=lambda v: str(v)[:12])
def test_murmur2_matches_the_java_client(data: bytes, expected: int) -> None:
    """murmur2 gives the Java client's signed 32-bit hash for Kafka's own test vectors."""
    assert murmur2(data) == expected


def test_murmur2_of_the_empty_key() -> None:
    """The empty key (no 4-byte block, no tail) hashes as the Java client does."""
    assert murmur2(b"") == 275646681  # Utils.murmur2(new byte[0])


def test_java_partition_is_the_positive_hash_modulo_the_count() -> None:
    """The Java partitioner: toPositive(murmur2(key)) % n, never the sign's absolute value."""
    # murmur2(b"21") is negative: & 0x7fffffff, not abs().
    assert java_partition(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7
    assert java_partition(b"21", 7) != abs(-973932308) % 7


def test_librdkafka_partition_is_zlib_crc32() -> None:
    """librdkafka's consistent_random: the CRC-32 check value of "123456789" is 0xCBF43926."""
    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert librdkafka_partition(b"123456789", 10) == 0xCBF43926 % 10


def _keyed(key: str, partition: int) -> Keyed:
    return Keyed(InRecord("in", partition, 0, None, b"{}", None, 0), key, {})


def test_items_from_either_partitioners_partition_are_copartitioned() -> None:
    """A key found where murmur2 or CRC32 puts it is fine; anywhere else it is counted."""
    check = Copartitioning(4)
    key = next(k for k in (f"c-{i}" for i in range(100)) if len(set(check.expected(k))) == 2)
    java, crc = check.expected(key)
    other = ({0, 1, 2, 3} - {java, crc}).pop()
    count, first = check.misplaced([_keyed(key, java), _keyed(key, crc), _keyed(key, other)])
    assert count == 1
    assert first is not None
    assert (first.key, first.partition, first.java, first.librdkafka) == (key, other, java, crc)


def test_keys_are_hashed_as_utf8_text() -> None:
    """The window key's UTF-8 bytes are hashed, as rill writes the window result's key."""
    check = Copartitioning(13)
    assert check.expected("ü-1") == (
        java_partition("ü-1".encode(), 13),
        librdkafka_partition("ü-1".encode(), 13),
    )


def test_one_partition_is_always_copartitioned() -> None:
    """With one partition nothing can be misplaced."""
    assert Copartitioning(1).misplaced([_keyed(f"k{i}", 0) for i in range(50)]) == (0, None)


def test_the_key_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past CACHE_KEYS distinct keys the memory starts again, and answers stay right."""
    monkeypatch.setattr(partitioning, "CACHE_KEYS", 10)
    check = Copartitioning(5)
    for i in range(25):
        key = f"k{i}"
        count, _ = check.misplaced([_keyed(key, java_partition(key.encode(), 5))])
        assert count == 0
        assert len(check._seen) <= 10
