"""Throughput of one system over a prefilled input topic, checked against the reference.

The clock is the broker's: every sink topic stamps LogAppendTime. A system's rate is
the input it covered between its first and its last output, over that time (so group
join and start-up are left out alike for every system): for a window result the input
it covers is its count, for a stateless output one record, scaled from the orders
that pass the filter to all input records. CPU is the process's user + system time
(from /proc) over the same interval, per million input records; rill's windowed and
dedupe rows also give the CPU its private redis-server spent. Peak RSS is the process's VmHWM.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import fastavro

from bench.common import ROOT, SinkRecord, Steal, Watch, create_topics, end_offsets, read_topic
from bench.systems import Run, System, route_topics, start
from bench.workloads import SENTINEL, Window, route_of

OUT_SCHEMA = fastavro.parse_schema(
    json.loads((ROOT / "service/schemas/order_out.avsc").read_text())
)
ENRICHED_SCHEMA = fastavro.parse_schema(
    json.loads((ROOT / "bench/order_enriched.avsc").read_text())
)
SUM_TOLERANCE = 1e-9  # relative: float sums differ in the last bits with the order of addition


@dataclass(frozen=True, slots=True)
class Input:
    """A prefilled input topic and what the job must make of it."""

    workload: str
    topic: str
    records: int  # orders, sentinels not counted
    passing: int  # orders that pass the filter
    windows: dict[tuple[str, int], Window]
    order_ids: frozenset[str]
    table: str = ""  # the customers table (a compacted topic): customer id -> {"tier": ...}
    tiers: dict[str, str] | None = None  # order id -> the tier its output must carry
    # The count-window job's reference: (customer, window number) -> window.
    count_windows: dict[tuple[str, int], Window] = field(default_factory=dict)
    # The same orders keyed by order id in one partition (the re-keyed rows' input).
    rekeyed_topic: str = ""


def parse_window(system: System, rec: SinkRecord) -> tuple[tuple[str, int], Window]:
    """(key, window start) and values of one window result, from rill's or Quix's JSON."""
    v = json.loads(rec.value)
    if system.kind == "rill":
        w = Window(v["count"], v["sum_amount"], v["min_amount"], v["max_amount"])
        return (v["key"], v["window_start"]), w
    key = rec.key.decode() if rec.key else ""
    return (key, v["start"]), Window(v["count"], v["sum"], v["min"], v["max"])


def same(a: Window, b: Window) -> bool:
    """Equal counts, minima and maxima; sums equal within SUM_TOLERANCE."""
    close = abs(a.sum - b.sum) <= SUM_TOLERANCE * max(1.0, abs(b.sum))
    return a.count == b.count and a.min == b.min and a.max == b.max and close


def check_windows(
    system: System, recs: list[SinkRecord], ref: dict[tuple[str, int], Window]
) -> dict[str, Any]:
    """Compare a system's window results with the reference, window by window."""
    got: dict[tuple[str, int], Window] = {}
    dup = wrong = extra = 0
    for rec in recs:
        k, w = parse_window(system, rec)
        if k[0] == SENTINEL:
            continue
        if k in got:
            dup += 1
            wrong += not same(got[k], w)
            continue
        got[k] = w
        if k not in ref:
            extra += 1
        elif not same(w, ref[k]):
            wrong += 1
    missing = sum(1 for k in ref if k not in got)
    ok = missing == 0 and wrong == 0 and extra == 0
    return {
        "ok": ok,
        "expected": len(ref),
        "missing": missing,
        "wrong": wrong,
        "extra": extra,
        "duplicates": dup,
    }


def numbered(system: System, recs: list[SinkRecord]) -> tuple[list[SinkRecord], int]:
    """Count-window results with each window's start replaced by its number among its key's
    windows (in start order: rill's is the first record's offset, Quix's its first time),
    and how many results repeated a (key, start) already seen."""
    by_key: dict[str, dict[int, SinkRecord]] = {}
    dup = 0
    for rec in recs:
        (key, start), _ = parse_window(system, rec)
        starts = by_key.setdefault(key, {})
        dup += start in starts
        starts.setdefault(start, rec)
    out = []
    for starts in by_key.values():
        for i, start in enumerate(sorted(starts)):
            out.append((starts[start], i))
    return [_renumbered(system, rec, i) for rec, i in out], dup


def _renumbered(system: System, rec: SinkRecord, i: int) -> SinkRecord:
    v = json.loads(rec.value)
    v["window_start" if system.kind == "rill" else "start"] = i
    return SinkRecord(rec.key, json.dumps(v).encode(), rec.ts_ms, rec.read_at)


def check_count_windows(
    system: System, recs: list[SinkRecord], ref: dict[tuple[str, int], Window]
) -> dict[str, Any]:
    """Each key's full count windows, in order, equal to the reference's."""
    renumbered, dup = numbered(system, recs)
    check = check_windows(system, renumbered, ref)
    check["duplicates"] += dup
    return check


def check_projection(
    recs: list[SinkRecord], order_ids: frozenset[str], tiers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Every order that passes the filter comes out once (duplicates counted, not failed);
    with `tiers`, each carries its customer's tier from the table (else it is wrong)."""
    seen: set[str] = set()
    dup = wrong = 0
    schema = OUT_SCHEMA if tiers is None else ENRICHED_SCHEMA
    for rec in recs:
        buf = io.BytesIO(rec.value)
        buf.seek(5)
        out = fastavro.schemaless_reader(buf, schema, None)
        oid = out["order_id"]
        if oid.startswith("sentinel-"):
            continue
        dup += oid in seen
        seen.add(oid)
        wrong += tiers is not None and out["tier"] != tiers.get(oid)
    missing, extra = len(order_ids - seen), len(seen - order_ids)
    ok = missing == 0 and extra == 0 and wrong == 0
    return {
        "ok": ok,
        "expected": len(order_ids),
        "missing": missing,
        "wrong": wrong,
        "extra": extra,
        "duplicates": dup,
    }


def check_output(
    system: System, inp: Input, by_sink: dict[str, list[SinkRecord]], recs: list[SinkRecord]
) -> dict[str, Any]:
    """The run's output against the reference computed from its input."""
    if system.count:
        check = check_count_windows(system, recs, inp.count_windows)
    elif system.windowed:
        check = check_windows(system, recs, inp.windows)
    else:
        check = check_projection(recs, inp.order_ids, inp.tiers if system.table else None)
    if system.route:
        routes = check_routes(by_sink)
        check.update(routes)
        check["ok"] = check["ok"] and not routes["astray"] and not routes["empty_routes"]
    return check


def check_routes(by_sink: dict[str, list[SinkRecord]]) -> dict[str, Any]:
    """Each routed output is in its customer's topic (bench/route_app.py), and both
    topics received some."""
    topics = list(by_sink)
    astray = 0
    for topic, recs in by_sink.items():
        for rec in recs:
            buf = io.BytesIO(rec.value)
            buf.seek(5)
            out = fastavro.schemaless_reader(buf, OUT_SCHEMA, None)
            if out["order_id"].startswith("sentinel-"):
                continue
            astray += route_of(out["customer_id"], topics) != topic
    empty = [t for t, recs in by_sink.items() if not recs]
    return {"astray": astray, "empty_routes": empty}


def wait_done(
    bootstrap: str, topics: list[str], expected: int, proc: Any, timeout_s: float
) -> bool:
    """Until the sinks hold `expected` records and stopped growing for 3 s (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline and proc.poll() is None:
        n = sum(end_offsets(bootstrap, topic) for topic in topics)
        if n != last:
            last, since = n, time.monotonic()
        elif n >= expected and time.monotonic() - since > 3:
            return True
        time.sleep(0.5)
    return False


def covered(system: System, recs: list[SinkRecord]) -> list[tuple[int, int]]:
    """(append time ms, filtered input records covered) of each output, sentinels left out."""
    out = []
    for rec in recs:
        if system.windowed:
            k, w = parse_window(system, rec)
            if k[0] != SENTINEL:
                out.append((rec.ts_ms, w.count))
        elif rec.key != SENTINEL.encode():
            out.append((rec.ts_ms, 1))
    return sorted(out)


def measure(
    bootstrap: str, system: System, inp: Input, redis: tuple[str, int], timeout_s: float
) -> dict[str, Any]:
    """Run one system over the input; its figures and its correctness check."""
    tag = f"{system.kind}-{system.guarantee[:1]}{int(system.windowed)}{'d' * system.dedupe}"
    name = f"{inp.topic}-{tag}-{uuid.uuid4().hex[:4]}"
    sinks = route_topics(name) if system.route else [name]
    create_topics(bootstrap, sinks, log_append_time=True)
    create_topics(bootstrap, [f"{name}-dlq"])
    expected = len(inp.windows) if system.windowed else len(inp.order_ids)
    if system.count:
        expected = len(inp.count_windows)
    with tempfile.TemporaryDirectory(prefix="bench-state-") as state_dir:
        run = Run(
            bootstrap,
            inp.rekeyed_topic if system.rekey else inp.topic,
            name,
            f"g-{name}",
            redis[0],
            state_dir,
            table=inp.table,
        )
        proc = start(system, run)
        steal = Steal()
        watch = Watch([proc.pid], tree=system.processes > 1).start()
        redis_watch = Watch([redis[1]], every=0.5).start()
        finished = wait_done(bootstrap, sinks, expected, proc, timeout_s)
        watch.stop()
        redis_watch.stop()
        steal_pct = steal.percent()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    by_sink = {sink: read_topic(bootstrap, sink, 60) for sink in sinks}
    recs = sorted((r for rs in by_sink.values() for r in rs), key=lambda r: r.ts_ms)
    check = check_output(system, inp, by_sink, recs)
    check["finished"] = finished
    row: dict[str, Any] = {
        "system": system.name,
        "workload": inp.workload,
        "records": inp.records,
        "check": check,
        "steal_pct": steal_pct,
    }
    points = covered(system, recs)
    if len(points) < 2:
        return row
    t0, t1 = points[0][0], points[-1][0]
    total = sum(c for _, c in points)
    after_first = sum(c for t, c in points if t > t0)
    share = after_first / total
    seconds = max((t1 - t0) / 1000, 1e-3)
    input_records = inp.records * share
    cpu = watch.cpu_at(t1 / 1000) - watch.cpu_at(t0 / 1000)
    redis_cpu = redis_watch.cpu_at(t1 / 1000) - redis_watch.cpu_at(t0 / 1000)
    row.update(
        {
            "records_per_s": round(input_records / seconds),
            "seconds": round(seconds, 2),
            "cpu_s_per_million": round(cpu / input_records * 1e6, 1),
            "peak_rss_mb": round(watch.peak_mb, 1),
        }
    )
    if system.kind == "rill" and (system.windowed or system.dedupe):
        row["redis_cpu_s_per_million"] = round(redis_cpu / input_records * 1e6, 1)
    row.update(steady(points, inp.records, watch))
    return row


def steady(points: list[tuple[int, int]], records: int, watch: Watch) -> dict[str, Any]:
    """Records/s and CPU per record over the middle half of the output (from 25 % to 75 %
    of the input covered): start-up, a group rebalance when a second member joins (two
    processes) and the tail are outside it."""
    total = sum(c for _, c in points)
    marks: list[int] = []
    done = 0
    for t, c in points:
        done += c
        while len(marks) < 2 and done >= total * (0.25, 0.75)[len(marks)]:
            marks.append(t)
    if len(marks) < 2 or marks[1] <= marks[0]:
        return {}
    t0, t1 = marks
    covered_share = sum(c for t, c in points if t0 < t <= t1) / total
    seconds = (t1 - t0) / 1000
    input_records = records * covered_share
    cpu = watch.cpu_at(t1 / 1000) - watch.cpu_at(t0 / 1000)
    return {
        "steady_records_per_s": round(input_records / seconds),
        "steady_cpu_s_per_million": round(cpu / input_records * 1e6, 1),
    }
