"""Tracing: a batch span linked to the records' trace contexts, propagated to outputs."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.observability.tracing import BatchTracer
from service.records import InRecord, OutRecord

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_batch_span_links_parents_and_outputs_carry_its_context() -> None:
    """Records' traceparent headers become links; outputs get the batch span's context."""
    exporter = InMemorySpanExporter()
    tracer = BatchTracer(True, exporter)
    records = [
        InRecord("in", 0, 0, b"k", b"v", [("traceparent", PARENT.encode())], 0),
        InRecord("in", 0, 1, b"k", b"v", None, 0),
    ]
    with tracer.batch(records) as span:
        assert span is not None
        outputs = tracer.propagate([OutRecord("out", b"k", b"v", [("traceparent", b"old")])])
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "rill.batch"
    assert [f"{link.context.trace_id:032x}" for link in finished.links] == [PARENT[3:35]]
    headers = dict(outputs[0].headers or [])
    trace_id = f"{finished.context.trace_id:032x}"
    assert (headers["traceparent"] or b"").decode().split("-")[1] == trace_id
    assert len(outputs[0].headers or []) == 1, "the old traceparent is replaced"


def test_disabled_tracer_changes_nothing() -> None:
    """Off by default: no span, outputs untouched."""
    tracer = BatchTracer(False)
    out = [OutRecord("out", b"k", b"v")]
    with tracer.batch([]) as span:
        assert span is None
        assert tracer.propagate(out) is out
