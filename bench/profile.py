"""`make profile`: one windowed rill worker under py-spy, draining a prefilled backlog.

For each workload (demo, skewed) and mode (at-least-once, exactly-once): the input topic
is filled first (bench/workloads.py, as `make bench` does), then ONE worker process
(`python -m service run`) starts on it. Two py-spy samplers attach to it once its group
has committed a first batch (start-up and group join are left out), both with
`--rate 200 --subprocesses --idle` (idle samples kept: a wait on Redis or on the broker
is wall time the loop spends too):

- `--format flamegraph`: bench/results/flame-windowed-{alo,eos}[-skewed].svg;
- `--format speedscope --function`: the samples this script reads for profile.md.

Both stop (SIGINT, py-spy writes its file) once the group's committed offsets reach the
end of the input: the backlog is consumed. The sink is then read back and checked
against the reference windows, so a profile of a wrong run is flagged.

profile.md gives, per run, the main thread's samples split into where the time goes
(librdkafka, decode, steps, aggregator, Redis, encode, transactions, logging/metrics,
other), each sample charged to the innermost frame that belongs to a category, and the
top functions by own and by cumulative samples.

Usage: KAFKA_BOOTSTRAP_SERVERS=... python bench/profile.py [--records N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, bench/ would come first on the path and this file would shadow the
# standard library's `profile` (cProfile imports it): the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402 - after the path set-up

from bench import throughput  # noqa: E402
from bench import workloads as wl  # noqa: E402
from bench.common import (  # noqa: E402
    CREATED,
    PARTITIONS,
    Watch,
    create_topics,
    delete_topics,
    machine_load,
    private_redis,
    read_topic,
)
from bench.systems import RILL_ALO, RILL_EOS, Run, System, rill_env  # noqa: E402

PY_SPY = str(Path(sys.executable).parent / "py-spy")
SAMPLER = ["--rate", "200", "--subprocesses", "--idle"]
WORK = ROOT / ".rill" / "profile"  # speedscope files (for speedscope.app) and profile.json
MARKER = "<!-- written by hand below: make profile keeps it -->"
MODES = {"alo": RILL_ALO, "eos": RILL_EOS}

# Where the time goes. A sample is charged to the innermost frame of its stack that one
# of these rules claims (file path fragment, function names or None for any); frames no
# rule claims (stdlib, dataclass __init__, service/processing/windows.py helpers, ...)
# pass the sample on to their callers. A C call (librdkafka, hiredis, fastavro's
# Cython, orjson) has no frame of its own: its time is its Python caller's.
CATEGORIES = {
    "a": "librdkafka consume / produce / offsets",
    "b": "decode (fastavro, serdes)",
    "c": "process_batch / steps",
    "d": "window aggregator (prepare / take)",
    "e": "Redis round trip (apply pipeline, redis-py, hiredis, state codec)",
    "f": "encode (emit, window results to JSON)",
    "g": "transactions (EOS: begin, send offsets, commit)",
    "h": "logging / metrics / tracing / report",
    "i": "other (loop, gates, back-pressure, guarantee bookkeeping)",
}
RULES: list[tuple[str, str, frozenset[str] | None]] = [
    ("service/kafka/producer.py", "g", frozenset({"transaction", "_commit", "init_transactions"})),
    ("service/kafka/", "a", None),
    ("confluent_kafka/", "a", None),
    ("service/serde/", "b", frozenset({"decode", "read_avro", "skip_message_indexes"})),
    ("service/serde/", "f", None),
    ("service/state/", "e", None),
    ("redis/", "e", None),
    ("hiredis", "e", None),
    ("service/processing/aggregator.py", "d", None),
    ("service/runtime/window_engine.py", "d", None),
    ("service/processing/batch.py", "f", frozenset({"emit", "_renamed", "encode_key"})),
    ("service/processing/windows.py", "f", frozenset({"as_record"})),
    ("service/processing/batch.py", "c", None),
    ("service/processing/steps.py", "c", None),
    ("service/pipeline.py", "c", None),
    ("service/observability/", "h", None),
    ("service/runtime/report.py", "h", None),
    ("structlog/", "h", None),
    ("prometheus_client/", "h", None),
    ("opentelemetry/", "h", None),
    ("logging/", "h", None),
    ("service/runtime/guarantee.py", "i", None),
    ("service/runtime/ledger.py", "i", None),
]


# Functions the ranked changes in profile.md name: their cumulative share of each run
# (a path "outer>inner": samples where inner runs under outer).
FOCUS = [
    "_HiredisParser.read_from_socket",
    "decode_rows",
    "Aggregator.results_of",
    "event_time",
    "to_window>event_time",
    "Aggregator._take>event_time",
    "datetime_ms",
    "BatchProducer.transaction",
    "BatchProducer._commit",
    "GroupConsumer.group_metadata",
    "BatchProducer.flush",
    "PartitionBatch.add",
    "record_components",
    "__init__",
    "to_in_record",
    "PartitionBatch.as_deltas",
    "apply_argv",
    "HiredisRespSerializer.pack",
    "Report.batch",
    "read_avro",
    "process_batch",
]


def share(prof: Profile, path: str) -> float:
    """The fraction of samples whose stack holds `path` ("outer>inner": inner under outer).

    A bare `__init__` counts the dataclass constructors (frames of file `<string>`).
    """
    outer, _, inner = path.rpartition(">")
    hits = 0
    for stack in prof.stacks:
        if inner == "__init__":
            hits += any(n.endswith("__init__") and f == "<string>" for n, f in stack)
            continue
        names = [n for n, _ in stack]
        if inner in names and (not outer or outer in names[: names.index(inner)]):
            hits += 1
    return hits / (len(prof.stacks) or 1)


def category(stack: list[tuple[str, str]]) -> str:
    """The category of one sample: its innermost frame that a rule claims (else other).

    Args:
        stack: (function, file) frames, outermost first; py-spy names a function by its
            qualified name (`BatchProducer.transaction`), each dotted part is matched.

    Returns:
        One of CATEGORIES' keys.
    """
    for name, path in reversed(stack):
        for fragment, cat, names in RULES:
            if fragment in path and (names is None or not names.isdisjoint(name.split("."))):
                return cat
    return "i"


def frame_label(name: str, path: str, line: int) -> str:
    """A function as the tables show it: `name (path:def line)`, path from the package."""
    short = re.sub(r"^.*?/(site-packages|lib/python3\.\d+)/", "", path)
    short = short.replace(str(ROOT) + "/", "")
    return f"{name} ({short}:{line})"


@dataclass
class Profile:
    """The main thread's samples of one run (each 1/rate s), as (function, file) stacks."""

    stacks: list[list[tuple[str, str]]] = field(default_factory=list)
    labels: list[list[str]] = field(default_factory=list)
    threads: dict[str, int] = field(default_factory=dict)  # samples per Python thread
    seconds: float = 0.0  # of the busy interval


def load_speedscope(path: Path) -> Profile:
    """Read a py-spy speedscope file; keep the worker's main thread (the loop).

    Samples come in time order: only those from the first `Worker._process` to the last
    are kept, so start-up and the idle tail after the backlog are left out.
    """
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    out = Profile(threads={p["name"]: len(p["samples"]) for p in doc["profiles"]})
    main = max(doc["profiles"], key=lambda p: ("MainThread" in p["name"], len(p["samples"])))
    samples = list(zip(main["samples"], main["weights"], strict=True))
    busy = [
        n
        for n, (sample, _) in enumerate(samples)
        if any(frames[i]["name"] == "Worker._process" for i in sample)
    ]
    if busy:
        samples = samples[busy[0] : busy[-1] + 1]
    for sample, weight in samples:
        out.stacks.append([(frames[i]["name"], frames[i].get("file") or "") for i in sample])
        out.labels.append(
            [
                frame_label(frames[i]["name"], frames[i].get("file") or "", frames[i]["line"])
                for i in sample
            ]
        )
        out.seconds += float(weight)
    return out


def analyse(prof: Profile, top: int = 15) -> dict[str, Any]:
    """Category fractions and the top functions by own and by cumulative samples.

    Own: the sample's innermost Python frame (with the C it calls). Cumulative: every
    function on the sample's stack below `Worker._loop`, once per sample.
    """
    total = len(prof.stacks) or 1
    cats = Counter(category(s) for s in prof.stacks)
    own = Counter(labels[-1] for labels in prof.labels if labels)
    cum: Counter[str] = Counter()
    for stack, labels in zip(prof.stacks, prof.labels, strict=True):
        # Only the frames inside the loop: the ones above it are in every sample.
        loop = next((n for n, (name, _) in enumerate(stack) if name == "Worker._loop"), -1)
        cum.update(set(labels[loop + 1 :]))
    return {
        "samples": len(prof.stacks),
        "busy_s": round(prof.seconds, 2),
        "threads": prof.threads,
        "categories": {k: round(cats.get(k, 0) / total, 4) for k in CATEGORIES},
        "own": [(f, round(n / total, 4)) for f, n in own.most_common(top)],
        "cumulative": [(f, round(n / total, 4)) for f, n in cum.most_common(top)],
        "focus": {f: round(share(prof, f), 4) for f in FOCUS},
    }


def committed_and_end(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """Sum over the input's partitions of the group's committed offsets and of the ends."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        done = sum(max(tp.offset, 0) for tp in consumer.committed(tps, 10))
        end = sum(consumer.get_watermark_offsets(tp, 10)[1] for tp in tps)
        return done, end
    finally:
        consumer.close()


def consumed(bootstrap: str, group: str, topic: str) -> bool:
    """Has the group committed every input record (the backlog is consumed)?"""
    done, end = committed_and_end(bootstrap, group, topic)
    return done >= end > 0


def wait_for(check: Any, timeout_s: float, every: float = 0.25) -> bool:
    """Poll `check()` until it is true or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the broker may not know the group yet
            if check():
                return True
        time.sleep(every)
    return False


def sampler(pid: int, fmt: str, out: Path) -> subprocess.Popen[bytes]:
    """A py-spy sampler attached to `pid`, writing `fmt` to `out` when it stops."""
    args = [PY_SPY, "record", "--pid", str(pid), *SAMPLER, "--format", fmt, "-o", str(out)]
    if fmt == "speedscope":
        args.append("--function")  # one row per function, not per line
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_run(
    bootstrap: str,
    system: System,
    inp: throughput.Input,
    redis: tuple[str, int],
    svg: Path,
    work: Path,
    timeout_s: float,
) -> dict[str, Any]:
    """Drain the input with one worker under two py-spy samplers; figures and the check."""
    name = f"{inp.topic}-prof-{system.guarantee[:1]}-{uuid.uuid4().hex[:4]}"
    create_topics(bootstrap, [name], log_append_time=True)
    create_topics(bootstrap, [f"{name}-dlq"])
    group = f"g-{name}"
    row: dict[str, Any] = {"system": system.name, "workload": inp.workload, "flame": svg.stem}
    with tempfile.TemporaryDirectory(prefix="rill-profile-") as tmp:
        run = Run(bootstrap, inp.topic, name, group, redis[0], tmp)
        worker = subprocess.Popen(
            [sys.executable, "-m", "service", "run"], env=rill_env(system, run), cwd=ROOT
        )
        try:
            started = wait_for(lambda: committed_and_end(bootstrap, group, inp.topic)[0] > 0, 120)
            scope = work / f"{svg.stem}.speedscope.json"
            samplers = [
                sampler(worker.pid, "flamegraph", svg),
                sampler(worker.pid, "speedscope", scope),
            ]
            watch = Watch([worker.pid], every=0.5).start()
            redis_watch = Watch([redis[1]], every=0.5).start()
            t0 = time.monotonic()
            done = started and wait_for(lambda: consumed(bootstrap, group, inp.topic), timeout_s)
            wall = time.monotonic() - t0
            watch.stop()
            redis_watch.stop()
            for s in samplers:
                s.send_signal(signal.SIGINT)
            for s in samplers:
                _, err = s.communicate(timeout=120)
                if s.returncode:
                    print(err.decode(errors="replace"), file=sys.stderr)
            row["analysis"] = analyse(load_speedscope(scope)) if scope.exists() else None
            if svg.exists():  # py-spy writes the command lines in: paths from the repository
                svg.write_text(svg.read_text().replace(f"{ROOT}/", ""))
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    recs = read_topic(bootstrap, name, 60)
    row["check"] = throughput.check_windows(system, recs, inp.windows)
    row["check"]["finished"] = done
    cpu = watch.samples[-1][1] - watch.samples[0][1]
    redis_cpu = redis_watch.samples[-1][1] - redis_watch.samples[0][1]
    row.update(
        {
            "profiled_s": round(wall, 1),
            "worker_cpu_cores": round(cpu / wall, 2) if wall else None,
            "redis_cpu_cores": round(redis_cpu / wall, 2) if wall else None,
        }
    )
    return row


def prepare(bootstrap: str, workload: str, records: int) -> throughput.Input:
    """Create and fill a workload's input topic (the same data `make bench` uses)."""
    rows = wl.orders(workload, records)
    topic = f"profile-{workload}-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic])
    wl.produce(bootstrap, topic, rows)
    ids = frozenset(o["order_id"] for o in rows if o["status"] != "cancelled")
    return throughput.Input(workload, topic, records, len(ids), wl.reference(rows), ids)


def pct(x: float) -> str:
    """A fraction as a percentage."""
    return f"{100 * x:.1f} %"


def markdown(res: dict[str, Any]) -> str:
    """profile.md from the runs' figures."""
    meta = res["meta"]
    runs = res["runs"]
    lines = [
        "# Where a windowed rill worker spends its time",
        "",
        "Generated by `make profile` (bench/profile.py); the ranked changes at the end are "
        "written by hand from these figures.",
        "",
        f"- Run {meta['started']}, {meta['cores']} cores, {meta['records']:,} input records "
        f"per run; load average before {meta['load_before']}, after {meta['load_after']}. "
        "The machine was shared with other work: absolute times move with the load, the "
        "fractions below hold up better.",
        "- One `python -m service run` worker per run (8 partitions, 10 s tumbling windows, "
        "grace 2 s, count/sum/min/max of `amount`, JSON out, cancelled orders filtered), "
        "draining a prefilled topic of Confluent-wire Avro orders; a private redis-server.",
        "- py-spy 0.4 attached once the group had committed a first batch and stopped when "
        "the committed offsets reached the end of the input: `--rate 200 --subprocesses "
        "--idle` (blocking samples: exact stacks). Fractions are of the main thread's samples "
        "(the loop) from its first batch to its last, idle samples included, so they are "
        "fractions of wall time. A C call's time (librdkafka, hiredis, fastavro, orjson) is "
        "its Python caller's.",
        "- Each sample is charged to the innermost frame a category claims (bench/profile.py "
        "`RULES`): e.g. `BatchProducer.send` inside a transaction is (a), its `_commit` (g); "
        "`emit` (JSON out) is (f) wherever it is called.",
        "- Flame graphs: `flame-windowed-alo.svg` / `flame-windowed-eos.svg` (demo workload), "
        "`flame-windowed-{alo,eos}-skewed.svg`; frames per line, over the whole sampled "
        "interval (so they also show the last second's idle `consume`, which the tables "
        "leave out). The speedscope files of the same runs are left in .rill/profile/.",
        "- Two samplers stop the worker 400 times a second between them: the profiled "
        "worker is slower than an unprofiled one, evenly across its code.",
        "",
        "## Runs",
        "",
        "| workload | mode | profiled s | samples | worker CPU (cores) | redis CPU (cores) "
        "| output check |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in runs:
        a = r.get("analysis") or {}
        c = r["check"]
        ok = "ok" if c["ok"] and c["finished"] else f"FAILED {c}"
        lines.append(
            f"| {r['workload']} | {r['system'].split()[-1]} | {r['profiled_s']} | "
            f"{a.get('samples', 0):,} | {r['worker_cpu_cores']} | {r['redis_cpu_cores']} | "
            f"{ok} ({c['expected']:,} windows) |"
        )
    lines += ["", "## Fraction of wall time (main thread)", ""]
    head = " | ".join(f"{r['workload']} {r['system'].split()[-1]}" for r in runs)
    lines += [f"| | {head} |", "| --- |" + " ---: |" * len(runs)]
    for k, text in CATEGORIES.items():
        cells = " | ".join(
            pct((r.get("analysis") or {}).get("categories", {}).get(k, 0)) for r in runs
        )
        lines.append(f"| ({k}) {text} | {cells} |")
    lines += ["", "## Cumulative share of the functions the changes below name", ""]
    lines += [f"| | {head} |", "| --- |" + " ---: |" * len(runs)]
    for f in FOCUS:
        cells = " | ".join(pct((r.get("analysis") or {}).get("focus", {}).get(f, 0)) for r in runs)
        name = "dataclass `__init__` (objects built)" if f == "__init__" else f"`{f}`"
        lines.append(f"| {name} | {cells} |")
    for r in runs:
        a = r.get("analysis")
        if not a:
            continue
        title = f"{r['workload']}, {r['system'].split()[-1]}"
        lines += ["", f"## Top functions: {title}", ""]
        lines += [
            "| own | function | | cumulative | function |",
            "| ---: | --- | --- | ---: | --- |",
        ]
        for (of, on), (cf, cn) in zip(a["own"], a["cumulative"], strict=False):
            lines.append(f"| {pct(on)} | `{of}` | | {pct(cn)} | `{cf}` |")
    return "\n".join(lines) + "\n"


def write_md(res: dict[str, Any], path: Path) -> str:
    """Write profile.md, keeping the hand-written part after MARKER of the previous one."""
    text = markdown(res)
    old = path.read_text() if path.exists() else ""
    tail = old.split(MARKER, 1)[1] if MARKER in old else "\n## Ranked changes\n\n(to write)\n"
    text = f"{text}\n{MARKER}\n{tail.lstrip(chr(10))}"
    path.write_text(text)
    return text


def main() -> None:
    """Profile each workload x mode, write the flame graphs, profile.json and profile.md."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000, help="per workload")
    parser.add_argument("--workloads", default="demo,skewed")
    parser.add_argument("--modes", default="alo,eos")
    parser.add_argument("--quick", action="store_true", help="20,000 records, to try it")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--work", default=str(WORK), help="speedscope files and profile.json")
    parser.add_argument(
        "--rewrite", action="store_true", help="analyse the last run again, re-render profile.md"
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.rewrite:
        res = json.loads((work / "profile.json").read_text())
        for row in res["runs"]:  # analysed again: the speedscope files are the data
            scope = work / f"{row['flame']}.speedscope.json"
            if scope.exists():
                row["analysis"] = analyse(load_speedscope(scope))
        write_md(res, out / "profile.md")
        return
    if args.quick:
        args.records = 20_000
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    res: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cores": os.cpu_count(),
            "records": args.records,
            "load_before": [round(x, 2) for x in machine_load()],
        },
        "runs": [],
    }
    try:
        with private_redis() as redis:
            for workload in args.workloads.split(","):
                inp = prepare(bootstrap, workload, args.records)
                for mode in args.modes.split(","):
                    suffix = "" if workload == "demo" else f"-{workload}"
                    svg = out / f"flame-windowed-{mode}{suffix}.svg"
                    row = profile_run(bootstrap, MODES[mode], inp, redis, svg, work, 900)
                    print(json.dumps({k: v for k, v in row.items() if k != "analysis"}), flush=True)
                    res["runs"].append(row)
    finally:
        delete_topics(bootstrap, CREATED)
    res["meta"]["load_after"] = [round(x, 2) for x in machine_load()]
    (work / "profile.json").write_text(json.dumps(res, indent=1) + "\n")
    print(write_md(res, out / "profile.md"))


if __name__ == "__main__":
    main()
