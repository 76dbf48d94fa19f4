"""The in-process twin of `RedisWindowStore`: the same class and the very same Lua
scripts, over fakeredis (with Lua, via lupa) instead of a Redis server.

For unit tests of the scripts and of the logic above the store; integration tests use
a real Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import fakeredis

from service.state.codec import StateLayout
from service.state.redis_store import RedisWindowStore


class MemoryWindowStore(RedisWindowStore):
    """A `WindowStore` in this process.

    Args:
        layout: where the state lives and the window definition the script needs.
        server: the fake server to share: two stores on one server see one Redis
            (two workers of one group); by default a new, empty one.
        clock: monotonic seconds (for the TTL refresh interval).
    """

    def __init__(
        self,
        layout: StateLayout,
        server: fakeredis.FakeServer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server if server is not None else fakeredis.FakeServer()
        self.client = fakeredis.FakeRedis(server=self.server)
        super().__init__(self.client, layout, clock)
