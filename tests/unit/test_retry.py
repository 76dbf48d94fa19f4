"""Backoff and circuit breaker, on a fake clock."""

from __future__ import annotations

from service.retry import Backoff, CircuitBreaker


def test_backoff_ceiling_doubles_up_to_cap_with_full_jitter() -> None:
    """Delays are uniform below a doubling ceiling, capped, and reset after success."""
    b = Backoff(base_s=0.1, cap_s=1.0, rand=lambda: 1.0)
    assert [round(b.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next_delay() == 0.1
    assert Backoff(rand=lambda: 0.0).next_delay() == 0.0


def test_breaker_opens_after_threshold_and_half_opens_after_reset() -> None:
    """closed -> open after N failures -> half_open after reset_s -> closed on success."""
    now = [0.0]
    changes: list[str] = []
    br = CircuitBreaker(
        "redis",
        threshold=2,
        reset_s=5,
        clock=lambda: now[0],
        on_change=lambda name, state: changes.append(state),
    )
    br.failure()
    assert br.allow()
    br.failure()
    assert not br.allow()
    now[0] = 4.9
    assert not br.allow()
    now[0] = 5.0
    assert br.allow()
    assert br.state == "half_open"
    br.failure()
    assert br.state == "open", "a failed trial opens the breaker again"
    now[0] = 10.0
    assert br.allow()
    br.success()
    assert changes == ["open", "half_open", "open", "half_open", "closed"]


def test_backoff_survives_a_long_outage() -> None:
    """Thousands of retries keep the delay at the cap (2 ** 1024 once overflowed a float)."""
    backoff = Backoff(0.1, 5.0, rand=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(5000)]
    assert delays[-1] == 5.0
