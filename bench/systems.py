"""How the bench starts each system under test, each as a process of its own.

All of them run on the same interpreter and librdkafka (the bench venv), so the
comparison is of the processing code, not of client versions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from bench.common import ROOT
from bench.workloads import GRACE_MS, WINDOW_MS


@dataclass(frozen=True, slots=True)
class System:
    """One row of the bench: which program, in which mode, windowed or not."""

    name: str
    kind: str  # floor | rill | quix
    guarantee: str = "at-least-once"
    windowed: bool = True
    overlap: bool = True  # RILL_STATE_OVERLAP
    dedupe: bool = False  # RILL_DEDUPE_FIELD=order_id (issue 17: its cost against the floor)
    count: int = 0  # records per count window (tumbling); 0: the 10 s time windows
    table: bool = False  # joins each order with its customer's row (RILL_TABLE_*)
    # Input keyed by order id, windows per customer through a repartition topic (group_by).
    rekey: bool = False
    processes: int = 1  # RILL_PROCESSES: group members in the one container
    # Each output routed by its customer to one of two topics (bench/route_app.py).
    route: bool = False


FLOOR = System("floor (confluent-kafka + fastavro)", "floor", windowed=False)
RILL_STATELESS = System("rill stateless", "rill", windowed=False)
# The stateless job with each order joined with its customer's tier from a table.
RILL_ENRICHED = System("rill stateless + table join", "rill", windowed=False, table=True)
RILL_ALO = System("rill windowed at-least-once", "rill")
RILL_EOS = System("rill windowed exactly-once", "rill", "exactly-once")
# The same worker with the Redis round trip and the next batch's decode one after the other.
RILL_ALO_IN_TURN = System("rill windowed at-least-once, no overlap", "rill", overlap=False)
# RILL_PROCESSES=2: a supervisor and two workers; records/s and CPU of the whole tree.
RILL_STATELESS_2P = System("rill stateless, 2 processes", "rill", windowed=False, processes=2)
RILL_ALO_2P = System("rill windowed at-least-once, 2 processes", "rill", processes=2)
# The stateless job de-duplicating by order_id (every id distinct: the read, the ids written
# with the apply, and the outputs kept in the outbox are the whole cost).
RILL_DEDUPE = System("rill stateless, dedupe", "rill", windowed=False, dedupe=True)
RILL_DEDUPE_EOS = System(
    "rill stateless exactly-once, dedupe", "rill", "exactly-once", windowed=False, dedupe=True
)
RILL_ROUTED = System("rill stateless, routed to 2 topics", "rill", windowed=False, route=True)
QUIX_ALO = System("Quix Streams at-least-once", "quix")
QUIX_EOS = System("Quix Streams exactly-once", "quix", "exactly-once")
# The stateless job (filter, project, rename, Avro out) written for Quix Streams.
QUIX_STATELESS = System("Quix Streams stateless", "quix", windowed=False)
# The windowed job with tumbling count windows of COUNT_WINDOW records per customer.
COUNT_WINDOW = 100
RILL_COUNT = System("rill count windows at-least-once", "rill", count=COUNT_WINDOW)
QUIX_COUNT = System("Quix Streams count windows at-least-once", "quix", count=COUNT_WINDOW)
RILL_REKEY = System("rill re-keyed (group_by) at-least-once", "rill", rekey=True)
QUIX_REKEY = System("Quix Streams group_by at-least-once", "quix", rekey=True)
ALL = [
    FLOOR,
    RILL_STATELESS,
    RILL_STATELESS_2P,
    QUIX_STATELESS,
    RILL_ENRICHED,
    RILL_DEDUPE,
    RILL_DEDUPE_EOS,
    RILL_ROUTED,
    RILL_ALO,
    RILL_ALO_2P,
    RILL_ALO_IN_TURN,
    RILL_EOS,
    QUIX_ALO,
    QUIX_EOS,
    RILL_COUNT,
    QUIX_COUNT,
    RILL_REKEY,
    QUIX_REKEY,
]
# Short names for `bench/run.py --systems`.
TAGS = {
    "floor": FLOOR,
    "stateless": RILL_STATELESS,
    "stateless-2p": RILL_STATELESS_2P,
    "enrich": RILL_ENRICHED,
    "quix-stateless": QUIX_STATELESS,
    "dedupe": RILL_DEDUPE,
    "dedupe-eos": RILL_DEDUPE_EOS,
    "route": RILL_ROUTED,
    "alo": RILL_ALO,
    "alo-2p": RILL_ALO_2P,
    "alo-in-turn": RILL_ALO_IN_TURN,
    "eos": RILL_EOS,
    "quix-alo": QUIX_ALO,
    "quix-eos": QUIX_EOS,
    "count": RILL_COUNT,
    "quix-count": QUIX_COUNT,
    "rekey": RILL_REKEY,
    "quix-rekey": QUIX_REKEY,
}


@dataclass(frozen=True, slots=True)
class Run:
    """Where one system instance reads, writes and keeps its state."""

    bootstrap: str
    input: str
    output: str
    group: str
    redis_url: str
    state_dir: str
    window_ms: int = WINDOW_MS
    emit: str = "final"  # final | update (each change of a window is emitted)
    session_timeout_ms: int = 45_000
    metrics_port: int = 0  # rill's /metrics (0: off); the latency rows read it
    table: str = ""  # the customers table's topic (RILL_ENRICHED)


def route_topics(output: str) -> list[str]:
    """The two topics of the routed row: the sink, and one beside it."""
    return [output, f"{output}-b"]


def rill_env(system: System, run: Run) -> dict[str, str]:
    """The RILL_* environment of a rill worker for this run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RILL_")}
    env.update(
        {
            "RILL_BOOTSTRAP_SERVERS": run.bootstrap,
            "RILL_REDIS_URL": run.redis_url,
            "RILL_REDIS_PREFIX": run.group,
            "RILL_INPUT_TOPIC": run.input,
            "RILL_OUTPUT_TOPIC": run.output,
            "RILL_DLQ_TOPIC": f"{run.output}-dlq",
            "RILL_GROUP_ID": run.group,
            "RILL_METRICS_PORT": str(run.metrics_port),
            "RILL_LOG_LEVEL": "warning",
            "RILL_PROCESSING_GUARANTEE": system.guarantee.replace("-", "_"),
            "RILL_PROCESSES": str(system.processes),
            "RILL_KAFKA_EXTRA": json.dumps(
                {"consumer.session.timeout.ms": str(run.session_timeout_ms)}
            ),
        }
    )
    if system.windowed:
        env.update(
            {
                "RILL_WINDOW_SIZE_MS": str(run.window_ms),
                "RILL_WINDOW_GRACE_MS": str(GRACE_MS),
                "RILL_WINDOW_EMIT": run.emit,
                "RILL_AGGREGATES": "count,sum:amount,min:amount,max:amount",
                "RILL_STATE_OVERLAP": "true" if system.overlap else "false",
            }
        )
        if system.rekey:
            env["RILL_GROUP_BY"] = "customer_id"
        if system.count:
            env["RILL_WINDOW_TYPE"] = "count_tumbling"
            env["RILL_WINDOW_COUNT"] = str(system.count)
    else:
        env.update(
            {
                "RILL_WINDOW_TYPE": "none",
                "RILL_PROJECT": "order_id,customer_id,amount,currency,created_at",
                "RILL_RENAME": json.dumps({"amount": "total"}),
                "RILL_OUTPUT_FORMAT": "avro",
                "RILL_OUTPUT_SCHEMA": "order_out.avsc",
                "RILL_OUTPUT_WIRE": "confluent",
                "RILL_OUTPUT_SCHEMA_ID": "2",
            }
        )
    if system.table:
        env.update(
            {
                "RILL_TABLE_TOPIC": run.table,
                "RILL_TABLE_FORMAT": "json",
                "RILL_TABLE_KEY_FIELD": "customer_id",
                "RILL_TABLE_JOIN": "inner",
                "RILL_TABLE_AS": "",  # merged: the row's `tier` becomes a field of the order
                "RILL_PROJECT": "order_id,customer_id,amount,currency,created_at,tier",
                "RILL_OUTPUT_SCHEMA": str(ROOT / "bench/order_enriched.avsc"),
                "RILL_OUTPUT_SCHEMA_ID": "3",
            }
        )
    if system.route:
        env.update(
            {
                "RILL_APP": "bench.route_app:pipeline",
                "RILL_ROUTE_TOPICS": ",".join(route_topics(run.output)),
            }
        )
    if system.dedupe:
        env.update({"RILL_DEDUPE_FIELD": "order_id", "RILL_DEDUPE_WINDOW_MS": "3600000"})
    return env


STARTED: list[subprocess.Popen[bytes]] = []


def stop_all() -> None:
    """Kill every process the bench started that still runs (after an error)."""
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start(system: System, run: Run) -> subprocess.Popen[bytes]:
    """Start the system's process; it runs until SIGTERM (or SIGKILL)."""
    proc = _spawn(system, run)
    STARTED.append(proc)
    return proc


def _spawn(system: System, run: Run) -> subprocess.Popen[bytes]:
    if system.kind == "floor":
        args = [
            sys.executable,
            str(ROOT / "bench/floor.py"),
            run.bootstrap,
            run.input,
            run.output,
            run.group,
        ]
        return subprocess.Popen(args, cwd=ROOT)
    if system.kind == "rill":
        return subprocess.Popen(
            [sys.executable, "-m", "service", "run"], env=rill_env(system, run), cwd=ROOT
        )
    args = [sys.executable, str(ROOT / "bench/quix_job.py"), run.bootstrap, run.input, run.output]
    args += [
        run.group,
        run.state_dir,
        "--guarantee",
        system.guarantee,
        "--window-ms",
        str(run.window_ms),
    ]
    args += ["--grace-ms", str(GRACE_MS), "--emit", "current" if run.emit == "update" else "final"]
    args += ["--session-timeout-ms", str(run.session_timeout_ms)]
    if not system.windowed:
        args.append("--stateless")
    if system.count:
        args += ["--count", str(system.count)]
    if system.rekey:
        args.append("--group-by")
    return subprocess.Popen(args, cwd=ROOT)
