"""Sampled DLQ log lines: a few lines per kind and interval, the rest counted."""

from __future__ import annotations

from service.observability.sampling import LogSampler


def test_flood_is_sampled_and_the_rest_counted() -> None:
    """10 lines per kind per interval; the suppressed count comes out once the interval ends."""
    now = [0.0]
    sampler = LogSampler(per_interval=10, interval_s=5.0, clock=lambda: now[0])
    allowed = sum(sampler.allow(("decode", "DecodeError")) for _ in range(1000))
    assert allowed == 10
    assert sampler.allow(("late", "RecordError")), "another kind has its own quota"
    assert sampler.due() == {}, "not before the interval ends"
    now[0] = 5.0
    assert sampler.due() == {("decode", "DecodeError"): 990}
    assert sampler.allow(("decode", "DecodeError")), "a new interval, a new quota"
