"""How long one Kafka call of a delivery may block the worker's loop."""

from __future__ import annotations

from service.runtime.service import call_timeout_s
from tests.support.inprocess import settings_for


def test_a_delivery_call_blocks_at_most_a_sixth_of_the_liveness_threshold() -> None:
    """A flush or transaction step waits at most health_stall_s / 6 (retried behind
    back-pressure, which keeps /healthz beating), or the delivery timeout if shorter."""
    assert call_timeout_s(settings_for(health_stall_s=60, delivery_timeout_s=60)) == 10
    assert call_timeout_s(settings_for(health_stall_s=60, delivery_timeout_s=4)) == 4
    assert call_timeout_s(settings_for(health_stall_s=3, delivery_timeout_s=60)) == 1
