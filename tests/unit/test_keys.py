"""Key layout (state.codec): one Redis Cluster hash slot per input partition, whatever the names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from service.state.codec import partition_keys

names = st.text(min_size=1, max_size=20)


@given(
    prefix=names,
    group=names,
    topic=names,
    partition=st.integers(0, 10_000),
)
def test_every_key_of_a_partition_hashes_to_one_slot(
    prefix: str, group: str, topic: str, partition: int
) -> None:
    """Every key of one partition shares a slot (braces included), whatever the record keys."""
    keys = partition_keys(prefix, group, topic, partition)
    slots = {key_slot(k.encode()) for k in keys.all()}
    assert len(slots) == 1


def test_partitions_spread_over_slots() -> None:
    """Different partitions get different tags, so a cluster spreads them."""
    slots = {key_slot(partition_keys("rill", "g", "orders", p).meta.encode()) for p in range(64)}
    assert len(slots) > 32
