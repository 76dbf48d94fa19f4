"""OpenTelemetry tracing, off by default: a span per batch, W3C trace context in headers.

Each batch span is linked to the trace contexts its records carried (`traceparent`
headers), and every output record carries the batch span's context onward.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.errors import ConfigError
from service.records import InRecord, OutRecord

MAX_LINKS = 128
_TRACE_HEADERS = ("traceparent", "tracestate")


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        # Reads OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS and friends itself.
        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r}: expected otlp or console")


class BatchTracer:
    """Spans per batch, when enabled; a no-op otherwise.

    Args:
        enabled: RILL_TRACING_ENABLED.
        exporter: otlp or console (OTEL_TRACES_EXPORTER), or an exporter object (tests).
    """

    def __init__(self, enabled: bool, exporter: str | SpanExporter = "otlp") -> None:
        self._propagator = TraceContextTextMapPropagator()
        self._tracer: trace.Tracer | None = None
        if enabled:
            # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
            provider = TracerProvider(resource=Resource.create({"service.name": "rill"}))
            if isinstance(exporter, str):
                provider.add_span_processor(BatchSpanProcessor(_exporter(exporter)))
            else:
                provider.add_span_processor(SimpleSpanProcessor(exporter))
            self._provider = provider
            self._tracer = provider.get_tracer("rill")

    @property
    def enabled(self) -> bool:
        """Spans are made (RILL_TRACING_ENABLED)."""
        return self._tracer is not None

    def _parent(self, record: InRecord) -> Any:
        carrier = {
            k: v.decode("latin-1")
            for k, v in record.headers or []
            if k in _TRACE_HEADERS and v is not None
        }
        if not carrier:
            return None
        ctx = trace.get_current_span(self._propagator.extract(carrier)).get_span_context()
        return ctx if ctx.is_valid else None

    def _links(self, records: Sequence[InRecord]) -> list[Link]:
        links = []
        for record in records:
            parent = self._parent(record)
            if parent is not None:
                links.append(Link(parent))
                if len(links) >= MAX_LINKS:
                    break
        return links

    @contextmanager
    def batch(self, records: Sequence[InRecord]) -> Iterator[Span | None]:
        """A span for one batch, linked to the records' parent contexts (current inside)."""
        if self._tracer is None:
            yield None
            return
        with self._tracer.start_as_current_span(
            "rill.batch", links=self._links(records), attributes={"rill.records": len(records)}
        ) as span:
            yield span

    def start(self, records: Sequence[InRecord]) -> Span | None:
        """A span for one batch that outlives the call (a batch is fetched in one turn of
        the loop and delivered in the next): end it with `end`."""
        if self._tracer is None:
            return None
        return self._tracer.start_span(
            "rill.batch", links=self._links(records), attributes={"rill.records": len(records)}
        )

    @staticmethod
    def end(span: Span | None) -> None:
        """End a span of `start`."""
        if span is not None:
            span.end()

    def propagate(self, records: list[OutRecord], span: Span | None = None) -> list[OutRecord]:
        """The records with the trace context of `span` (else the current span) in their
        headers."""
        if self._tracer is None or not records:
            return records
        carrier: dict[str, str] = {}
        context = trace.set_span_in_context(span) if span is not None else None
        self._propagator.inject(carrier, context=context)
        extra = [(k, v.encode()) for k, v in carrier.items()]
        return [
            OutRecord(
                r.topic,
                r.key,
                r.value,
                [*(h for h in r.headers or [] if h[0] not in _TRACE_HEADERS), *extra],
                r.partition,
            )
            for r in records
        ]

    def close(self) -> None:
        """Flush and stop the exporter."""
        if self._tracer is not None:
            self._provider.shutdown()
