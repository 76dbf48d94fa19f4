"""A call whose reply was lost, on a real Redis: the store tells its replay, for a batch and
for an idle tick alike (issue: nothing lost under live traffic, item 1).

Redis is kept busy past the client's socket timeout (another client's script spins), as a
stop of the world or a slow disk does: the call waits in Redis's socket buffer and runs
once Redis goes on, but the caller has given up on the reply. Sent again, the call must
answer `stale` (claim again, take the outbox), never run a second time nor take a new
outbox sequence.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from service.errors import StateError
from service.state.client import connect
from service.state.codec import StateLayout
from service.state.redis_store import RedisWindowStore
from service.window_state import ApplyCall, Delta
from tests.integration.conftest import Endpoints

pytestmark = pytest.mark.integration

TP0 = ("live", 0)
OPS = ("add",)
PAUSE_MS = 1500
HASTY_TIMEOUT_S = 0.5


def _hasty(url: str, layout: StateLayout) -> RedisWindowStore:
    """A store on `layout` whose client gives up after HASTY_TIMEOUT_S, with the apply
    script loaded (a first call through it is then the EVALSHA itself). Only the stalled
    call goes through it: setup and replay use a patient client, so a machine busy with
    other tests (Redis slower than HASTY_TIMEOUT_S to a ping) does not fail them."""
    for attempt in range(20):
        try:
            store = RedisWindowStore(connect(url, timeout_s=HASTY_TIMEOUT_S), layout)
        except StateError:
            time.sleep(0.2)
            continue
        try:
            # A partition never claimed answers `lost` and writes nothing.
            warm = store.apply({("warm", attempt): ApplyCall(1, 0, 0, 0, 0, -1, [], seq=0)})
        except StateError:
            store.close()
            time.sleep(0.2)
            continue
        assert warm[("warm", attempt)].status == "lost"
        return store
    raise AssertionError(f"Redis did not answer within {HASTY_TIMEOUT_S} s in 20 tries")


SPIN = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1]) * 1000
return 1
"""


def _stalled_apply(store: RedisWindowStore, url: str, call: ApplyCall) -> None:
    """Send `call` through `store` (HASTY_TIMEOUT_S < PAUSE_MS) while Redis is busy past
    its socket timeout: the reply is lost."""
    busy = connect(url, timeout_s=10)
    spinning = threading.Thread(target=lambda: busy.eval(SPIN, 0, PAUSE_MS))
    spinning.start()
    time.sleep(0.2)  # the spin has begun
    with pytest.raises(StateError):
        store.apply({TP0: call})
    spinning.join()
    time.sleep(0.3)  # Redis goes on: it reads the call and runs it
    busy.close()


@pytest.mark.parametrize("kind", ["tick", "batch"])
def test_replayed_call_whose_reply_was_lost_answers_stale(endpoints: Endpoints, kind: str) -> None:
    """The lost reply's call ran once; its replay answers stale and writes nothing; a new
    claim finds the windows it closed in the outbox."""
    layout = StateLayout(f"t-{uuid.uuid4().hex[:8]}", "g", "tumbling", 100, "final", OPS, 600)
    store = RedisWindowStore(connect(endpoints.redis_url, timeout_s=10), layout)
    hasty = _hasty(endpoints.redis_url, layout)
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
    _stalled_apply(hasty, endpoints.redis_url, call)
    again = store.apply({TP0: call})[TP0]
    assert again.status == "stale", "the replay is told, not run again"
    assert again.seq == opened.seq + 1, "the lost call took one sequence, the replay none"
    reclaimed = store.claim(TP0)
    [entry] = [e for e in reclaimed.outbox if e.seq == opened.seq + 1]
    assert [(r.key, r.start, r.end, r.final) for r in entry.rows] == [("k", 0, 100, True)]
    store.close()
    hasty.close()
