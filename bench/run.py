"""`make bench`: the floor, rill and Quix Streams side by side, in one run.

Phases (each system a process of its own, on the same broker, a private redis-server):

1. throughput: the floor, rill stateless, rill windowed at-least-once / exactly-once,
   Quix Streams windowed at-least-once / exactly-once, over the same prefilled topics
   (demo, skewed and manykeys workloads, 8 partitions); each row's output is checked against a
   reference computed from the input before its figure counts.
2. latency: p50 / p99 end-to-end of every system at the same input rates: 1,000 and
   5,000 records/s and half of Quix Streams' measured maximum (demo-like orders),
   stateless and windowed in both modes; where rill's p99 comes from (its stage
   histograms).
3. recovery: SIGKILL with 1,000 and 1,000,000 open windows, time until the replacement
   processes new records (rill, and Quix with its changelog restore).
4. memory: rill worker RSS at 100,000 open windows; under a backlog (the throughput
   rows' peak RSS, draining the whole prefilled topic). bench/rss_load.py measures RSS
   while Redis is stopped under load.

Results: bench/results/results.md, results.json, results.png. Nothing is asserted.

Usage: KAFKA_BOOTSTRAP_SERVERS=... python bench/run.py [--records N] [--quick] ...
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import latency, recovery, report, throughput  # noqa: E402 - after the path set-up
from bench import workloads as wl  # noqa: E402
from bench.common import CREATED, create_topics, delete_topics, machine_load, private_redis  # noqa: E402
from bench.systems import (  # noqa: E402
    ALL,
    COUNT_WINDOW,
    FLOOR,
    QUIX_ALO,
    QUIX_COUNT,
    QUIX_EOS,
    QUIX_REKEY,
    QUIX_STATELESS,
    RILL_ALO,
    RILL_ALO_IN_TURN,
    RILL_COUNT,
    RILL_ENRICHED,
    RILL_EOS,
    RILL_REKEY,
    RILL_STATELESS,
    TAGS,
    System,
    stop_all,
)

METHOD = [
    "- Every system runs as its own process on the same interpreter and librdkafka; the input "
    "topics are prefilled (8 partitions, Confluent-wire Avro, Kafka timestamp = `created_at`).",
    "- Job: drop cancelled orders, 10 s tumbling windows per customer, grace 2 s, "
    "count / sum / min / max of `amount`, JSON out. rill: its built-in window step; Quix: "
    "`tumbling_window(...).agg(...).final(closing_strategy='partition')` (bench/quix_job.py).",
    "- Workloads: `demo` (20 customers, about 1.5 records per key and window) and `skewed` "
    "(1,000 customers, Zipf-like weights 1/rank^1.1, about 5,000 records per 10 s window); "
    "`manykeys` (50,000 customers, the same law, out of event-time order by up to 1.5 s, "
    "within the grace: most keys have one record per window).",
    "- Count windows (rill `count_tumbling`, Quix `tumbling_count_window`): the windowed job "
    "with windows of 100 orders per customer, emitted when full; checked window by window, "
    "each key's windows in order (not run on `manykeys`, whose times go back).",
    "- Re-keyed rows (rill `RILL_GROUP_BY=customer_id`, Quix `group_by('customer_id')`): the "
    "windowed job over the same orders keyed by order id in one partition, windows per "
    "customer through each system's repartition topic (one partition, so the closing "
    "sentinel comes after every order there too); checked against the same reference.",
    "- Stateless job (rill `RILL_WINDOW_TYPE=none`, Quix `bench/quix_job.py --stateless`): "
    "drop cancelled orders, keep five fields, rename amount to total, Confluent-wire Avro out.",
    "- Enrichment (`rill stateless + table join`): the stateless job with each order joined "
    "(inner, merged) with its customer's `tier` from a compacted JSON table holding the "
    "workload's customers and 10,000 others, each written twice (the second value wins); the "
    "output check also compares every order's tier with the table's.",
    "- Records/s: sinks stamp LogAppendTime; the input a system covered between its first and "
    "last output (window counts, scaled to all input records), over that time. Start-up and "
    "group join are outside the interval for every system alike.",
    "- CPU s / 1M: user + system time of the process (/proc) over the same interval, per "
    "million input records; Redis CPU: the private redis-server's, for rill's windowed rows.",
    "- x floor / x Quix: records/s over the floor's, and over Quix Streams' in the same mode "
    "and workload. CPU x floor: the floor's CPU per record over the row's (1.0: as cheap as the "
    "floor); CPU x Quix: Quix's CPU per record over rill's. On a loaded machine a process gets "
    "a share of a core, so records/s move with the load and CPU per record much less.",
    "- Peak RSS: the process's VmHWM while it drains the whole prefilled topic (a backlog).",
    "- CPU steal %: the share of the machine's CPU time the hypervisor took during the row "
    "(/proc/stat). This machine is a shared VM: with steal above a few percent a row's "
    "records/s fall and its latencies grow for reasons outside the system under test.",
    "- Output check: every window (key, start) compared with the reference computed from the "
    "input: counts, minima, maxima equal; sums within 1e-9 relative (addition order). Every "
    "record is on time (event times rise with the offset; a sentinel 60 s later per partition "
    "closes every window in both systems), so no lateness rule drops anything and both must "
    "emit exactly the reference. Stateless rows: every passing order_id out once.",
    "- Dedupe rows (issue 17): the stateless job with RILL_DEDUPE_FIELD=order_id (window 1 h). "
    "Every order_id is distinct, so the figure is the cost of de-duplication itself: one "
    "pipelined read of the batch's ids, the ids written by the apply script with the batch's "
    "outputs kept in the outbox (the exactly-once protocol), against the floor and the plain "
    "stateless row. Their check: every passing order_id out once (none dropped).",
    "- Latency: every system at the same input rates (1,000 and 5,000 records/s and half of "
    "Quix Streams' at-least-once maximum on the demo workload); a system is not run at a rate "
    "above its own measured maximum (it could not sustain it; the row says so). "
    "Demo-like orders over 200 customers at a fixed rate, CreateTime = "
    "`created_at` = wall clock at produce (linger 5 ms). Windowed: the same job with 1 s "
    "windows (about 25 closings per key in a 30 s run, so p99 is not two closing moments), "
    "sink LogAppendTime - CreateTime of the record that closes the window (first of its "
    "partition at >= end + grace). Stateless: sink - source per record. Where rill's p99 "
    "comes from: its histograms at the end of the row (batch = poll to commit, apply = the "
    "Redis round trip, delivery = flush or transaction, commit = offsets), mean and the upper "
    "bound of the p99 bucket, beside its fixed waits (poll timeout 5 ms, linger 20 ms).",
    "- Recovery: 1 day windows emitting every update, N distinct keys all open; after the "
    "group committed everything, SIGKILL and start the replacement at once; recovery = sink "
    "append time of the first probe record's result - kill time. It includes session.timeout.ms "
    "(set alike for both), start-up, join and Quix's changelog restore.",
]


def prepare(
    bootstrap: str, workload: str, records: int, table: bool = False, rekey: bool = False
) -> throughput.Input:
    """Create and fill a workload's input topic (and the customers table, for the
    enrichment row; the same orders keyed by order id in one partition, for the re-keyed
    rows)."""
    rows = wl.orders(workload, records)
    topic = f"bench-{workload}-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic])
    wl.produce(bootstrap, topic, rows)
    ids = frozenset(o["order_id"] for o in rows if o["status"] != "cancelled")
    windows, counted = wl.reference(rows), wl.count_reference(rows, COUNT_WINDOW)
    by_order = ""
    if rekey:
        by_order = f"{topic}-by-order"
        create_topics(bootstrap, [by_order], partitions=1)
        wl.produce(bootstrap, by_order, rows, by_order=True)
    name, tiers = "", None
    if table:
        name, tiers = wl.customers_table(bootstrap, f"{topic}-customers", rows)
        CREATED.append(name)
    return throughput.Input(
        workload, topic, records, len(ids), windows, ids, name, tiers, counted, by_order
    )


def ratios(rows: list[dict[str, Any]]) -> None:
    """Add x floor and x Quix to each throughput row."""
    rivals = {
        RILL_ALO.name: QUIX_ALO.name,
        RILL_ALO_IN_TURN.name: QUIX_ALO.name,
        RILL_EOS.name: QUIX_EOS.name,
        RILL_STATELESS.name: QUIX_STATELESS.name,
        RILL_COUNT.name: QUIX_COUNT.name,
        RILL_REKEY.name: QUIX_REKEY.name,
    }
    for row in rows:
        same = {
            r["system"]: r.get("records_per_s") for r in rows if r["workload"] == row["workload"]
        }
        rps, floor_rps = row.get("records_per_s"), same.get(FLOOR.name)
        if rps and floor_rps and row["system"] != FLOOR.name:
            row["to_floor"] = round(rps / floor_rps, 3)
        rival = same.get(rivals.get(row["system"], ""))
        if rps and rival:
            row["to_quix"] = round(rps / rival, 3)
        # The same ratios in CPU per record: steadier than records/s on a loaded machine.
        cpu = {
            r["system"]: r.get("cpu_s_per_million")
            for r in rows
            if r["workload"] == row["workload"]
        }
        mine, floor_cpu = cpu.get(row["system"]), cpu.get(FLOOR.name)
        if mine and floor_cpu and row["system"] != FLOOR.name:
            row["cpu_to_floor"] = round(floor_cpu / mine, 3)
        rival_cpu = cpu.get(rivals.get(row["system"], ""))
        if mine and rival_cpu:
            row["cpu_to_quix"] = round(rival_cpu / mine, 3)


def verdicts(res: dict[str, Any]) -> dict[str, str]:
    """Each target of issue 19, met or missed, with the figures."""
    by = {(r["workload"], r["system"]): r for r in res["throughput"]}
    out: dict[str, str] = {}
    windowed = [r for (_, s), r in by.items() if s in (RILL_ALO.name, RILL_EOS.name)]
    if windowed:
        figures = [f"{r['workload']} {_mode(r)} {r.get('to_floor')}x" for r in windowed]
        met = all((r.get("to_floor") or 0) >= 0.75 for r in windowed)
        out[report.TARGETS[0]] = f"{'met' if met else 'MISSED'}: " + ", ".join(figures)
        cpu = []
        for r in windowed:
            floor = by.get((r["workload"], FLOOR.name), {}).get("cpu_s_per_million")
            own = r.get("cpu_s_per_million")
            if floor and own is not None:
                ratio = (own + r.get("redis_cpu_s_per_million", 0)) / floor
                cpu.append((f"{r['workload']} {_mode(r)}", round(ratio, 2)))
        if cpu:
            met = all(x <= 1.4 for _, x in cpu)
            text = ", ".join(f"{n} {x}x" for n, x in cpu)
            out[report.TARGETS[1]] = f"{'met' if met else 'MISSED'}: {text}"
    rivals = {RILL_STATELESS.name: QUIX_STATELESS.name, RILL_ALO.name: QUIX_ALO.name}
    rivals[RILL_EOS.name] = QUIX_EOS.name
    lat = {(r["system"], r["rate"]): r for r in res["latency"]}
    pairs = []
    for (system, rate), row in lat.items():
        rival = lat.get((rivals.get(system, ""), rate), {})
        if "p99_ms" in row and "p99_ms" in rival:
            pairs.append((system, rate, row["p99_ms"], rival["p99_ms"]))
    if pairs:
        met = all(own <= theirs for _, _, own, theirs in pairs)
        text = ", ".join(
            f"{s.removeprefix('rill ')} @{rate:,}/s {own:.0f} vs {theirs:.0f} ms"
            for s, rate, own, theirs in pairs
        )
        out[report.TARGETS[2]] = f"{'met' if met else 'MISSED'}: {text}"
    stateless = [r for (_, s), r in by.items() if s == RILL_STATELESS.name and r.get("to_floor")]
    if stateless:
        met = all(r["to_floor"] >= 0.9 for r in stateless)
        text = ", ".join(f"{r['workload']} {r['to_floor']}x" for r in stateless)
        out[report.TARGETS[3]] = f"{'met' if met else 'MISSED'}: {text}"
    return out


def _mode(row: dict[str, Any]) -> str:
    return "exactly-once" if row["system"] == RILL_EOS.name else "at-least-once"


def merged(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of several runs of a system over the same input: the figures of the median
    run by records/s, the spread of records/s, and the worst output check."""
    timed = sorted((s for s in samples if s.get("records_per_s")), key=lambda s: s["records_per_s"])
    row = dict(timed[(len(timed) - 1) // 2] if timed else samples[0])
    bad = [s for s in samples if not (s["check"]["ok"] and s["check"].get("finished", True))]
    if bad:
        row["check"] = bad[0]["check"]
    row["runs"] = len(samples)
    if timed:
        row["samples"] = [s["records_per_s"] for s in samples if s.get("records_per_s")]
        low, high = timed[0]["records_per_s"], timed[-1]["records_per_s"]
        row["spread"] = f"{low:,}-{high:,}"
    return row


def chosen(args: argparse.Namespace) -> list[System]:
    """The systems of the throughput rows (`--systems`, in the bench's order)."""
    if args.systems == "all":
        return ALL
    names = args.systems.split(",")
    unknown = [n for n in names if n not in TAGS]
    if unknown:
        raise SystemExit(f"--systems: unknown {unknown}; known: {', '.join(TAGS)}")
    return [s for s in ALL if s in {TAGS[n] for n in names}]


def run_throughput(args: argparse.Namespace, bootstrap: str, redis: tuple[str, int]) -> list[Any]:
    """Each chosen system over each workload, `--repeat` times in turn (so a slow spell
    of the machine falls on every system alike); one merged row per system."""
    rows = []
    systems = chosen(args)
    for workload in args.workloads.split(","):
        rekey = any(s.rekey for s in systems)
        inp = prepare(bootstrap, workload, args.records, RILL_ENRICHED in systems, rekey)
        # Count windows need each key's records in time order to number Quix's windows.
        here = [s for s in systems if not (s.count and workload == "manykeys")]
        samples: dict[str, list[dict[str, Any]]] = {s.name: [] for s in here}
        for _ in range(args.repeat):
            for system in here:
                row = throughput.measure(bootstrap, system, inp, redis, 600)
                print(row, flush=True)
                samples[system.name].append(row)
        rows += [merged(samples[s.name]) for s in here]
    return rows


LATENCY_RATES = (1_000, 5_000)
LATENCY_SYSTEMS = (RILL_STATELESS, QUIX_STATELESS, RILL_ALO, QUIX_ALO, RILL_EOS, QUIX_EOS)


def latency_rates(throughput_rows: list[dict[str, Any]]) -> list[int]:
    """1,000 and 5,000 records/s, and half of Quix Streams' at-least-once maximum (demo)."""
    quix = [
        r["records_per_s"]
        for r in throughput_rows
        if r["system"] == QUIX_ALO.name and r["workload"] == "demo" and r.get("records_per_s")
    ]
    return sorted({*LATENCY_RATES, *(q // 2 for q in quix[:1])})


def run_latency(
    args: argparse.Namespace,
    bootstrap: str,
    redis: tuple[str, int],
    throughput_rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every latency system at every rate it sustains (its measured maximum, demo job)."""
    most = {r["system"]: r.get("records_per_s") for r in throughput_rows if r["workload"] == "demo"}
    rows = []
    for rate in latency_rates(throughput_rows):
        for system in LATENCY_SYSTEMS:
            if system not in chosen(args):
                continue
            top = most.get(system.name)
            if top is not None and rate > top:
                row = {"system": system.name, "rate": rate, "note": f"above its maximum {top:,}"}
            else:
                row = latency_row(
                    [
                        latency.measure(bootstrap, system, rate, args.latency_seconds, redis)
                        for _ in range(args.latency_repeat)
                    ]
                )
            print(row, flush=True)
            rows.append(row)
    return rows


def latency_row(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One latency row of several runs at one rate: the figures of the run with the median
    p99 (a run without results counts as the slowest), and every run's p50 and p99."""
    ranked = sorted(samples, key=lambda s: s.get("p99_ms", float("inf")))
    row = dict(ranked[(len(ranked) - 1) // 2])
    row["runs"] = len(samples)
    if len(samples) > 1:
        row["p50_runs"], row["p99_runs"] = _each(samples, "p50_ms"), _each(samples, "p99_ms")
    return row


def _each(samples: list[dict[str, Any]], figure: str) -> str:
    """One figure of every run, in run order ('-' for a run without results)."""
    return " / ".join(str(round(s[figure])) if figure in s else "-" for s in samples)


def run_phases(args: argparse.Namespace, bootstrap: str, res: dict[str, Any]) -> None:
    """Run the chosen phases, adding their rows to res."""
    phases = set(args.phases.split(","))
    with private_redis() as redis:
        if "throughput" in phases:
            res["throughput"] += run_throughput(args, bootstrap, redis)
            ratios(res["throughput"])  # the latency phase's rates need them
        if "latency" in phases:
            res["latency"] += run_latency(args, bootstrap, redis, res["throughput"])
        if "recovery" in phases:
            for size in (int(s) for s in args.recovery_sizes.split(",")):
                for system in (RILL_ALO, QUIX_ALO):
                    row = recovery.measure(bootstrap, system, size, redis, args.session_timeout_ms)
                    print(row, flush=True)
                    res["recovery"].append(row)
        if "memory" in phases:
            row = recovery.measure(
                bootstrap,
                RILL_ALO,
                args.memory_windows,
                redis,
                args.session_timeout_ms,
                kill=False,
            )
            print(row, flush=True)
            res["recovery"].append(row)


def main() -> None:
    """Run the phases and write bench/results/."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000, help="per throughput row")
    parser.add_argument("--workloads", default="demo,skewed,manykeys")
    parser.add_argument("--phases", default="throughput,latency,recovery,memory")
    parser.add_argument("--systems", default="all", help=f"comma-separated: {', '.join(TAGS)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput row")
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument(
        "--latency-repeat", type=int, default=3, help="runs per latency row (the median p99's)"
    )
    parser.add_argument("--recovery-sizes", default="1000,1000000")
    parser.add_argument("--memory-windows", type=int, default=100_000)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the harness")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--rewrite", help="only re-render the results from this results.json")
    args = parser.parse_args()
    if args.rewrite:
        res = json.loads(Path(args.rewrite).read_text())
        res["method"] = METHOD
        finish(res, Path(args.out))
        return
    if args.quick:
        args.records, args.latency_seconds, args.repeat = 20_000, 20, 1
        args.latency_repeat = 1
        args.recovery_sizes, args.memory_windows = "1000,20000", 20_000
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    atexit.register(stop_all)
    t0 = time.monotonic()
    res: dict[str, Any] = {"throughput": [], "latency": [], "recovery": [], "method": METHOD}
    res["meta"] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "load_before": [round(x, 2) for x in machine_load()],
        "records": args.records,
        "repeat": args.repeat,
        "session_timeout_ms": args.session_timeout_ms,
    }
    try:
        run_phases(args, bootstrap, res)
    finally:
        stop_all()
        delete_topics(bootstrap, CREATED)
    res["meta"]["load_after"] = [round(x, 2) for x in machine_load()]
    res["meta"]["duration_s"] = time.monotonic() - t0
    finish(res, Path(args.out))


def finish(res: dict[str, Any], out: Path) -> None:
    """Ratios, verdicts, and the results files."""
    ratios(res["throughput"])
    res["verdicts"] = verdicts(res)
    report.write(res, out)
    print(report.markdown(res))


if __name__ == "__main__":
    main()
