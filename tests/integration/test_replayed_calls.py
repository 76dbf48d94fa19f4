"""A call whose reply was lost, on a real Redis: the store tells its replay, for a batch and
for an idle tick alike (issue: nothing lost under live traffic, item 1).

Redis is stalled with CLIENT PAUSE past the client's socket timeout, as a stop of the
world or a slow disk does: the script runs once Redis goes on, but the caller has given
up on the reply. Sent again, the call must answer `stale` (claim again, take the outbox),
never run a second time nor take a new outbox sequence.
"""

from __future__ import annotations

import time
import uuid

import pytest

from service.errors import StateError
from service.processing.windows import Delta
from service.state.client import connect
from service.state.codec import StateLayout
from service.state.redis_store import RedisWindowStore
from service.state.store import ApplyCall
from tests.integration.conftest import Endpoints

pytestmark = pytest.mark.integration

TP0 = ("live", 0)
OPS = ("add",)
PAUSE_MS = 1500


def _store(url: str, timeout_s: float) -> RedisWindowStore:
    layout = StateLayout(f"t-{uuid.uuid4().hex[:8]}", "g", "tumbling", 100, "final", OPS, 600)
    return RedisWindowStore(connect(url, timeout_s=timeout_s), layout)


def _stalled_apply(store: RedisWindowStore, pauser: RedisWindowStore, call: ApplyCall) -> None:
    """Send `call` while Redis is paused past the socket timeout: the reply is lost."""
    pauser._client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
    with pytest.raises(StateError):
        store.apply({TP0: call})
    time.sleep(PAUSE_MS / 1000 + 0.5)  # Redis goes on and runs the script


@pytest.mark.parametrize("kind", ["tick", "batch"])
def test_replayed_call_whose_reply_was_lost_answers_stale(endpoints: Endpoints, kind: str) -> None:
    """The lost reply's call ran once; its replay answers stale and writes nothing; a new
    claim finds the windows it closed in the outbox."""
    store = _store(endpoints.redis_url, timeout_s=0.5)
    pauser = _store(endpoints.redis_url, timeout_s=5)
    claim = store.claim(TP0)
    opened = store.apply(
        {TP0: ApplyCall(claim.epoch, 0, 0, 10, 0, -1, [Delta("k", 0, 100, [1])], seq=claim.seq)}
    )[TP0]
    assert opened.status == "ok"
    if kind == "tick":  # no records: only the watermark moves, closing [0, 100)
        call = ApplyCall(claim.epoch, -1, -1, 10, 500, -1, [], seq=opened.seq)
    else:  # a later record past the window's end
        call = ApplyCall(
            claim.epoch, 1, 1, 600, 500, -1, [Delta("k", 600, 700, [1])], seq=opened.seq
        )
    _stalled_apply(store, pauser, call)
    again = store.apply({TP0: call})[TP0]
    assert again.status == "stale", "the replay is told, not run again"
    assert again.seq == opened.seq + 1, "the lost call took one sequence, the replay none"
    reclaimed = store.claim(TP0)
    [entry] = [e for e in reclaimed.outbox if e.seq == opened.seq + 1]
    assert [(r.key, r.start, r.end, r.final) for r in entry.rows] == [("k", 0, 100, True)]
    store.close()
    pauser.close()
