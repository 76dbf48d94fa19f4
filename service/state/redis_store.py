"""Window state in Redis: claim (fence), apply (one pipelined round trip), acknowledge.

The client is injected (`state.client.connect` builds it from settings; unit tests pass
a fakeredis client, see `memory.py`); every byte layout is `state.codec`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

from redis.exceptions import NoScriptError

from service.errors import RillError, StateError
from service.processing.windows import Component, Op
from service.records import TP
from service.state import codec
from service.state.client import REDIS_ERRORS, RedisClient
from service.state.codec import PartitionKeys, StateLayout
from service.state.store import Applied, ApplyCall, Claim

_T = TypeVar("_T")


def script(name: str) -> str:
    """The text of one script as Redis runs it: the shared prelude, then the script."""
    folder = resources.files("service.state")
    return (folder / "prelude.lua").read_text() + "\n" + (folder / name).read_text()


class RedisWindowStore:
    """Window state of the partitions this worker owns (implements `WindowStore`).

    Args:
        client: a connected `redis.Redis` or `RedisCluster` (or a fakeredis client).
        layout: where the state lives and the window definition the script needs.

    Attributes:
        round_trips: how many calls reached Redis (an apply of any number of
            partitions counts once).
    """

    def __init__(self, client: RedisClient, layout: StateLayout) -> None:
        self._client = client
        self.layout = layout
        # Scripts are sent by sha; registering is local (no round trip).
        self._claim = client.register_script(script("claim.lua"))
        self._ack = client.register_script(script("ack.lua"))
        self._apply = client.register_script(script("apply.lua"))
        self._apply_loaded = False
        self.round_trips = 0

    def keys(self, tp: TP) -> PartitionKeys:
        """The keys of one input partition."""
        return self.layout.keys(tp)

    def ping(self) -> bool:
        """Redis answers."""
        try:
            return bool(self._client.ping())
        except REDIS_ERRORS:
            return False

    def close(self) -> None:
        """Drop the connection."""
        self._client.close()

    def claim(self, tp: TP) -> Claim:
        """Fence older owners out of `tp` (new epoch) and read its state and outbox."""
        keys = self.keys(tp)
        try:
            raw = self._claim(keys=[keys.meta, keys.outbox], args=[self.layout.ttl_s])
        except REDIS_ERRORS as exc:
            raise StateError(f"claim of {tp} failed: {exc}") from exc
        self.round_trips += 1
        return _decoded(tp, codec.decode_claim, self.layout.ops, raw)

    def load_state(self, tp: TP) -> dict[tuple[str, int, int], list[Component]]:
        """Every open window of `tp`: (key, start, end) -> components."""
        try:
            raw = self._client.hgetall(self.keys(tp).state)
        except REDIS_ERRORS as exc:
            raise StateError(f"state of {tp} unreadable: {exc}") from exc
        self.round_trips += 1
        return _decoded(tp, codec.decode_state, self.layout.ops, raw)

    def ack(self, tp: TP, epoch: int, seq: int) -> None:
        """Drop `tp`'s outbox entries up to `seq` (delivered), if `epoch` still owns it."""
        keys = self.keys(tp)
        try:
            self._ack(keys=[keys.meta, keys.outbox], args=[epoch, seq])
        except REDIS_ERRORS as exc:
            raise StateError(f"ack of {tp} failed: {exc}") from exc
        self.round_trips += 1

    def apply(self, calls: Mapping[TP, ApplyCall]) -> dict[TP, Applied]:
        """Apply every partition's call in ONE pipelined round trip (per node on a cluster)."""
        if not calls:
            return {}
        order = list(calls)
        try:
            if not self._apply_loaded:
                self._load_apply()
            try:
                replies = self._send(order, calls)
            except NoScriptError:
                # A restarted or failed-over server lost the script: load it, send again.
                self._load_apply()
                replies = self._send(order, calls)
        except REDIS_ERRORS as exc:
            raise StateError(f"apply failed: {exc}") from exc
        self.round_trips += 1
        return {
            tp: _decoded(tp, codec.decode_applied, self.layout.ops, reply)
            for tp, reply in zip(order, replies, strict=True)
        }

    def _load_apply(self) -> None:
        self._client.script_load(self._apply.script)
        self._apply_loaded = True

    def _send(self, order: list[TP], calls: Mapping[TP, ApplyCall]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for tp in order:
            keys = self.keys(tp)
            argv = codec.apply_argv(self.layout, keys, calls[tp])
            pipe.execute_command("EVALSHA", self._apply.sha, 4, *keys.all(), *argv)
        return list(pipe.execute())


def _decoded(tp: TP, decode: Callable[[Sequence[Op], Any], _T], ops: Sequence[Op], raw: Any) -> _T:
    """Decode a reply; a layout this version cannot read is fatal, not transient."""
    try:
        return decode(ops, raw)
    except (ValueError, TypeError) as exc:
        raise RillError(f"state of {tp} is not in the layout this version reads: {exc}") from exc
