"""A worker with its clients: `open_worker` opens every client into an ExitStack and
builds the `Worker` whole; `Service` runs it until asked to stop, then closes them."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import structlog

from service import __version__
from service.app import open_plan
from service.config import Settings
from service.errors import ConfigError, DlqRefusedError
from service.observability.health import HealthServer, HealthState
from service.observability.metrics import Metrics
from service.observability.stacks import dump_stacks_on_signal
from service.observability.tracing import BatchTracer
from service.processing.batch import Plan, dlq_entry
from service.records import TP
from service.runtime.batches import now_ms
from service.runtime.collector import settle_for_batches
from service.runtime.copartition import CopartitionCheck
from service.runtime.edges import Edges, Table
from service.runtime.enrichment import NoTable, wait_loaded
from service.runtime.guarantee import GUARANTEES
from service.runtime.observers import Observers
from service.runtime.real_edges import REAL_EDGES
from service.runtime.report import Report
from service.runtime.window_engine import NoWindows, Submit, WindowEngine, Windows, inline_submit
from service.runtime.worker import Worker

log = structlog.get_logger("rill.service")


class Service:
    """One consumer-group member running a plan until `request_stop()`.

    Args:
        settings: the parsed settings.
        plan: the pure processing plan.
        metrics: where to count (a fresh registry when None).
        edges: how to open the clients (the real Kafka and Redis ones by default).
    """

    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        metrics: Metrics | None = None,
        edges: Edges = REAL_EDGES,
    ) -> None:
        self.settings, self.plan, self.edges = settings, plan, edges
        self.metrics = metrics or Metrics()
        obs = settings.observability
        self.health = HealthState(liveness_threshold_s=obs.health_stall_s)
        self.tracer = BatchTracer(obs.tracing_enabled, obs.traces_exporter)
        self._stop = threading.Event()
        self.report = Report(
            self.metrics, settings.topics.input, obs.summary_interval_s, plan.router is not None
        )
        self.worker: Worker | None = None  # while running

    def request_stop(self) -> None:
        """Finish the current batch, commit, leave the group (safe from a signal handler)."""
        self._stop.set()

    def ready(self) -> tuple[bool, str]:
        """/readyz."""
        return self.worker.ready() if self.worker is not None else (False, "starting")

    def run(self) -> None:
        """Open the clients, run the loop until `request_stop()`, then close them."""
        regroup = self.plan.regroup
        counts = self.edges.create_topics(self.settings, regroup.topic if regroup else None)
        # The co-partition check of window input needs the input's partition count; with
        # group_by the window reads the repartition topic, partitioned by rill: no check.
        partitions = counts.get(self.settings.topics.input) if regroup is None else None
        if regroup is not None:
            # Stage one partitions the repartition topic by the count the broker has.
            self.plan = replace(self.plan, regroup=regroup.with_partitions(counts[regroup.topic]))
        observers = Observers(
            self.settings, self.metrics, self.health, self.tracer, self.report, self._stop
        )
        try:
            with ExitStack() as stack:
                self.worker = open_worker(
                    self.plan, self.edges, observers, stack, self.ready, partitions
                )
                settle_for_batches()
                dump_stacks_on_signal()
                self.worker.run()
        except DlqRefusedError:
            self.metrics.dlq_refused.labels(self.settings.topics.dlq).inc()
            raise
        self.report.dlq_counts(force=True)
        log.info("worker stopped")


class _GroupEvents:
    """The consumer's callbacks, handed to the worker once it is built (the consumer is
    one of the worker's collaborators, so it is opened first)."""

    def __init__(self) -> None:
        self.worker: Worker | None = None

    def assigned(self, tps: list[TP]) -> None:
        assert self.worker is not None, "the group joins in Worker.run, after the build"
        self.worker.on_assign(tps)

    def revoked(self, tps: list[TP]) -> None:
        assert self.worker is not None
        self.worker.on_revoke(tps)

    def stats(self, stats: dict[str, Any]) -> None:
        if self.worker is not None:
            self.worker.on_stats(stats)


def call_timeout_s(s: Settings) -> float:
    """The longest one Kafka call of a delivery may block the loop (a flush, a transaction
    step): RILL_DELIVERY_TIMEOUT_S, but at most a sixth of RILL_HEALTH_STALL_S, so that a
    transaction's steps in a row stay below the liveness threshold. A longer wait is a
    retry behind back-pressure, which keeps /healthz beating."""
    return min(s.producer.delivery_timeout_s, max(1.0, s.observability.health_stall_s / 6))


def open_engine(
    plan: Plan, edges: Edges, s: Settings, stack: ExitStack
) -> tuple[Windows, Submit, bool]:
    """The window step of `plan` with its store opened in `stack`, how its round trips
    run (a thread when RILL_STATE_OVERLAP), and whether they overlap the next fetch.

    A stateless pipeline that de-duplicates keeps its ids (and its outputs, in the
    outbox) in Redis on the window step's protocol, without windows.
    """
    if plan.window is None and plan.dedupe is None:
        return NoWindows(), inline_submit, False
    store = edges.store(s, plan.window)
    stack.callback(store.close)
    engine = WindowEngine(
        plan.window,
        store,
        lambda rec, err: dlq_entry(plan, rec, err, now_ms()),
        plan.dedupe,
        # With group_by only the repartition topic's partitions have window state.
        topic=plan.regroup.topic if plan.regroup is not None else None,
    )
    if not s.state.overlap:
        return engine, inline_submit, False
    # One thread runs a batch's Redis round trip while the loop fetches the next.
    pool = ThreadPoolExecutor(1, thread_name_prefix="rill-redis")
    stack.callback(pool.shutdown)
    return engine, pool.submit, True


def open_worker(
    plan: Plan,
    edges: Edges,
    obs: Observers,
    stack: ExitStack,
    ready: Any = None,
    parts: int | None = None,
) -> Worker:
    """Open every client of a worker in `stack` (closed in reverse order), join the group
    and return the worker built whole (`parts`: the input topic's partition count, for the
    co-partition check of window input; None: not checked)."""
    s = obs.settings
    open_plan(plan, stack)
    if s.observability.metrics_port:
        server = HealthServer(s.observability.metrics_port, obs.metrics.registry, obs.health)
        stack.callback(server.start().close)
        if ready is not None:
            obs.health.ready_check = ready
    engine, submit, overlap = open_engine(plan, edges, s, stack)
    table = open_table(plan, edges, obs, stack)
    # group_by at least once skips re-keyed records by source position: no gap allowed.
    producer = edges.producer(s, plan.regroup is not None and not s.kafka.exactly_once)
    stack.callback(producer.close)
    events = _GroupEvents()
    topics = [s.topics.input] + ([plan.regroup.topic] if plan.regroup is not None else [])
    consumer = edges.consumer(s, topics, events.assigned, events.revoked, events.stats)
    guarantee = GUARANTEES[s.kafka.guarantee](
        plan,
        producer,
        consumer,
        engine if isinstance(engine, WindowEngine) else None,
        source_topic=s.topics.input,
        timeout_s=call_timeout_s(s),
        on_delivered=obs.report.delivered,
    )
    guarantee.start()
    check = CopartitionCheck.of(s, plan.window is not None, parts, obs.metrics)
    worker = Worker(plan, consumer, guarantee, engine, submit, overlap, obs, check, table)
    events.worker = worker
    consumer.start()
    stack.callback(consumer.close)
    stack.callback(obs.tracer.close)
    _log_start(s, plan)
    return worker


def _log_start(s: Settings, plan: Plan) -> None:
    """The `worker started` line: what this worker reads, computes and writes."""
    log.info(
        "worker started",
        version=__version__,
        input=s.topics.input,
        output=s.topics.output,
        dlq=s.topics.dlq,
        repartition=plan.regroup.topic if plan.regroup is not None else None,
        group=s.kafka.group_id,
        guarantee=s.kafka.guarantee,
        steps=[step.name for step in plan.steps],
        window=s.window.kind if plan.window else None,
        route=plan.router.describe() if plan.router else None,
        table=plan.join.topic if plan.join else None,
    )


def open_table(plan: Plan, edges: Edges, obs: Observers, stack: ExitStack) -> Table:
    """The plan's table, read to its end before the worker joins its group (/readyz
    says how far it is meanwhile); `NoTable` without a join."""
    if plan.join is None:
        return NoTable()
    if edges.table is None:
        raise ConfigError("these edges have no table: a pipeline with a table join cannot run")
    table = edges.table(obs.settings, plan.join)
    stack.callback(table.close)
    table.start()
    loading = obs.health.ready_check
    obs.health.ready_check = lambda: (False, table.status())
    wait_loaded(table, obs)
    obs.health.ready_check = loading
    obs.metrics.table_loaded.labels(plan.join.topic).set(1)
    return table
