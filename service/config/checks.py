"""Checks across settings, run once when the settings are parsed.

Each raises `ValueError` naming the `RILL_*` variable to fix; `load_settings` turns it
into a `ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.config.serde_settings import SerdeSettings
from service.errors import ConfigError
from service.processing.aggregates import Aggregation
from service.processing.windows import check_window

if TYPE_CHECKING:
    from service.config.settings import Settings


def check_settings(s: Settings) -> None:
    """Every cross-setting rule; the first broken one raises."""
    for side in (s.input, s.output):
        check_side(side, registry_url=s.registry.url)
    topics = s.topics
    if topics.dlq in (topics.input, topics.output):
        raise ValueError(
            "dlq_topic must differ from input_topic and output_topic: set RILL_DLQ_TOPIC"
        )
    if topics.input == topics.output:
        raise ValueError("output_topic equals input_topic, which would loop: set RILL_OUTPUT_TOPIC")
    check_window_settings(s)
    if s.dedupe.dlq and not s.dedupe.id_field and not s.pipeline.app:
        raise ValueError(
            "dedupe_dlq is true but nothing is de-duplicated: set RILL_DEDUPE_FIELD to the "
            "field holding each record's id (or unset RILL_DEDUPE_DLQ)"
        )
    check_routing(s)
    check_table(s)
    check_security(s)
    if s.observability.health_stall_s * 1000 >= s.consumer.max_poll_interval_ms:
        raise ValueError(
            "health_stall_s must be below max_poll_interval_ms, so liveness fails before "
            "the group evicts the worker: lower RILL_HEALTH_STALL_S"
        )
    if "producer.message.max.bytes" in s.kafka.extra:
        # process_batch checks outputs and DLQ copies against the same limit.
        raise ValueError(
            "set the producer's message.max.bytes with RILL_PRODUCER_MESSAGE_MAX_BYTES, "
            "not in RILL_KAFKA_EXTRA"
        )


def check_side(serde: SerdeSettings, registry_url: str | None) -> None:
    """The format, wire and schema settings of one side fit together."""
    side, fmt, wire, schema = serde.side, serde.format, serde.wire, serde.schema_file
    if wire == "confluent" and serde.schema_id is None:
        raise ValueError(
            f"{side}_wire is confluent but {side}_schema_id is not set: set "
            f"{serde.env('schema_id')} to the schema's registry id"
        )
    if wire == "registry" and not registry_url:
        raise ValueError(f"{side}_wire is registry: set RILL_SCHEMA_REGISTRY_URL")
    reader_optional = side in ("input", "table") and wire == "registry"
    if fmt == "avro" and schema is None and not reader_optional:
        raise ValueError(
            f"{side}_format is avro but {side}_schema is not set: set "
            f"{serde.env('schema')} to an .avsc file"
        )
    if fmt == "protobuf" and (schema is None or not serde.proto_message):
        raise ValueError(
            f"{side}_format is protobuf: set {serde.env('schema')} (.proto or descriptor "
            f"set) and {serde.env('proto_message')} (the full message name)"
        )
    if side == "output" and wire == "registry" and fmt == "json" and schema is None:
        raise ValueError(
            "output_wire registry with json needs RILL_OUTPUT_SCHEMA (a JSON Schema file)"
        )


def check_table(s: Settings) -> None:
    """A table to join: its own topic, a key field, a serde it can read."""
    table, topics = s.table, s.topics
    if table.topic is None:
        return
    if table.topic in (topics.input, topics.output, topics.dlq, topics.late):
        raise ValueError(
            "table_topic must be a topic of its own, not the input, output, DLQ or late "
            "topic: set RILL_TABLE_TOPIC"
        )
    if not table.key_field and not s.pipeline.app:
        raise ValueError(
            "table_topic is set: set RILL_TABLE_KEY_FIELD to the input field whose value "
            "is the table's key"
        )
    check_side(table, registry_url=s.registry.url)


def check_security(s: Settings) -> None:
    """SASL credentials complete, certificate files present, a Redis URL scheme."""
    kafka = s.kafka
    protocol = kafka.security_protocol
    if protocol.startswith("SASL"):
        missing = [
            f"RILL_KAFKA_SASL_{name.upper()}"
            for name, value in (
                ("mechanism", kafka.sasl_mechanism),
                ("username", kafka.sasl_username),
                ("password", kafka.sasl_password),
            )
            if value is None
        ]
        if missing:
            raise ValueError(f"kafka_security_protocol {protocol} needs {', '.join(missing)}")
    for name, path in (
        ("kafka_ssl_ca_location", kafka.ssl_ca_location),
        ("kafka_ssl_certificate_location", kafka.ssl_certificate_location),
        ("kafka_ssl_key_location", kafka.ssl_key_location),
        ("redis_ssl_ca_certs", s.state.ssl_ca_certs),
        ("schema_registry_ca_location", s.registry.ca_location),
    ):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{name}: {path} is not a file: set RILL_{name.upper()}")
    url = s.state.url.get_secret_value()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            "redis_url must start with redis://, rediss:// (TLS) or unix://: set RILL_REDIS_URL"
        )


def check_routing(s: Settings) -> None:
    """Route topics are given with a route, and are none of the topics rill reads or
    sends records to the DLQ with."""
    route, topics = s.routing, s.topics
    if route.field and not route.topics:
        raise ValueError(
            "route_field is set but no topic may be routed to: set RILL_ROUTE_TOPICS to the "
            "topics the field may name"
        )
    if route.topics and not route.field and not s.pipeline.app:
        raise ValueError(
            "route_topics is set but nothing routes: set RILL_ROUTE_FIELD (or RILL_APP to a "
            "Pipeline that calls route())"
        )
    reserved = {topics.input: "input_topic", topics.dlq: "dlq_topic"}
    if topics.late:
        reserved[topics.late] = "late_topic"
    for topic in route.allowed:
        if topic in reserved:
            raise ValueError(
                f"route_topics names {topic!r}, the {reserved[topic]}: a route may not "
                "write there; remove it from RILL_ROUTE_TOPICS"
            )


def check_window_settings(s: Settings) -> None:
    """The declarative window: the Python API's own check, naming the settings."""
    w = s.window
    if w.kind == "none":
        return
    try:
        check_window(
            w.kind,
            w.size_ms,
            w.advance_ms,
            w.gap_ms,
            w.grace_ms,
            name=window_setting,
            count=w.count,
            count_advance=w.count_advance,
        )
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    if not w.aggregates:
        raise ValueError("a window needs RILL_AGGREGATES, e.g. count,sum:amount")
    for spec in w.aggregates:
        try:
            Aggregation.parse(spec)
        except ConfigError as exc:
            raise ValueError(f"RILL_AGGREGATES: {exc}") from exc
    if s.topics.late in (s.topics.input, s.topics.output):
        raise ValueError("late_topic must differ from input and output: set RILL_LATE_TOPIC")


def window_setting(argument: str) -> str:
    """The setting of a `check_window` argument: size_ms -> RILL_WINDOW_SIZE_MS."""
    return f"RILL_WINDOW_{'type' if argument == 'kind' else argument}".upper()
