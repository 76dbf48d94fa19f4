"""The settings grouped by what reads them: frozen views over the parsed `RILL_*` fields.

`Settings` keeps one flat field per environment variable (that is what keeps the
`RILL_*` names); code reads these groups instead, e.g. `settings.kafka.group_id` or
`settings.input.wire`. Each view is built from the flat fields on access, so it can
never disagree with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import SecretStr

if TYPE_CHECKING:
    from service.config.settings import Settings

Side: TypeAlias = Literal["input", "output"]
Format: TypeAlias = Literal["avro", "json", "protobuf"]
Wire: TypeAlias = Literal["plain", "confluent", "registry"]
FilterOp: TypeAlias = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "exists"]
Guarantee: TypeAlias = Literal["at_least_once", "exactly_once"]
WindowType: TypeAlias = Literal["none", "tumbling", "hopping", "sliding", "session"]
Client: TypeAlias = Literal["consumer", "producer"]
# kafka_extra keys with these prefixes go only to that client (see `KafkaSettings.extra_for`).
CLIENT_SCOPES = ("consumer.", "producer.")


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Connection, security, group and delivery guarantee, shared by every client."""

    bootstrap_servers: str
    group_id: str
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: SecretStr | None
    ssl_ca_location: str | None
    ssl_certificate_location: str | None
    ssl_key_location: str | None
    ssl_key_password: SecretStr | None
    guarantee: Guarantee
    transaction_timeout_ms: int
    extra: Mapping[str, str]

    @classmethod
    def of(cls, s: Settings) -> KafkaSettings:
        """The group of the flat settings."""
        return cls(
            bootstrap_servers=s.bootstrap_servers,
            group_id=s.group_id,
            security_protocol=s.kafka_security_protocol,
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_username=s.kafka_sasl_username,
            sasl_password=s.kafka_sasl_password,
            ssl_ca_location=s.kafka_ssl_ca_location,
            ssl_certificate_location=s.kafka_ssl_certificate_location,
            ssl_key_location=s.kafka_ssl_key_location,
            ssl_key_password=s.kafka_ssl_key_password,
            guarantee=s.processing_guarantee,
            transaction_timeout_ms=s.transaction_timeout_ms,
            extra=dict(s.kafka_extra),
        )

    @property
    def exactly_once(self) -> bool:
        """Is the guarantee exactly-once (Kafka transactions)?"""
        return self.guarantee == "exactly_once"

    def librdkafka_common(self) -> dict[str, Any]:
        """Connection settings shared by consumer, producer and admin client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanisms": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update({k: v for k, v in self.extra.items() if not k.startswith(CLIENT_SCOPES)})
        # The secret settings win over kafka_extra, so a password is set in one place only.
        secrets = {
            "sasl.password": _secret(self.sasl_password),
            "ssl.key.password": _secret(self.ssl_key_password),
        }
        conf.update({k: v for k, v in secrets.items() if v is not None})
        return conf

    def extra_for(self, client: Client) -> dict[str, str]:
        """`kafka_extra` keys like `consumer.fetch.max.bytes`, for that client only."""
        prefix = f"{client}."
        return {k[len(prefix) :]: v for k, v in self.extra.items() if k.startswith(prefix)}


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """The group consumer and the batches it hands to the worker."""

    batch_size: int
    poll_timeout_s: float
    max_poll_interval_ms: int
    queue_kbytes: int
    stats_interval_ms: int

    @classmethod
    def of(cls, s: Settings) -> ConsumerSettings:
        """The group of the flat settings."""
        return cls(
            batch_size=s.batch_size,
            poll_timeout_s=s.poll_timeout_s,
            max_poll_interval_ms=s.max_poll_interval_ms,
            queue_kbytes=s.consumer_queue_kbytes,
            stats_interval_ms=s.stats_interval_ms,
        )


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    """The batching producer of sink, DLQ and late records."""

    linger_ms: int
    batch_bytes: int
    compression: str
    queue_kbytes: int
    delivery_timeout_s: float
    message_max_bytes: int

    @classmethod
    def of(cls, s: Settings) -> ProducerSettings:
        """The group of the flat settings."""
        return cls(
            linger_ms=s.producer_linger_ms,
            batch_bytes=s.producer_batch_bytes,
            compression=s.producer_compression,
            queue_kbytes=s.producer_queue_kbytes,
            delivery_timeout_s=s.delivery_timeout_s,
            message_max_bytes=s.producer_message_max_bytes,
        )


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """The topics a pipeline reads and writes."""

    input: str
    output: str
    dlq: str
    late: str | None

    @classmethod
    def of(cls, s: Settings) -> TopicSettings:
        """The group of the flat settings."""
        return cls(s.input_topic, s.output_topic, s.dlq_topic, s.late_topic)


@dataclass(frozen=True, slots=True)
class SerdeSettings:
    """How one side (input or output) is serialized."""

    side: Side
    format: Format
    schema: str | None
    wire: Wire
    schema_id: int | None
    proto_message: str | None

    @classmethod
    def of(cls, s: Settings, side: Side) -> SerdeSettings:
        """The group of the flat settings for `side`."""
        if side == "input":
            return cls(
                side,
                s.input_format,
                s.input_schema,
                s.input_wire,
                s.input_schema_id,
                s.input_proto_message,
            )
        return cls(
            side,
            s.output_format,
            s.output_schema,
            s.output_wire,
            s.output_schema_id,
            s.output_proto_message,
        )

    def env(self, name: str) -> str:
        """The environment variable of one of this side's settings, e.g. RILL_INPUT_SCHEMA."""
        return f"RILL_{self.side.upper()}_{name.upper()}"


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """The Schema Registry (Confluent API) of the `registry` wire format."""

    url: str | None
    username: str | None
    password: SecretStr | None
    ca_location: str | None
    timeout_s: float
    retries: int
    retry_interval_s: float
    wait_s: float
    subject_strategy: Literal["topic", "record", "topic_record"]
    auto_register: bool

    @classmethod
    def of(cls, s: Settings) -> RegistrySettings:
        """The group of the flat settings."""
        return cls(
            url=s.schema_registry_url,
            username=s.schema_registry_username,
            password=s.schema_registry_password,
            ca_location=s.schema_registry_ca_location,
            timeout_s=s.schema_registry_timeout_s,
            retries=s.schema_registry_retries,
            retry_interval_s=s.schema_registry_retry_interval_s,
            wait_s=s.schema_registry_wait_s,
            subject_strategy=s.output_subject_strategy,
            auto_register=s.output_auto_register,
        )

    def client_config(self) -> dict[str, Any]:
        """SchemaRegistryClient settings; rill retries lookups itself."""
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s, "max.retries": 0}
        if self.username is not None:
            conf["basic.auth.user.info"] = f"{self.username}:{_secret(self.password) or ''}"
        if self.ca_location is not None:
            conf["ssl.ca.location"] = self.ca_location
        return conf


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """The declarative steps (or the Python pipeline that replaces them) and record limits."""

    app: str | None
    filter_field: str | None
    filter_op: FilterOp
    filter_value: Any
    key_by: str | None
    project: tuple[str, ...] | None
    rename: Mapping[str, str]
    max_record_bytes: int
    transform_retries: int

    @classmethod
    def of(cls, s: Settings) -> PipelineSettings:
        """The group of the flat settings."""
        return cls(
            app=s.app,
            filter_field=s.filter_field,
            filter_op=s.filter_op,
            filter_value=s.filter_value,
            key_by=s.key_by,
            project=tuple(s.project) if s.project is not None else None,
            rename=dict(s.rename),
            max_record_bytes=s.max_record_bytes,
            transform_retries=s.transform_retries,
        )


@dataclass(frozen=True, slots=True)
class WindowSettings:
    """The declarative window step; `kind` none means a stateless pipeline."""

    kind: WindowType
    size_ms: int
    advance_ms: int
    gap_ms: int
    grace_ms: int
    time_field: str | None
    emit: Literal["final", "update"]
    idle_timeout_ms: int
    aggregates: tuple[str, ...]
    max_future_ms: int

    @classmethod
    def of(cls, s: Settings) -> WindowSettings:
        """The group of the flat settings."""
        return cls(
            kind=s.window_type,
            size_ms=s.window_size_ms,
            advance_ms=s.window_advance_ms,
            gap_ms=s.window_gap_ms,
            grace_ms=s.window_grace_ms,
            time_field=s.window_time_field or None,
            emit=s.window_emit,
            idle_timeout_ms=s.window_idle_timeout_ms,
            aggregates=tuple(s.aggregates),
            max_future_ms=s.window_max_future_ms,
        )


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Redis, where window state lives."""

    url: SecretStr
    password: SecretStr | None
    ssl_ca_certs: str | None
    cluster: bool
    timeout_s: float
    prefix: str
    ttl_s: int
    loss: Literal["fail", "reset"]
    overlap: bool

    @classmethod
    def of(cls, s: Settings) -> StateSettings:
        """The group of the flat settings."""
        return cls(
            url=s.redis_url,
            password=s.redis_password,
            ssl_ca_certs=s.redis_ssl_ca_certs,
            cluster=s.redis_cluster,
            timeout_s=s.redis_timeout_s,
            prefix=s.redis_prefix,
            ttl_s=s.state_ttl_s,
            loss=s.state_loss,
            overlap=s.state_overlap,
        )


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Backoff of every retry loop, and the circuit breakers."""

    base_s: float
    max_s: float
    breaker_threshold: int
    breaker_reset_s: float

    @classmethod
    def of(cls, s: Settings) -> RetrySettings:
        """The group of the flat settings."""
        return cls(s.retry_base_s, s.retry_max_s, s.breaker_threshold, s.breaker_reset_s)


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    """Metrics and health endpoint, logs and traces."""

    metrics_port: int
    health_stall_s: float
    summary_interval_s: float
    log_level: Literal["debug", "info", "warning", "error"]
    log_format: Literal["json", "console"]
    tracing_enabled: bool
    traces_exporter: Literal["otlp", "console"]

    @classmethod
    def of(cls, s: Settings) -> ObservabilitySettings:
        """The group of the flat settings."""
        return cls(
            metrics_port=s.metrics_port,
            health_stall_s=s.health_stall_s,
            summary_interval_s=s.summary_interval_s,
            log_level=s.log_level,
            log_format=s.log_format,
            tracing_enabled=s.tracing_enabled,
            traces_exporter=s.otel_traces_exporter,
        )
