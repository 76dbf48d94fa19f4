"""A supervised group member: the target of each process `Supervisor` spawns.

The child is an ordinary worker (`Service`) with its own consumer, producer and Redis
client. It serves no endpoint: once a second (and once more when it stops) it sends the
supervisor a `ChildReport`: its liveness, its readiness and a snapshot of its metrics.
When the supervisor is gone (the pipe breaks) the child stops as on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass, replace
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import structlog

from service.app import build_plan
from service.config import Settings
from service.errors import RillError
from service.observability.logging import configure_logging
from service.observability.merge import Snapshot
from service.runtime.real_edges import REAL_EDGES, open_producer
from service.runtime.service import Service
from service.runtime.slots import Probe

log = structlog.get_logger("rill.child")

REPORT_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class ChildReport:
    """What a child tells the supervisor (pickled through a pipe)."""

    probe: Probe
    metrics: Snapshot


def _report(service: Service) -> ChildReport:
    live, live_why = service.health.live()
    ready, ready_why = service.ready()
    metrics = list(service.metrics.registry.collect())
    return ChildReport(Probe(live, live_why, ready, ready_why), metrics)


class _Reporter:
    """Sends a report every `REPORT_INTERVAL_S` on its own thread."""

    def __init__(self, service: Service, conn: Connection) -> None:
        self._service, self._conn = service, conn
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rill-report", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(REPORT_INTERVAL_S):
            if not self.send():
                log.warning("supervisor gone: stopping")
                self._service.request_stop()
                return

    def send(self) -> bool:
        """One report; False when the supervisor no longer reads."""
        try:
            self._conn.send(_report(self._service))
        except OSError:  # BrokenPipeError: the supervisor exited
            return False
        return True

    def stop(self) -> None:
        """The last report: the metrics as the worker left them."""
        self._done.set()
        self._thread.join()
        self.send()
        self._conn.close()


def child_main(settings: Settings, slot: int, transactional_id: str, conn: Connection) -> None:
    """Run one group member until SIGTERM; exit 0, or 1 when it stopped on an error.

    Args:
        settings: the container's settings (with the endpoints off: the supervisor serves them).
        slot: the child's index, in every log line as `process`.
        transactional_id: exactly-once: the slot's, the same after a restart, so the new
            child's `init_transactions` fences its predecessor and aborts what it left open.
        conn: the write end of the pipe to the supervisor.
    """
    obs = settings.observability
    configure_logging(obs.log_level, obs.log_format)
    structlog.contextvars.bind_contextvars(process=slot)
    edges = replace(REAL_EDGES, producer=partial(open_producer, transactional_id=transactional_id))
    service = Service(settings, build_plan(settings), edges=edges)

    def stop(signum: int, _frame: Any) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        service.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    reporter = _Reporter(service, conn)
    reporter.start()
    code = 0
    try:
        service.run()
    except RillError as exc:
        log.error("stopped on error", error=str(exc), error_class=type(exc).__name__)
        code = 1
    finally:
        reporter.stop()
    sys.exit(code)
