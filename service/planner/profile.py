"""Traffic profiles: input records/s over time, from a CSV or a built-in shape."""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import math
from dataclasses import dataclass
from typing import Literal

from service.errors import ConfigError

Interpolation = Literal["linear", "hold"]


@dataclass(frozen=True, slots=True)
class Profile:
    """Records/s at points in time, joined by straight lines (`linear`) or steps (`hold`).

    Before the first point the first rate holds, after the last point the last one.
    """

    times_s: tuple[float, ...]
    rates: tuple[float, ...]
    duration_s: float
    interpolation: Interpolation = "linear"

    def rate_at(self, t: float) -> float:
        """The input rate at time t, in records/s."""
        i = bisect.bisect_right(self.times_s, t)
        if i == 0:
            return self.rates[0]
        if i == len(self.times_s) or self.interpolation == "hold":
            return self.rates[i - 1]
        t0, t1 = self.times_s[i - 1], self.times_s[i]
        r0, r1 = self.rates[i - 1], self.rates[i]
        return r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    @property
    def peak(self) -> float:
        """The highest rate of the profile."""
        return max(self.rates)


def _checked(
    times: list[float], rates: list[float], duration: float, how: Interpolation
) -> Profile:
    if not times:
        raise ConfigError("the traffic profile has no points")
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise ConfigError("profile times must increase strictly")
    if any(r < 0 or not math.isfinite(r) for r in rates):
        raise ConfigError("profile rates must be finite and not negative")
    if duration <= 0:
        raise ConfigError("the profile's duration must be positive")
    return Profile(tuple(times), tuple(rates), duration, how)


def step(
    base: float, peak: float, start_s: float, end_s: float | None, duration_s: float
) -> Profile:
    """`base` records/s, `peak` from `start_s` (until `end_s` if given), then `base` again."""
    times, rates = [0.0, start_s], [base, peak]
    if end_s is not None:
        if end_s <= start_s:
            raise ConfigError("--end must be after --start")
        times.append(end_s)
        rates.append(base)
    if start_s <= 0:
        times, rates = times[1:], rates[1:]
    return _checked(times, rates, duration_s, "hold")


def diurnal(base: float, peak: float, period_s: float, duration_s: float) -> Profile:
    """A raised cosine: `base` at t=0, `peak` at half the period, sampled every 1/240 period."""
    if period_s <= 0:
        raise ConfigError("--period must be positive")
    n = max(2, math.ceil(duration_s / period_s * 240))
    times = [duration_s * i / n for i in range(n + 1)]
    rates = [base + (peak - base) * (1 - math.cos(2 * math.pi * t / period_s)) / 2 for t in times]
    return _checked(times, rates, duration_s, "linear")


def parse_csv(text: str, duration_s: float | None = None) -> Profile:
    """A profile from CSV text with the header `t_s,records_per_s`, joined linearly.

    Args:
        text: the file's content.
        duration_s: how long to simulate (default: the last point's time).

    Returns:
        The profile.

    Raises:
        ConfigError: a missing header, a bad number, or times that do not increase.
    """
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in reader.fieldnames or []]
    if fields[:2] != ["t_s", "records_per_s"]:
        raise ConfigError(f"a profile CSV starts with the header t_s,records_per_s, not {fields}")
    times: list[float] = []
    rates: list[float] = []
    for line, row in enumerate(reader, start=2):
        try:
            times.append(float(row["t_s"]))
            rates.append(float(row["records_per_s"]))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"profile CSV line {line}: {exc}") from exc
    last = times[-1] if times else 0.0
    return _checked(times, rates, duration_s if duration_s is not None else last, "linear")
