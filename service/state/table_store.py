"""A table (a compacted topic) materialized in Redis: written idempotently, read per batch.

Layout: one hash per table, `<prefix>:table:{<topic>}`; one field per table key, holding
`<partition>:<offset>:` then `+<value bytes>` or `-` (a tombstone). The version prefix
makes writes idempotent and order-free (`table_put.lua`): N workers reading the same
table write the same hash and agree. A tombstone stays as a marker (a few bytes per
deleted key), so an older value written late by a slower worker cannot bring it back.
One hash is one Redis Cluster slot: a lookup of any keys is one command.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources

from service.records import InRecord
from service.state.client import REDIS_ERRORS, RedisClient, mapped

_TAG_UNSAFE = re.compile(r"[{}]")
_VERSION = re.compile(rb"^(\d+):(\d+):")


def table_hash(prefix: str, topic: str) -> str:
    """The Redis key of a table's hash (braces in names replaced: one hash tag)."""
    return f"{_TAG_UNSAFE.sub('_', prefix)}:table:{{{_TAG_UNSAFE.sub('_', topic)}}}"


def latest(records: Sequence[InRecord]) -> dict[bytes, InRecord]:
    """Per table key, the record of the highest (partition, offset): what the script keeps.

    Records without a key have no place in a table and are left out.
    """
    out: dict[bytes, InRecord] = {}
    for r in records:
        if r.key is None:
            continue
        seen = out.get(r.key)
        if seen is None or (r.partition, r.offset) > (seen.partition, seen.offset):
            out[r.key] = r
    return out


def stored_value(stored: bytes | None) -> bytes | None:
    """The value of a stored field: None for a tombstone or no field."""
    if stored is None:
        return None
    version = _VERSION.match(stored)
    if version is None:
        raise ValueError(f"not a table field: {stored[:40]!r}")
    body = stored[version.end() :]
    return body[1:] if body[:1] == b"+" else None


class RedisTable:
    """One table's rows in Redis: `put` from the table's topic, `get` per batch.

    Args:
        client: a connected `redis.Redis` or `RedisCluster` (or a fakeredis client).
        prefix: RILL_REDIS_PREFIX.
        topic: the table's topic.
    """

    def __init__(self, client: RedisClient, prefix: str, topic: str) -> None:
        self._client = client
        self.key = table_hash(prefix, topic)
        text = (resources.files("service.state") / "table_put.lua").read_text()
        self._put = client.register_script(text)
        self.round_trips = 0

    def put(self, records: Sequence[InRecord]) -> int:
        """Write the latest record per key of a batch of the table's records.

        Returns:
            How many keys changed (0 when another worker wrote them already).

        Raises:
            StateError: Redis failed (transient: write the same records again).
            FatalError: Redis refused the script for good.
        """
        rows = latest(records)
        if not rows:
            return 0
        args: list[bytes | str | int] = []
        for key, r in rows.items():
            value = b"+" + r.value if r.value is not None else b"-"
            args += [key, r.partition, r.offset, value]
        try:
            changed = self._put(keys=[self.key], args=args)
        except REDIS_ERRORS as exc:
            raise mapped(exc, "table write") from exc
        return int(changed)

    def get(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The rows of some keys in one command (HMGET); keys without a row are absent.

        Raises:
            StateError: Redis failed (transient).
        """
        if not keys:
            return {}
        try:
            found = self._client.hmget(self.key, list(keys))
        except REDIS_ERRORS as exc:
            raise mapped(exc, "table lookup") from exc
        self.round_trips += 1
        out: dict[bytes, bytes] = {}
        for key, stored in zip(keys, found, strict=True):
            value = stored_value(stored.encode() if isinstance(stored, str) else stored)
            if value is not None:
                out[key] = value
        return out

    def ping(self) -> bool:
        """Redis answers."""
        try:
            return bool(self._client.ping())
        except REDIS_ERRORS:
            return False

    def close(self) -> None:
        """Drop the connection."""
        self._client.close()
