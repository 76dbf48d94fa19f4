"""What watches a worker: settings, metrics, health, tracing, the report, the stop event."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from service.config import Settings
from service.observability.health import HealthState
from service.observability.metrics import Metrics
from service.observability.tracing import BatchTracer
from service.runtime.report import Report


@dataclass(frozen=True, slots=True)
class Observers:
    """The worker's read-only context and its observers, made once per process."""

    settings: Settings
    metrics: Metrics
    health: HealthState
    tracer: BatchTracer
    report: Report
    stop: threading.Event
