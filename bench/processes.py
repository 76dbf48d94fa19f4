"""RILL_PROCESSES: records/s and CPU per record of one worker process and of two under a
supervisor, stateless and windowed, with every group member in the group before the
input arrives.

`make bench` prefills its input topics; a supervisor's second child joins a few seconds
after the first, which by then has drained part of the topic alone, and the rebalance
falls inside the measured interval. Here the worker starts on an empty topic, `/readyz`
(every child holding partitions) is awaited, then the input is produced; records/s and
CPU (the whole process tree: supervisor and children) are taken over the middle half of
the output (`throughput.steady`), each output checked against the reference. Nothing is
asserted.

Usage: KAFKA_BOOTSTRAP_SERVERS=... python bench/processes.py [--records N] [--repeat R]
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import throughput  # noqa: E402 - after the path set-up
from bench import workloads as wl  # noqa: E402
from bench.common import (  # noqa: E402
    CREATED,
    Steal,
    Watch,
    create_topics,
    delete_topics,
    free_port,
    machine_load,
    private_redis,
    read_topic,
)
from bench.systems import (  # noqa: E402
    RILL_ALO,
    RILL_ALO_2P,
    RILL_STATELESS,
    RILL_STATELESS_2P,
    Run,
    System,
    rill_env,
    stop_all,
)

SYSTEMS = [RILL_STATELESS, RILL_STATELESS_2P, RILL_ALO, RILL_ALO_2P]


def ready(port: int) -> bool:
    """/readyz answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def measure(
    bootstrap: str, system: System, workload: str, records: int, redis: tuple[str, int]
) -> dict[str, Any]:
    """One run: start on an empty topic, wait until ready, produce, drain, check."""
    rows = wl.orders(workload, records)
    name = f"bench-proc-{workload}-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [name])
    create_topics(bootstrap, [f"{name}-out"], log_append_time=True)
    create_topics(bootstrap, [f"{name}-out-dlq"])
    ids = frozenset(o["order_id"] for o in rows if o["status"] != "cancelled")
    inp = throughput.Input(workload, name, records, len(ids), wl.reference(rows), ids)
    run = Run(bootstrap, name, f"{name}-out", f"g-{name}", redis[0], "")
    port = free_port()
    env = rill_env(system, run) | {"RILL_METRICS_PORT": str(port)}
    proc = start_with(env)
    deadline = time.monotonic() + 180
    while not ready(port) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    watch = Watch([proc.pid], tree=True).start()
    steal = Steal()
    wl.produce(bootstrap, name, rows)
    expected = len(inp.windows) if system.windowed else len(ids)
    finished = throughput.wait_done(bootstrap, [f"{name}-out"], expected, proc, 600)
    watch.stop()
    proc.send_signal(signal.SIGTERM)
    proc.wait(90)
    recs = read_topic(bootstrap, f"{name}-out", 60)
    check = (
        throughput.check_windows(system, recs, inp.windows)
        if system.windowed
        else throughput.check_projection(recs, ids)
    )
    row: dict[str, Any] = {
        "system": system.name,
        "workload": workload,
        "records": records,
        "ok": check["ok"] and finished,
        "steal_pct": steal.percent(),
        "peak_rss_mb": round(watch.peak_mb, 1),
    }
    row.update(throughput.steady(throughput.covered(system, recs), records, watch))
    return row


def start_with(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`python -m service run` with this environment (killed at exit if still running)."""
    proc = subprocess.Popen([sys.executable, "-m", "service", "run"], env=env, cwd=ROOT)
    atexit.register(lambda: proc.poll() is None and proc.kill())
    return proc


def main() -> None:
    """Every system over each workload, `--repeat` times in turn; one line per run."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--workloads", default="demo,skewed")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    atexit.register(stop_all)
    print(f"cores {os.cpu_count()}, load before {machine_load()}", flush=True)
    try:
        with private_redis() as redis:
            for workload in args.workloads.split(","):
                for _ in range(args.repeat):
                    for system in SYSTEMS:
                        print(measure(bootstrap, system, workload, args.records, redis), flush=True)
    finally:
        delete_topics(bootstrap, CREATED)
    print(f"load after {machine_load()}", flush=True)


if __name__ == "__main__":
    main()
