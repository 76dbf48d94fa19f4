"""The bench's results as a markdown table, JSON and a PNG plot (bench/results/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

# Issue 19's targets (issue 11's, met or not, are in the history of bench/results/).
TARGETS = [
    "windowed >= 0.75x the floor in both modes on every workload",
    "windowed CPU per record, Redis's included, <= 1.4x the floor's",
    "p99 end-to-end: rill <= Quix Streams at every rate both sustain (stateless, windowed, "
    "both modes)",
    "stateless >= 0.9x the floor",
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(_cell(r.get(key)) for _, key in columns) + " |" for r in rows]
    return lines


def _check(row: dict[str, Any]) -> str:
    c = row.get("check", {})
    if not c:
        return "-"
    verdict = "ok" if c["ok"] and c.get("finished", True) else "FAILED"
    detail = f"{c['expected']:,} expected, {c['missing']} missing, {c['wrong']} wrong"
    detail += f", {c['extra']} extra"
    if "astray" in c:
        detail += f", {c['astray']} in another route's topic"
        detail += "".join(f", {t} empty" for t in c["empty_routes"])
    return f"{verdict} ({detail}, {c['duplicates']} dup)"


def _stages(stages: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{name} {v['mean_ms']:g} / {v['p99_le_ms']:g}" for name, v in stages.items())


def markdown(results: dict[str, Any]) -> str:
    """The results page."""
    meta = results["meta"]
    out = ["# rill bench results", ""]
    out.append(
        f"Run {meta['started']} on {meta['cores']} cores; load average before "
        f"{meta['load_before']}, after {meta['load_after']}; {meta['records']:,} records per "
        f"throughput run, {meta.get('repeat', 1)} run(s) per row (the median run's figures, "
        f"the spread of records/s beside them); {meta['duration_s']:.0f} s in all. Broker and "
        "Redis on the same machine."
    )
    out += ["", "## Throughput (records/s of input, each row checked against the reference)", ""]
    for row in results["throughput"]:
        row["checked"] = _check(row)
    cols = [
        ("workload", "workload"),
        ("system", "system"),
        ("records/s", "records_per_s"),
        ("spread", "spread"),
        ("x floor", "to_floor"),
        ("x Quix", "to_quix"),
        ("CPU s / 1M", "cpu_s_per_million"),
        ("CPU x floor", "cpu_to_floor"),
        ("CPU x Quix", "cpu_to_quix"),
        ("Redis CPU s / 1M", "redis_cpu_s_per_million"),
        ("peak RSS MiB", "peak_rss_mb"),
        ("CPU steal %", "steal_pct"),
        ("output check", "checked"),
    ]
    out += _table(results["throughput"], cols)
    out += ["", "## End-to-end latency at the same input rates (demo-like orders)", ""]
    for row in results["latency"]:
        row["where"] = _stages(row.get("stages", {}))
        if "p99_runs" in row:
            row["runs_ms"] = f"{row['p50_runs']} ; {row['p99_runs']}"
    cols = [
        ("input records/s", "rate"),
        ("system", "system"),
        ("results", "results"),
        ("p50 ms", "p50_ms"),
        ("p99 ms", "p99_ms"),
        ("max ms", "max_ms"),
        ("p50 / p99 of each run ms", "runs_ms"),
        ("drain s", "drain_s"),
        ("rill stages: mean / p99 bucket ms", "where"),
        ("CPU steal %", "steal_pct"),
        ("note", "note"),
    ]
    out += _table(results["latency"], cols)
    out += ["", "## Recovery after SIGKILL, and memory at a state size (at-least-once)", ""]
    cols = [
        ("system", "system"),
        ("open windows", "open_windows"),
        ("load s", "load_s"),
        ("RSS MiB", "rss_mb"),
        ("peak RSS MiB", "peak_rss_mb"),
        ("recovery s", "recovery_s"),
        ("replacement RSS MiB", "replacement_rss_mb"),
    ]
    out += _table(results["recovery"], cols)
    out += ["", "## Targets (issue 19)", ""]
    out += [f"- {t}: {results['verdicts'].get(t, '-')}" for t in TARGETS]
    out += ["", "## How each figure is measured", "", *results["method"], ""]
    return "\n".join(out)


def plot(results: dict[str, Any], path: Path) -> None:
    """Bars of records/s per system and workload, and latency p50/p99 per system."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 7), gridspec_kw={"width_ratios": [3, 2]})
    workloads = sorted({r["workload"] for r in results["throughput"]})
    systems = list(dict.fromkeys(r["system"] for r in results["throughput"]))
    width = 0.8 / max(1, len(workloads))
    for i, wl in enumerate(workloads):
        values = [
            next(
                (
                    r.get("records_per_s", 0)
                    for r in results["throughput"]
                    if r["system"] == s and r["workload"] == wl
                ),
                0,
            )
            for s in systems
        ]
        xs = [x + i * width for x in range(len(systems))]
        left.barh(xs, values, height=width, label=wl)
    left.set_yticks([x + width * (len(workloads) - 1) / 2 for x in range(len(systems))], systems)
    left.invert_yaxis()
    left.set_xlabel("input records/s (higher is better)")
    runs = results["meta"].get("repeat", 1)
    left.set_title(f"Throughput, same windowed job, median of {runs} run(s)")
    left.legend(title="workload")
    lat = [r for r in results["latency"] if "p99_ms" in r]
    names = [f"{r['system']} @{r['rate']:,}/s" for r in lat]
    right.barh(
        [x - 0.2 for x in range(len(lat))], [r["p50_ms"] for r in lat], height=0.4, label="p50"
    )
    right.barh(
        [x + 0.2 for x in range(len(lat))], [r["p99_ms"] for r in lat], height=0.4, label="p99"
    )
    right.set_yticks(range(len(lat)), names)
    right.invert_yaxis()
    if lat:  # a run without the latency phase has nothing to put on a log scale
        right.set_xscale("log")
    right.xaxis.set_major_formatter(ticker.ScalarFormatter())
    right.xaxis.set_minor_formatter(ticker.NullFormatter())
    right.set_xlabel("end-to-end ms at the same input rates (log)")
    right.set_title("Latency")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], folder: Path) -> None:
    """results.json, results.md and results.png in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.md").write_text(markdown(results))
    (folder / "results.json").write_text(json.dumps(results, indent=2, default=str))
    plot(results, folder / "results.png")
