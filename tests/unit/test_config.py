"""Settings: defaults are the demo pipeline; bad values fail naming the setting."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from service.app import build_plan, load_app
from service.cli import main
from service.config import load_settings
from service.errors import ConfigError
from service.kafka.clients import consumer_config, producer_config
from service.pipeline import Pipeline


def test_defaults_are_the_demo_pipeline() -> None:
    """With nothing configured, rill runs the demo order pipeline."""
    settings = load_settings()
    assert settings.input_topic == "orders"
    steps = [s.name for s in build_plan(settings).steps]
    assert steps == ["filter:status", "key_by:customer_id"]
    assert settings.window_type == "tumbling"


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"batch_size": 0}, "RILL_BATCH_SIZE"),
        ({"input_format": "xml"}, "RILL_INPUT_FORMAT"),
        ({"input_schema": "missing.avsc"}, "RILL_INPUT_SCHEMA"),
        ({"output_format": "avro"}, "RILL_OUTPUT_SCHEMA"),
        ({"window_type": "hopping", "window_advance_ms": 0}, "RILL_WINDOW_ADVANCE_MS"),
        ({"window_type": "session"}, "RILL_WINDOW_GAP_MS"),
        ({"window_type": "tumbling", "window_size_ms": 0}, "RILL_WINDOW_SIZE_MS"),
        (
            {"window_type": "hopping", "window_size_ms": 100, "window_advance_ms": 200},
            "RILL_WINDOW_ADVANCE_MS",
        ),
        ({"window_type": "count_tumbling"}, "RILL_WINDOW_COUNT"),
        ({"window_type": "count_hopping", "window_count": 10}, "RILL_WINDOW_COUNT_ADVANCE"),
        (
            {"window_type": "count_hopping", "window_count": 10, "window_count_advance": 11},
            "RILL_WINDOW_COUNT_ADVANCE",
        ),
        ({"window_type": "count_tumbling", "window_count": -1}, "RILL_WINDOW_COUNT"),
        ({"window_type": "daily"}, "RILL_WINDOW_TYPE"),
        ({"window_emit": "often"}, "RILL_WINDOW_EMIT"),
        ({"aggregates": "median:amount"}, "RILL_AGGREGATES"),
        ({"aggregates": "sum"}, "RILL_AGGREGATES"),
        ({"input_schema_id": None}, "RILL_INPUT_SCHEMA_ID"),
        ({"output_wire": "confluent"}, "RILL_OUTPUT_SCHEMA_ID"),
        ({"dlq_topic": "orders"}, "RILL_DLQ_TOPIC"),
        ({"output_topic": "orders"}, "RILL_OUTPUT_TOPIC"),
        ({"filter_op": "like"}, "RILL_FILTER_OP"),
        ({"metrics_port": 70000}, "RILL_METRICS_PORT"),
        ({"poll_timeout_s": -1}, "RILL_POLL_TIMEOUT_S"),
        ({"producer_compression": "brotli"}, "RILL_PRODUCER_COMPRESSION"),
        ({"log_level": "loud"}, "RILL_LOG_LEVEL"),
        ({"no_such_setting": 1}, "RILL_NO_SUCH_SETTING"),
    ],
)
def test_bad_configuration_names_the_setting(overrides: dict[str, object], names: str) -> None:
    """Each wrong value fails at start with a message naming its RILL_ variable."""
    with pytest.raises(ConfigError, match=names):
        load_settings(**overrides)


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A YAML file sets values; RILL_* variables win over it; lists parse from commas."""
    config = tmp_path / "rill.yaml"
    config.write_text("input_topic: from-yaml\nbatch_size: 10\nproject: a, b\n")
    monkeypatch.setenv("RILL_BATCH_SIZE", "20")
    settings = load_settings(config)
    assert (settings.input_topic, settings.batch_size) == ("from-yaml", 20)
    assert settings.project == ["a", "b"]


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    """A YAML file that is not a mapping is refused with RILL_CONFIG named."""
    config = tmp_path / "rill.yaml"
    config.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="RILL_CONFIG"):
        load_settings(config)


def test_secrets_are_not_shown_in_errors() -> None:
    """A bad secret value never appears in the error message."""
    with pytest.raises(ConfigError) as info:
        load_settings(kafka_sasl_password=["hunter2"])
    assert "hunter2" not in str(info.value)


example_pipeline = Pipeline("example").map(lambda v: v)


def test_rill_app_loads_a_python_pipeline() -> None:
    """RILL_APP=module:attr loads a Pipeline; wrong specs are config errors."""
    assert load_app("tests.unit.test_config:example_pipeline") is example_pipeline
    plan = build_plan(load_settings(app="tests.unit.test_config:example_pipeline"))
    assert [s.name for s in plan.steps] == ["map:<lambda>"]
    for spec in [
        "nocolon",
        "no.such.module:x",
        "tests.unit.test_config:missing",
        "tests.unit.test_config:ORDER",
    ]:
        with pytest.raises(ConfigError, match="RILL_APP"):
            load_app(spec)


ORDER = 1


def test_sasl_ssl_settings_reach_librdkafka(tmp_path: Path) -> None:
    """SASL/SSL settings become librdkafka properties; the password only as a secret."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="rill",
        kafka_sasl_password="pw",
        kafka_ssl_ca_location=str(ca),
    )
    conf = settings.kafka.librdkafka_common()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "rill"
    assert conf["sasl.password"] == "pw"
    assert conf["ssl.ca.location"] == str(ca)
    assert "pw" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "RILL_KAFKA_SASL_MECHANISM"),
        ({"kafka_ssl_ca_location": "/no/such/ca.pem"}, "RILL_KAFKA_SSL_CA_LOCATION"),
        ({"redis_url": "http://redis:6379"}, "RILL_REDIS_URL"),
        ({"health_stall_s": 400}, "RILL_HEALTH_STALL_S"),
    ],
)
def test_bad_security_and_operations_settings(overrides: dict[str, object], names: str) -> None:
    """Security and operations settings fail at start naming the variable to fix."""
    with pytest.raises(ConfigError, match=names):
        load_settings(**overrides)


def test_grouped_views_read_the_flat_settings() -> None:
    """settings.kafka/input/output/window/state/retry... mirror the RILL_* fields."""
    s = load_settings(
        group_id="g",
        processing_guarantee="exactly_once",
        output_format="protobuf",
        output_schema="order.avsc",
        output_proto_message="x.Y",
        window_type="hopping",
        window_size_ms=1000,
        window_advance_ms=500,
        redis_prefix="p",
        retry_base_s=0.5,
        late_topic="late",
    )
    assert (s.kafka.group_id, s.kafka.exactly_once) == ("g", True)
    assert (s.input.side, s.input.format, s.input.wire, s.input.schema_id) == (
        "input",
        "avro",
        "confluent",
        1,
    )
    assert (s.output.format, s.output.proto_message) == ("protobuf", "x.Y")
    assert s.output.env("schema") == "RILL_OUTPUT_SCHEMA"
    assert (s.window.kind, s.window.size_ms, s.window.advance_ms) == ("hopping", 1000, 500)
    assert (s.state.prefix, s.retry.base_s, s.topics.late) == ("p", 0.5, "late")
    assert s.state.url.get_secret_value() == "redis://127.0.0.1:16379/0"


def test_kafka_extra_scoped_keys_reach_only_their_client() -> None:
    """kafka_extra `consumer.` / `producer.` keys go to that client, others to both."""
    s = load_settings(
        kafka_extra={"client.id": "c", "consumer.fetch.max.bytes": "1", "producer.linger.ms": "7"}
    )
    consumer, producer = consumer_config(s), producer_config(s)
    assert consumer["client.id"] == producer["client.id"] == "c"
    assert consumer["fetch.max.bytes"] == "1"
    assert "fetch.max.bytes" not in producer
    assert producer["linger.ms"] == "7"
    assert "consumer.fetch.max.bytes" not in s.kafka.librdkafka_common()


def test_check_config_opens_no_connection(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """rill check-config with registry serdes and an unreachable registry passes: no I/O."""

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("check-config opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name, value in {
        "RILL_INPUT_WIRE": "registry",
        "RILL_OUTPUT_FORMAT": "avro",
        "RILL_OUTPUT_SCHEMA": "order_out.avsc",
        "RILL_OUTPUT_WIRE": "registry",
        "RILL_OUTPUT_AUTO_REGISTER": "true",
        "RILL_SCHEMA_REGISTRY_URL": "http://127.0.0.1:9",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config"]) == 0
    assert "configuration is valid" in capsys.readouterr().out
