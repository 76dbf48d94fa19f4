"""DLQ entries know their input partition, and a DLQ that refuses copies never stalls.

Issue "nothing lost under live traffic", items 5 and 6.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import fakeredis
import pytest

from service.app import build_plan
from service.errors import FatalError, RefusedError, RillError
from service.kafka.producer import Failure
from service.processing import dlq
from service.processing.batch import emit
from service.processing.windows import WindowResult
from service.records import BatchResult, OutRecord
from service.runtime.refusals import refused_entry
from tests.support.inprocess import DLQ, IN, OUT, WINDOWED, Run, feed, settings_for
from tests.support.memory_kafka import MemoryBroker, MemoryProducer

MODES = ["at_least_once", "exactly_once"]


def test_window_result_refused_by_the_encoder_is_trimmed_with_its_partition() -> None:
    """Item 5: a window result that cannot be encoded becomes a DLQ entry of the input
    partition whose state made it, so a revoke trims it (the new owner re-emits it from the
    outbox: delivering it here too was a duplicate in exactly-once)."""
    settings = settings_for("exactly_once", **WINDOWED)
    plan = replace(build_plan(settings), max_message_bytes=40)
    result = BatchResult()
    window = WindowResult("a-key", 0, 100, {"count": 1, "sum_amount": 5}, True)
    emit(result, [window], [(IN, 3)], plan, 1_000)
    [entry] = result.dlq
    assert entry.stage == "encode"
    assert entry.source == (IN, 3), "the input partition it came from"
    result.trim({(IN, 3)})
    assert result.dlq == []
    assert result.dlq_reasons == {}


def test_output_refused_by_kafka_is_trimmed_with_its_partition() -> None:
    """Item 5: a sink record Kafka refuses becomes a DLQ entry of the input partition the
    output came from (`BatchResult.sources`), so a revoke during the retry trims it."""
    out = OutRecord(OUT, b"k", b"v")
    failure = Failure(out, RefusedError("MSG_SIZE_TOO_LARGE", "too large"))
    entry = refused_entry(failure, DLQ, IN, 1_000, origin=(IN, 2))
    assert entry.source == (IN, 2)
    result = BatchResult(dlq=[entry])
    result.trim({(IN, 2)})
    assert result.dlq == []


def _run_with_refusals(mode: str, refuse: Any, seconds: float = 10.0) -> tuple[Run, MemoryBroker]:
    broker = MemoryBroker()
    feed(broker, [{"k": "a", "v": i} for i in range(5)], partitions=1)
    broker.append(OutRecord(IN, b"the-key", b"not json", [("trace", b"x" * 50)]))
    run = Run(
        broker, fakeredis.FakeServer(), settings_for(mode), MemoryProducer(broker, refuse=refuse)
    )
    timer = threading.Timer(seconds, run.worker.request_stop)
    timer.start()
    try:
        run.worker.run()
    finally:
        timer.cancel()
    return run, broker


@pytest.mark.parametrize("mode", MODES)
def test_dlq_copy_refused_for_its_key_and_headers_keeps_a_reference(mode: str) -> None:
    """Item 6: the DLQ refuses a copy because of its key or original headers (not its
    value): the copy loses them too and keeps a reference to the source record; the worker
    goes on and commits — before, it retried the same copy for ever."""

    def refuse(record: OutRecord) -> RillError | None:
        names = {name for name, _ in record.headers or []}
        if record.topic == DLQ and (record.key is not None or "trace" in names):
            return RefusedError("MSG_SIZE_TOO_LARGE", "key and headers too large")
        return None

    run, broker = _run_with_refusals(mode, refuse)
    assert len(broker.records(OUT)) == 5
    [copy] = broker.records(DLQ)
    assert copy.key is None
    assert copy.value is None
    reason = dlq.reason_of(copy.headers)
    assert reason[dlq.SOURCE_TOPIC] == IN
    assert reason[dlq.SOURCE_OFFSET] == "5", "where the original record is"
    assert reason[dlq.ERROR_STAGE] == "decode", "the original reason"
    assert broker.committed[(IN, 0)][0] == 6, "the worker went on and committed"
    assert run.consumer.closed


@pytest.mark.parametrize("mode", MODES)
def test_dlq_refusing_even_a_reference_stops_the_worker_naming_the_limit(mode: str) -> None:
    """Item 6: when the DLQ topic refuses even the reference, the worker counts it, logs it
    at error and stops with a message naming the DLQ topic's max.message.bytes — never an
    endless retry, never a silent drop."""

    def refuse(record: OutRecord) -> RillError | None:
        if record.topic == DLQ:
            return RefusedError("MSG_SIZE_TOO_LARGE", "too large")
        return None

    with pytest.raises(FatalError, match=r"max\.message\.bytes") as caught:
        _run_with_refusals(mode, refuse)
    assert DLQ in str(caught.value)
