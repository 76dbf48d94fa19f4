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
from service.errors import DlqRefusedError
from service.observability.health import HealthServer, HealthState
from service.observability.metrics import Metrics
from service.observability.tracing import BatchTracer
from service.processing.batch import Plan, dlq_entry
from service.records import TP
from service.runtime.batches import now_ms
from service.runtime.edges import Edges
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
        self.report = Report(self.metrics, settings.topics.input, obs.summary_interval_s)
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
        if regroup is not None:
            # Stage one partitions the repartition topic by the count the broker has.
            self.plan = replace(self.plan, regroup=regroup.with_partitions(counts[regroup.topic]))
        observers = Observers(
            self.settings, self.metrics, self.health, self.tracer, self.report, self._stop
        )
        try:
            with ExitStack() as stack:
                self.worker = open_worker(self.plan, self.edges, observers, stack, self.ready)
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


def open_windows(
    plan: Plan, edges: Edges, s: Settings, stack: ExitStack
) -> tuple[Windows, Submit, bool]:
    """The window step (its store opened in `stack`), how its round trips run, and whether
    they overlap the next fetch."""
    if plan.window is None:
        return NoWindows(), inline_submit, False
    store = edges.store(s, plan.window)
    stack.callback(store.close)
    engine = WindowEngine(
        plan.window,
        store,
        lambda rec, err: dlq_entry(plan, rec, err, now_ms()),
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
    plan: Plan, edges: Edges, obs: Observers, stack: ExitStack, ready: Any = None
) -> Worker:
    """Open every client of a worker in `stack` (closed in reverse order), join the group
    and return the worker built whole."""
    s = obs.settings
    open_plan(plan, stack)
    if s.observability.metrics_port:
        server = HealthServer(s.observability.metrics_port, obs.metrics.registry, obs.health)
        stack.callback(server.start().close)
        if ready is not None:
            obs.health.ready_check = ready
    engine, submit, overlap = open_windows(plan, edges, s, stack)
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
    worker = Worker(plan, consumer, guarantee, engine, submit, overlap, obs)
    events.worker = worker
    consumer.start()
    stack.callback(consumer.close)
    stack.callback(obs.tracer.close)
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
    )
    return worker
