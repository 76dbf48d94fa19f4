"""The closed loop's record: its trace as CSV and its figure (input, lag, replicas)."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.k8s.loop import LoopResult


def write_trace(result: LoopResult, path: Path) -> None:
    """The samples as CSV, with the planned replicas at each sample's second."""
    planned = dict((round(t), r) for t, r in result.planned)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["t_s", "input_rps", "replicas", "workers", "lag", "planned_replicas"])
        for s in result.samples:
            writer.writerow(
                [
                    f"{s.t_s:.1f}",
                    s.input_rps,
                    s.replicas,
                    s.workers,
                    s.lag,
                    planned.get(round(s.t_s), ""),
                ]
            )


def write_plot(result: LoopResult, path: Path) -> None:
    """Input rate, measured lag, and replicas measured vs planned, over time."""
    import matplotlib  # noqa: PLC0415 - the plot is optional (rill[plan])

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    t = [s.t_s for s in result.samples]
    fig, (rate_ax, lag_ax, rep_ax) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    rate_ax.plot(t, [s.input_rps for s in result.samples], drawstyle="steps-post")
    rate_ax.set_ylabel("input (records/s)")
    lag_ax.plot(t, [s.lag for s in result.samples], color="tab:red")
    lag_ax.axhline(result.config.lag_threshold, color="grey", linestyle=":", label="lagThreshold")
    lag_ax.set_ylabel("group lag (records)")
    lag_ax.legend(loc="upper right")
    rep_ax.plot(
        t,
        [s.replicas for s in result.samples],
        drawstyle="steps-post",
        label="measured (Deployment)",
    )
    rep_ax.plot(
        t,
        [s.workers for s in result.samples],
        drawstyle="steps-post",
        linestyle="--",
        label="rill processes running",
    )
    rep_ax.plot(
        *zip(*result.planned, strict=True), drawstyle="steps-post", linestyle=":", label="rill plan"
    )
    rep_ax.axhline(result.config.partitions, color="grey", linestyle=":", label="partitions")
    rep_ax.set_ylabel("replicas")
    rep_ax.set_xlabel("seconds from the start of the ramp")
    rep_ax.legend(loc="lower center", ncol=2)
    fig.suptitle(
        f"closed loop, mode {result.config.mode}: {result.produced} records exactly once, "
        f"{result.per_replica_rps:.0f} records/s per worker"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
