"""`RILL_PROCESSES=N`: N group members in one container, under one supervisor.

The supervisor opens no Kafka or Redis client. It spawns N children (`child.child_main`,
each a whole worker), serves the container's one `/metrics`, `/healthz` and `/readyz`
from what the children report (`slots.py` decides health, `merge.py` the metrics),
starts a child that died again after a backoff (counted in `rill_child_restarts_total`
and logged), and on SIGTERM sends every child SIGTERM and waits for their graceful stops.
See docs/processes.md.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeAlias

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

from service.config import Settings
from service.kafka.clients import new_transactional_id
from service.observability.health import HealthServer
from service.observability.merge import MergedCollector, Snapshot, merge, monotonic
from service.runtime.child import ChildReport, child_main
from service.runtime.slots import Slot, container_live, container_ready, restart_at

log = structlog.get_logger("rill.supervisor")

ChildTarget: TypeAlias = Callable[[Settings, int, str, Connection], None]

# How often the loop looks at the clock when nothing happens (restarts due, a stop asked).
TICK_S = 0.5


class Supervisor:
    """Runs `settings.consumer.processes` children until `request_stop()`.

    Args:
        settings: the parsed settings (the children get them with the endpoints off).
        target: what each child runs: (settings, slot, transactional id, pipe) -> None, a
            module-level function (spawn imports it by name); `child.child_main` but in tests.
    """

    def __init__(self, settings: Settings, target: ChildTarget = child_main) -> None:
        self.settings, self._target = settings, target
        self._child_settings = settings.model_copy(update={"metrics_port": 0})
        self._ctx = multiprocessing.get_context("spawn")  # no thread or client is inherited
        # One id per container; a slot's transactional id adds its index, so it is the same
        # for every child of the slot and differs from every other container's.
        self._txn_base = new_transactional_id(settings.kafka.group_id)
        self.slots = [Slot(i) for i in range(settings.consumer.processes)]
        self._procs: dict[int, BaseProcess] = {}
        self._conns: dict[int, Connection] = {}
        self._snapshots: dict[int, Snapshot] = {}
        self._retired: Snapshot = []  # what dead children counted
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._own = CollectorRegistry()
        ProcessCollector(registry=self._own)
        PlatformCollector(registry=self._own)
        GCCollector(registry=self._own)
        self.restarts = Counter(
            "rill_child_restarts",
            "Child processes started again after they exited",
            ["process"],
            registry=self._own,
        )
        self.registry = CollectorRegistry()
        self.registry.register(MergedCollector(self._metrics))
        self.ready_check: Callable[[], tuple[bool, str]] = self._ready

    @property
    def pids(self) -> dict[int, int | None]:
        """The running children's pids by slot."""
        with self._lock:
            return {index: proc.pid for index, proc in self._procs.items()}

    def request_stop(self) -> None:
        """Drain: SIGTERM every child and wait for them (safe from a signal handler)."""
        self._stop.set()

    def live(self) -> tuple[bool, str]:
        """/healthz of the container (`slots.container_live`)."""
        with self._lock:
            stall = self.settings.observability.health_stall_s
            return container_live(self.slots, time.monotonic(), stall)

    def _ready(self) -> tuple[bool, str]:
        with self._lock:
            stall = self.settings.observability.health_stall_s
            return container_ready(self.slots, time.monotonic(), stall)

    def _metrics(self) -> list[Snapshot]:
        with self._lock:
            return [list(self._own.collect()), self._retired, *self._snapshots.values()]

    def run(self) -> int:
        """Start the children, keep them running until asked to stop, then drain them.

        Returns:
            0 when every child stopped cleanly at the drain, else 1.
        """
        port = self.settings.observability.metrics_port
        server = HealthServer(port, self.registry, self).start() if port else None
        log.info("supervisor started", processes=len(self.slots), transactional=self._txn_base)
        try:
            for slot in self.slots:
                self._start(slot)
            while not self._stop.is_set():
                self._wait(self._timeout())
                self._restart_due()
            return self._drain()
        finally:
            if server is not None:
                server.close()

    def _start(self, slot: Slot) -> None:
        reader, writer = self._ctx.Pipe(duplex=False)
        txn_id = f"{self._txn_base}-p{slot.index}"
        proc = self._ctx.Process(
            target=self._target,
            args=(self._child_settings, slot.index, txn_id, writer),
            name=f"rill-process-{slot.index}",
        )
        proc.start()
        writer.close()  # the child holds the write end: EOF once it is gone
        with self._lock:
            slot.started(time.monotonic())
            self._procs[slot.index], self._conns[slot.index] = proc, reader
        log.info("process started", process=slot.index, pid=proc.pid, starts=slot.starts)

    def _timeout(self) -> float:
        base, top = self.settings.retry.base_s, self.settings.retry.max_s
        due = [restart_at(s, base, top) for s in self.slots if not s.running]
        return max(0.0, min([TICK_S, *(d - time.monotonic() for d in due)]))

    def _wait(self, timeout: float) -> None:
        """Take the children's reports and exits that arrive within `timeout`."""
        handles: dict[Any, tuple[str, int]] = {c: ("report", i) for i, c in self._conns.items()}
        handles.update({p.sentinel: ("exit", i) for i, p in self._procs.items()})
        for handle in wait(list(handles), timeout):
            kind, index = handles[handle]
            if kind == "exit":
                self._exited(index)
            elif index in self._conns:  # not taken by the exit above
                self._receive(index, self._conns[index])

    def _receive(self, index: int, conn: Connection) -> bool:
        """Take one report of a child; False at the end of its pipe."""
        try:
            report: ChildReport = conn.recv()
        except (EOFError, OSError):  # the child is gone; its sentinel says so
            return False
        with self._lock:
            self.slots[index].reported(time.monotonic(), report.probe)
            self._snapshots[index] = report.metrics
        return True

    def _exited(self, index: int) -> None:
        with self._lock:
            proc = self._procs.pop(index)
        proc.join()
        conn = self._conns.pop(index)
        while conn.poll() and self._receive(index, conn):
            pass  # its last reports, sent before it exited
        conn.close()
        slot = self.slots[index]
        with self._lock:
            slot.exited(time.monotonic())
            last = self._snapshots.pop(index, [])
            self._retired = merge([self._retired, monotonic(last)])
        if self._stop.is_set():
            log.info("process stopped", process=index, pid=proc.pid, exit_code=proc.exitcode)
            return
        base, top = self.settings.retry.base_s, self.settings.retry.max_s
        log.warning(
            "process exited: restarting",
            process=index,
            pid=proc.pid,
            exit_code=proc.exitcode,
            restart_in_s=round(restart_at(slot, base, top) - time.monotonic(), 2),
            failures_in_a_row=slot.failures,
        )

    def _restart_due(self) -> None:
        if self._stop.is_set():
            return
        base, top = self.settings.retry.base_s, self.settings.retry.max_s
        now = time.monotonic()
        for slot in self.slots:
            if not slot.running and restart_at(slot, base, top) <= now:
                self.restarts.labels(str(slot.index)).inc()
                self._start(slot)

    def _drain(self) -> int:
        """SIGTERM to every child; wait until all have stopped (the pod's grace period
        bounds this from outside)."""
        log.info("stop requested: draining", processes=len(self._procs))
        codes: dict[int, int | None] = {}
        for index, proc in self._procs.items():
            proc.terminate()
            codes[index] = None
        while self._procs:
            exiting = dict(self._procs)
            self._wait(TICK_S)
            for index, proc in exiting.items():
                if index not in self._procs:
                    codes[index] = proc.exitcode
        # -SIGTERM: the child was still starting (no client open yet, nothing to drain).
        failed = {i: c for i, c in codes.items() if c not in (0, -signal.SIGTERM)}
        log.info("supervisor stopped", failed=failed or None)
        return 1 if failed else 0
