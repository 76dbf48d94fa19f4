"""Redis lost a partition's window state: what RILL_STATE_LOSS says to do about it."""

from __future__ import annotations

from typing import Literal

import structlog

from service.errors import StateLostError
from service.observability.metrics import Metrics
from service.records import TP
from service.runtime.guarantee import Guarantee
from service.runtime.window_engine import WindowEngine

log = structlog.get_logger("rill.state_loss")

HOW_TO_RECOVER = (
    "Redis restarted without persistence, evicted or expired keys (RILL_STATE_TTL_S), or "
    "failed over to a replica that missed writes. To recover: restore Redis's data and "
    "restart the workers, or set RILL_STATE_LOSS=reset and restart them to go on with what "
    "Redis has; run Redis with AOF or a replica and maxmemory-policy noeviction"
)


def state_lost(
    tp: TP,
    exc: StateLostError,
    mode: Literal["fail", "reset"],
    engine: WindowEngine,
    guarantee: Guarantee,
    metrics: Metrics,
) -> bool:
    """Hold `tp` (fail) or go on with what Redis has (reset), counted and logged.

    Returns:
        True when `tp` is reconciled again (reset); False when the caller must hold it
        (paused, nothing of it processed or committed, /readyz failing).
    """
    where = {"topic": tp[0], "partition": tp[1], "error": str(exc)}
    if mode == "reset":
        had = engine.store.adopt(tp, exc.expected)
        metrics.state_loss(tp, "reset")
        log.error(
            "window state lost; going on with what Redis has (RILL_STATE_LOSS=reset): "
            "its open windows and watermark start again from there",
            redis_seq=had,
            **where,
        )
        guarantee.reconcile(tp)
        return True
    metrics.state_loss(tp, "held")
    log.error(
        "window state lost: partition held, nothing of it processed or committed "
        f"(RILL_STATE_LOSS=fail). {HOW_TO_RECOVER}",
        **where,
    )
    return False
