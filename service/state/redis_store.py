"""Window state in Redis: claim (fence), apply (one pipelined round trip), acknowledge.

The client is injected (`state.client.connect` builds it from settings; unit tests pass
a fakeredis client, see `memory.py`); every byte layout is `state.codec`'s.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

import structlog
from redis.exceptions import NoScriptError

from service.errors import RillError, StateLayoutError, StateLostError
from service.records import TP
from service.state import codec
from service.state.client import REDIS_ERRORS, RedisClient, mapped
from service.state.codec import PartitionKeys, StateLayout
from service.window_state import ApplyCall, ApplyReply, Claim, Component, Op

log = structlog.get_logger("rill.state")
_T = TypeVar("_T")
# How often the TTLs of owned partitions are refreshed: a tenth of the TTL, at most this.
TOUCH_EVERY_MAX_S = 5.0


def script(name: str) -> str:
    """The text of one script as Redis runs it: the shared prelude, then the script."""
    folder = resources.files("service.state")
    return (folder / "prelude.lua").read_text() + "\n" + (folder / name).read_text()


class RedisWindowStore:
    """Window state of the partitions this worker owns (implements `WindowStore`).

    Args:
        client: a connected `redis.Redis` or `RedisCluster` (or a fakeredis client).
        layout: where the state lives and the window definition the script needs.
        clock: monotonic seconds (for the TTL refresh interval).

    Attributes:
        round_trips: how many calls reached Redis (an apply of any number of
            partitions counts once).
    """

    def __init__(
        self, client: RedisClient, layout: StateLayout, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self.layout = layout
        # Scripts are sent by sha; registering is local (no round trip).
        self._claim = client.register_script(script("claim.lua"))
        self._ack = client.register_script(script("ack.lua"))
        self._touch = client.register_script(script("touch.lua"))
        self._adopt = client.register_script(script("adopt.lua"))
        self._apply = client.register_script(script("apply.lua"))
        # Pipelined scripts go by sha alone (no EVAL fallback): loaded once, and again
        # when a restarted or failed-over server lost them.
        self._loaded: set[str] = set()
        self._clock = clock
        self._touched_at = clock()
        self.touch_every_s = min(TOUCH_EVERY_MAX_S, layout.ttl_s / 10)
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

    def claim(self, tp: TP, expect: int = 0) -> Claim:
        """Fence older owners out of `tp` (new epoch) and read its state and outbox.

        `expect` is the outbox sequence `tp`'s state reached (Kafka's committed offsets
        say so, or this worker saw it): the claim refuses, writing nothing, when Redis has
        less.

        Raises:
            StateLostError: Redis's state of `tp` is behind what Kafka committed; nothing
                is written (see `adopt`).
            StateLayoutError: open state of `tp` was written under another aggregate
                layout.
            StateError: Redis failed (transient).
        """
        keys = self.keys(tp)
        token = secrets.randbelow(2**codec.TOKEN_BITS)
        try:
            raw = self._claim(keys=keys.all(), args=codec.claim_argv(self.layout, token, expect))
        except REDIS_ERRORS as exc:
            raise mapped(exc, f"claim of {tp}") from exc
        self.round_trips += 1
        status = _text(raw[0])
        if status == "lost":
            raise StateLostError([tp], found=int(raw[1]), expected=expect)
        if status == "layout":
            raise StateLayoutError(self._layout_message(tp, _text(raw[1])))
        return _decoded(tp, codec.decode_claim, self.layout.ops, raw[1:])

    def adopt(self, tp: TP, seq: int) -> int:
        """Go on with `tp`'s state as Redis has it after a loss (RILL_STATE_LOSS=reset).

        Its outbox sequence continues after `seq` (the one Kafka committed), and the next
        claim no longer refuses. Returns the sequence Redis had.
        """
        keys = self.keys(tp)
        try:
            raw = self._adopt(keys=[keys.meta], args=[seq, self.layout.ttl_s])
        except REDIS_ERRORS as exc:
            raise mapped(exc, f"reset of {tp}") from exc
        self.round_trips += 1
        return int(raw)

    def load_state(self, tp: TP) -> dict[tuple[str, int, int], list[Component]]:
        """Every open window of `tp`: (key, start, end) -> components."""
        try:
            raw = self._client.hgetall(self.keys(tp).state)
        except REDIS_ERRORS as exc:
            raise mapped(exc, f"state of {tp} unreadable") from exc
        self.round_trips += 1
        return _decoded(tp, codec.decode_state, self.layout.ops, raw)

    def ack(self, tp: TP, epoch: int, seq: int) -> None:
        """Drop `tp`'s outbox entries up to `seq` (delivered), if `epoch` still owns it."""
        keys = self.keys(tp)
        try:
            self._ack(keys=[keys.meta, keys.outbox], args=[epoch, seq])
        except REDIS_ERRORS as exc:
            raise mapped(exc, f"ack of {tp}") from exc
        self.round_trips += 1

    def touch(self, epochs: Mapping[TP, int], force: bool = False) -> dict[TP, str]:
        """Keep the state of owned partitions alive: refresh the TTL of all their keys.

        At most every `touch_every_s` (a tenth of the TTL, at most 5 s) unless `force`,
        in one pipelined round trip.

        Args:
            epochs: the partitions this worker owns, with their epochs.
            force: refresh now.

        Returns:
            The partitions this worker does not own any more, with why: `lost` (the
            state, or the claim, is gone from Redis) or `fenced` (another claim).
        """
        now = self._clock()
        if not epochs or (not force and now - self._touched_at < self.touch_every_s):
            return {}
        self._touched_at = now
        order = list(epochs)
        try:
            replies = self._pipelined(
                self._touch,
                [
                    (
                        self.keys(tp).all(),
                        [epochs[tp], codec.epoch_claims(epochs[tp]), self.layout.ttl_s],
                    )
                    for tp in order
                ],
            )
        except REDIS_ERRORS as exc:
            raise mapped(exc, "TTL refresh") from exc
        self.round_trips += 1
        answers = {tp: _text(reply) for tp, reply in zip(order, replies, strict=True)}
        return {tp: why for tp, why in answers.items() if why != "ok"}

    def apply(self, calls: Mapping[TP, ApplyCall]) -> dict[TP, ApplyReply]:
        """Apply every partition's call in ONE pipelined round trip (per node on a cluster).

        A partition whose state, or this worker's claim of it, is gone from Redis answers
        `lost`; the other partitions' scripts ran and their replies stand.

        Raises:
            FatalError: a script failed on its inputs (never retried: a script stopped
                half-way is not atomic).
            StateError: Redis failed (transient).
        """
        if not calls:
            return {}
        order = list(calls)
        argvs = [(self.keys(tp).all(), codec.apply_argv(self.layout, calls[tp])) for tp in order]
        try:
            replies = self._pipelined(self._apply, argvs)
        except REDIS_ERRORS as exc:
            raise mapped(exc, "apply") from exc
        self.round_trips += 1
        return {
            tp: _decoded(tp, codec.decode_applied, self.layout.ops, reply)
            for tp, reply in zip(order, replies, strict=True)
        }

    def seen(self, ids: Mapping[TP, Sequence[str]]) -> dict[TP, dict[str, int]]:
        """The expiry time of each of `ids` that `tp`'s dedupe set remembers, per partition.

        One pipelined round trip (ZMSCORE per partition, each in its partition's slot).
        A read, not a write: the caller owns the partitions, and an apply based on a read
        that another claim overtook answers `fenced` (or `lost`).

        Raises:
            StateError: Redis failed (transient).
        """
        order = [tp for tp in ids if ids[tp]]
        if not order:
            return {}
        try:
            pipe = self._client.pipeline(transaction=False)
            for tp in order:
                pipe.execute_command("ZMSCORE", self.keys(tp).seen, *ids[tp])
            replies = list(pipe.execute())
        except REDIS_ERRORS as exc:
            raise mapped(exc, "dedupe read") from exc
        self.round_trips += 1
        return {
            tp: codec.decode_seen(ids[tp], scores)
            for tp, scores in zip(order, replies, strict=True)
        }

    def _pipelined(self, script_: Any, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """One script over many partitions in one pipelined round trip; the replies."""
        if script_.sha not in self._loaded:
            self._load(script_)
        try:
            return self._send(script_, calls)
        except NoScriptError:
            # A script that ran already answers `stale` when sent again.
            self._load(script_)
            return self._send(script_, calls)

    def _load(self, script_: Any) -> None:
        self._client.script_load(script_.script)
        self._loaded.add(script_.sha)

    def _send(self, script_: Any, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, argv in calls:
            pipe.execute_command("EVALSHA", script_.sha, len(keys), *keys, *argv)
        return list(pipe.execute())

    def _layout_message(self, tp: TP, recorded: str) -> str:
        lay = self.layout
        return (
            f"window state of {tp[0]}[{tp[1]}] in Redis (RILL_REDIS_PREFIX={lay.prefix}, "
            f"RILL_GROUP_ID={lay.group}) was written with {codec.describe_layout(recorded)}; "
            f"this worker runs {codec.describe_layout(codec.layout_of(lay))}. "
            "RILL_AGGREGATES or RILL_WINDOW_TYPE / RILL_WINDOW_SIZE_MS changed while "
            "windows are open, and merging them would be wrong. Either run the new settings "
            "under a new RILL_REDIS_PREFIX or RILL_GROUP_ID, or go back to the previous "
            "settings and let the open windows drain (rill_open_windows 0) before changing."
        )


def _decoded(tp: TP, decode: Callable[[Sequence[Op], Any], _T], ops: Sequence[Op], raw: Any) -> _T:
    """Decode a reply; a layout this version cannot read is fatal, not transient."""
    try:
        return decode(ops, raw)
    except (ValueError, TypeError) as exc:
        raise RillError(f"state of {tp} is not in the layout this version reads: {exc}") from exc


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
