"""The PNG of a planning run: input and capacity, replicas, lag, lag seconds over time."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from service.errors import ConfigError
from service.planner.simulate import Sample


def _pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise ConfigError(
            "--png needs matplotlib: pip install 'rill[plan]' (or pip install matplotlib)"
        ) from exc
    matplotlib.use("Agg")  # files only; no display on servers or in CI
    return importlib.import_module("matplotlib.pyplot")


def write_png(
    runs: Mapping[str, Sequence[Sample]], path: Path, title: str, slo_lag_s: float
) -> None:
    """Plot the runs side by side into a PNG file.

    Args:
        runs: samples per autoscaler name.
        path: the PNG to write.
        title: the figure's title.
        slo_lag_s: drawn as a line on the lag-seconds panel.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    first = next(iter(runs.values()))
    minutes = [s.t_s / 60 for s in first]
    axes[0].plot(minutes, [s.input_rps for s in first], color="black", label="input")
    for n, (name, samples) in enumerate(runs.items()):
        c = f"C{n}"  # one colour per autoscaler across the panels
        axes[0].step(
            minutes,
            [s.capacity_rps for s in samples],
            where="post",
            color=c,
            label=f"{name} capacity",
        )
        axes[1].step(
            minutes, [s.desired for s in samples], where="post", color=c, label=f"{name} desired"
        )
        axes[1].step(
            minutes,
            [s.ready for s in samples],
            where="post",
            color=c,
            linestyle="--",
            label=f"{name} ready",
        )
        axes[2].plot(minutes, [s.lag for s in samples], color=c, label=name)
        axes[3].plot(minutes, [s.lag_s for s in samples], color=c, label=name)
    axes[3].axhline(slo_lag_s, color="grey", linestyle=":", label=f"SLO {slo_lag_s:g} s")
    labels = ["records/s", "replicas", "lag (records)", "lag (s)"]
    for ax, label in zip(axes, labels, strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
