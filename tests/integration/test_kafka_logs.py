"""librdkafka's own lines from a real client come out as structlog JSON, not raw stderr."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    from service.kafka.producer import BatchProducer
    from service.observability.logging import configure_logging
    from service.records import OutRecord

    configure_logging("info", "json")
    producer = BatchProducer({"bootstrap.servers": "127.0.0.1:1"}, "test").start()
    producer.send([OutRecord("t", None, b"x")])
    producer.flush(2.0)
    """
)


def test_a_refused_connection_is_a_json_line_on_stdout() -> None:
    """A broker that refuses connections: librdkafka's FAIL lines are structlog events."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert "%3|" not in done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    failed = [e for e in events if e.get("event") == "librdkafka" and e["facility"] == "FAIL"]
    assert failed
    assert failed[0]["level"] == "error"
    assert failed[0]["client"] == "producer"
