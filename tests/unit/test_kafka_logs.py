"""librdkafka's own log lines come out through structlog, as JSON like every other line."""

from __future__ import annotations

import json
import logging

import pytest

from service.kafka.logs import LibrdkafkaLog, logged
from service.observability.logging import configure_logging


def test_a_librdkafka_line_is_a_json_event_at_its_level(capsys: pytest.CaptureFixture[str]) -> None:
    """confluent-kafka's call (level, format, facility, name, text) becomes one JSON line."""
    configure_logging("info", "json")
    log = LibrdkafkaLog("consumer")
    log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", "Connect failed")
    log.log(logging.DEBUG, "%s [%s] %s", "FETCH", "rdkafka#consumer-1", "below the level")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert (event["event"], event["level"], event["client"]) == ("librdkafka", "error", "consumer")
    assert (event["facility"], event["text"]) == ("FAIL", "Connect failed")


def test_logged_adds_the_logger_and_keeps_the_rest() -> None:
    """logged(conf) is conf plus a `logger`; the caller's dict is not changed."""
    conf = {"bootstrap.servers": "b:9092"}
    out = logged(conf, "producer")
    assert isinstance(out["logger"], LibrdkafkaLog)
    assert out["bootstrap.servers"] == "b:9092"
    assert "logger" not in conf


def test_logged_keeps_a_callers_logger_and_none_means_raw_stderr() -> None:
    """A `logger` the caller set is kept; `None` drops the key (librdkafka's own stderr)."""
    mine = object()
    assert logged({"logger": mine, "a": 1}, "consumer")["logger"] is mine
    assert logged({"logger": None, "a": 1}, "consumer") == {"a": 1}
