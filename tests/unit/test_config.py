"""Settings: defaults are the demo pipeline; bad values fail naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.app import build_plan, load_app
from service.config import load_settings
from service.errors import ConfigError
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
    conf = settings.librdkafka_common()
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
