"""Window state in Redis: claim (fence), apply (one pipelined round trip), acknowledge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
import redis
from redis.cluster import RedisCluster

from service.errors import ConfigError, RillError
from service.processing.windows import Delta, encode_components
from service.state.keys import PartitionKeys, partition_keys

NO_TIME = -(2**62)
TP = tuple[str, int]


class StateError(RillError):
    """Redis refused or could not be reached."""


@dataclass(slots=True)
class Claim:
    """A partition's state as its new owner finds it."""

    epoch: int
    applied: int
    max_ts: int
    watermark: int
    outbox: list[tuple[int, list[Any], bytes]]


@dataclass(slots=True)
class ApplyCall:
    """One partition's part of a batch, for the apply script."""

    epoch: int
    first_offset: int
    last_offset: int
    max_ts: int
    watermark: int
    ack_seq: int
    deltas: Sequence[Delta]
    late_blob: bytes = b""


@dataclass(slots=True)
class Applied:
    """What the apply script did for one partition."""

    status: str
    seq: int = 0
    watermark: int = NO_TIME
    applied: int = -1
    outputs: list[Any] = field(default_factory=list)
    open_windows: int = 0


def _script(name: str) -> str:
    return (resources.files("service.state") / name).read_text()


class RedisWindowStore:
    """Window state of the partitions this worker owns.

    Args:
        url: redis:// or rediss:// URL.
        cluster: connect to a Redis Cluster.
        prefix / group: the first parts of every key.
        kind, size_ms, emit, ops: the window definition the script needs.
        ttl_s: safety TTL on every key.
    """

    def __init__(
        self,
        url: str,
        *,
        cluster: bool,
        prefix: str,
        group: str,
        kind: str,
        size_ms: int,
        emit: str,
        ops: Sequence[str],
        ttl_s: int,
        timeout_s: float = 5.0,
        password: str | None = None,
        ssl_ca_certs: str | None = None,
    ) -> None:
        self._password = password
        self._ssl_ca_certs = ssl_ca_certs
        self._url = url
        self._timeout_s = timeout_s
        self._cluster = cluster
        self._prefix = prefix
        self._group = group
        self._args = (kind, str(size_ms), emit, ",".join(ops), str(ttl_s))
        self._ttl_s = ttl_s
        self._client: Any = None
        self.round_trips = 0

    def start(self) -> RedisWindowStore:
        """Connect, check the server answers and register the scripts."""
        try:
            opts: dict[str, Any] = {
                "socket_timeout": self._timeout_s,
                "socket_connect_timeout": self._timeout_s,
            }
            if self._password is not None:
                opts["password"] = self._password
            if self._ssl_ca_certs is not None:
                opts["ssl_ca_certs"] = self._ssl_ca_certs
            if self._cluster:
                self._client = RedisCluster.from_url(self._url, **opts)
            else:
                self._client = redis.Redis.from_url(self._url, **opts)
            self._client.ping()
        except ValueError as exc:
            raise ConfigError(f"RILL_REDIS_URL: {exc}") from exc
        except redis.AuthenticationError as exc:
            raise ConfigError(
                "Redis refused the credentials: check RILL_REDIS_PASSWORD / RILL_REDIS_URL"
            ) from exc
        except redis.RedisError as exc:
            raise StateError(f"Redis does not answer: {exc}") from exc
        self._claim = self._client.register_script(_script("claim.lua"))
        self._ack = self._client.register_script(_script("ack.lua"))
        self._apply_lua = _script("apply.lua")
        self._apply_sha = self._client.script_load(self._apply_lua)
        return self

    def close(self) -> None:
        """Drop the connection."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def keys(self, tp: TP) -> PartitionKeys:
        """The keys of one input partition."""
        return partition_keys(self._prefix, self._group, tp[0], tp[1])

    def ping(self) -> bool:
        """Redis answers."""
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False

    def claim(self, tp: TP) -> Claim:
        """Fence older owners out of `tp` and read its state."""
        keys = self.keys(tp)
        try:
            raw = self._claim(keys=[keys.meta, keys.outbox], args=[self._ttl_s])
        except redis.RedisError as exc:
            raise StateError(f"claim of {tp} failed: {exc}") from exc
        self.round_trips += 1
        epoch, applied, max_ts, wm, _seq, flat = raw
        entries: dict[int, tuple[list[Any], bytes]] = {}
        for name, value in zip(flat[::2], flat[1::2], strict=True):
            seq_text, _, part = name.decode().partition(":")
            outputs, late = entries.get(int(seq_text), ([], b""))
            if part == "o":
                outputs = orjson.loads(value)
            else:
                late = value
            entries[int(seq_text)] = (outputs, late)
        return Claim(
            epoch=int(epoch),
            applied=int(applied),
            max_ts=int(float(max_ts)) if max_ts else NO_TIME,
            watermark=int(float(wm)) if wm else NO_TIME,
            outbox=[(seq, o, late) for seq, (o, late) in sorted(entries.items())],
        )

    def load_state(self, tp: TP) -> dict[str, str]:
        """Every open window of `tp`: window id -> components (for user reducers)."""
        try:
            raw = self._client.hgetall(self.keys(tp).state)
        except redis.RedisError as exc:
            raise StateError(f"state of {tp} unreadable: {exc}") from exc
        self.round_trips += 1
        return {k.decode(): v.decode() for k, v in raw.items()}

    def ack(self, tp: TP, epoch: int, seq: int) -> None:
        """Drop `tp`'s outbox entries up to `seq` (delivered)."""
        keys = self.keys(tp)
        try:
            self._ack(keys=[keys.meta, keys.outbox], args=[epoch, seq])
        except redis.RedisError as exc:
            raise StateError(f"ack of {tp} failed: {exc}") from exc
        self.round_trips += 1

    def apply(self, calls: Mapping[TP, ApplyCall]) -> dict[TP, Applied]:
        """Apply every partition's batch in ONE pipelined round trip (per node on a cluster)."""
        if not calls:
            return {}
        order = list(calls)
        try:
            try:
                replies = self._send(order, calls)
            except redis.exceptions.NoScriptError:
                # A restarted or failed-over server lost the script: load it, send again.
                self._apply_sha = self._client.script_load(self._apply_lua)
                replies = self._send(order, calls)
        except redis.RedisError as exc:
            raise StateError(f"apply failed: {exc}") from exc
        self.round_trips += 1
        return {tp: _applied(reply) for tp, reply in zip(order, replies, strict=True)}

    def _send(self, order: list[TP], calls: Mapping[TP, ApplyCall]) -> list[Any]:
        kind, size, emit, ops, ttl = self._args
        pipe = self._client.pipeline(transaction=False)
        for tp in order:
            call = calls[tp]
            keys = self.keys(tp)
            args: list[Any] = [
                call.epoch,
                call.first_offset,
                call.last_offset,
                call.max_ts,
                call.watermark,
                kind,
                size,
                emit,
                ops,
                ttl,
                call.ack_seq,
                call.late_blob,
                keys.key_prefix,
            ]
            for d in call.deltas:
                args.extend((d.key, d.start, d.end, encode_components(d.comps)))
            pipe.execute_command("EVALSHA", self._apply_sha, 4, *keys.all(), *args)
        return list(pipe.execute())


def _applied(reply: list[Any]) -> Applied:
    status = reply[0].decode()
    if status != "ok":
        return Applied(status, applied=int(reply[1]) if status == "stale" else -1)
    return Applied(
        status,
        seq=int(reply[1]),
        watermark=int(float(reply[2])),
        applied=int(reply[3]),
        outputs=[x.decode() for x in reply[4]],
        open_windows=int(reply[5]),
    )
