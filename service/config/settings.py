"""Settings, parsed once at start from `RILL_*` variables and an optional YAML file.

Every field here is a documented setting (see README, "Configuration"). The built-in
defaults are the demo pipeline, so `rill run` with no configuration processes the demo
order events. Anything wrong fails at start with a `ConfigError` naming the setting.

The flat fields are the parsing layer (one per environment variable); code reads the
grouped views (`settings.kafka`, `settings.input`, `settings.window`...; see `views`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from service.config.checks import check_settings
from service.config.views import (
    ConsumerSettings,
    FilterOp,
    Format,
    Guarantee,
    KafkaSettings,
    ObservabilitySettings,
    PipelineSettings,
    ProducerSettings,
    RegistrySettings,
    RetrySettings,
    SerdeSettings,
    StateSettings,
    TopicSettings,
    WindowSettings,
    WindowType,
    Wire,
)
from service.errors import ConfigError

SCHEMA_DIR = Path(__file__).parent.parent / "schemas"
ENV_PREFIX = "RILL_"


class Settings(BaseSettings):
    """All of rill's settings. Environment variable = `RILL_` + the field name, upper case."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        env_nested_delimiter="__",
    )

    # Kafka connection and group.
    bootstrap_servers: str = "127.0.0.1:19092"
    group_id: str = "rill"
    kafka_extra: dict[str, str] = Field(default_factory=dict)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    processing_guarantee: Guarantee = "at_least_once"
    transaction_timeout_ms: int = Field(default=60_000, ge=1_000, le=900_000)

    # Topics.
    input_topic: str = "orders"
    output_topic: str = "orders-by-customer"
    dlq_topic: str = "orders-dlq"

    # Input and output serialization.
    input_format: Format = "avro"
    input_schema: str | None = "order.avsc"
    input_wire: Wire = "confluent"
    input_schema_id: int | None = Field(default=1, ge=0)
    output_format: Format = "json"
    output_schema: str | None = None
    output_wire: Wire = "plain"
    output_schema_id: int | None = Field(default=None, ge=0)
    input_proto_message: str | None = None
    output_proto_message: str | None = None

    # Schema Registry (Confluent API) for the `registry` wire format.
    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    schema_registry_ca_location: str | None = None
    schema_registry_timeout_s: float = Field(default=5.0, gt=0)
    schema_registry_retries: int = Field(default=3, ge=1, le=20)
    schema_registry_retry_interval_s: float = Field(default=10.0, gt=0)
    schema_registry_wait_s: float = Field(default=60.0, ge=0)
    output_subject_strategy: Literal["topic", "record", "topic_record"] = "topic"
    output_auto_register: bool = False

    # The declarative pipeline: filter -> key_by -> project -> rename.
    filter_field: str | None = "status"
    filter_op: FilterOp = "ne"
    filter_value: Any = "cancelled"
    key_by: str | None = "customer_id"
    project: Annotated[list[str] | None, NoDecode] = None
    rename: dict[str, str] = Field(default_factory=dict)
    app: str | None = None

    # Windowed aggregation (window_type none: a stateless pipeline).
    window_type: WindowType = "tumbling"
    window_size_ms: int = Field(default=10_000, ge=0)
    window_advance_ms: int = Field(default=0, ge=0)
    window_gap_ms: int = Field(default=0, ge=0)
    window_grace_ms: int = Field(default=2_000, ge=0)
    window_time_field: str | None = "created_at"
    window_emit: Literal["final", "update"] = "final"
    window_idle_timeout_ms: int = Field(default=5_000, ge=0)
    window_max_future_ms: int = Field(default=3_600_000, ge=0)
    aggregates: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["count", "sum:amount as total", "max:amount", "mean:amount"]
    )
    late_topic: str | None = None

    # Batching and limits.
    batch_size: int = Field(default=5000, gt=0, le=100_000)
    poll_timeout_s: float = Field(default=0.005, gt=0, le=30)
    max_record_bytes: int = Field(default=1_000_000, gt=0)
    transform_retries: int = Field(default=2, ge=0, le=100)
    delivery_timeout_s: float = Field(default=60.0, gt=0)
    producer_linger_ms: int = Field(default=20, ge=0, le=60_000)
    producer_batch_bytes: int = Field(default=1_048_576, gt=0)
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    producer_message_max_bytes: int = Field(default=1_000_000, ge=1_000, le=1_000_000_000)

    # Redis (window state).
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:16379/0")
    redis_password: SecretStr | None = None
    redis_ssl_ca_certs: str | None = None
    redis_cluster: bool = False
    redis_timeout_s: float = Field(default=5.0, gt=0)
    redis_prefix: str = "rill"
    state_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    # Redis lost state Kafka says it had: hold the partition (fail) or go on (reset).
    state_loss: Literal["fail", "reset"] = "fail"
    # Apply a batch's window state in Redis while the next batch is fetched and decoded.
    state_overlap: bool = True

    # Retries, circuit breakers and memory bounds.
    retry_base_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)
    breaker_threshold: int = Field(default=3, ge=1)
    breaker_reset_s: float = Field(default=5.0, gt=0)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    health_stall_s: float = Field(default=60.0, gt=0)
    consumer_queue_kbytes: int = Field(default=16_384, ge=1024)
    producer_queue_kbytes: int = Field(default=65_536, ge=1024)

    # Operations.
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    summary_interval_s: float = Field(default=10.0, gt=0)
    stats_interval_ms: int = Field(default=5_000, ge=0)
    tracing_enabled: bool = False
    otel_traces_exporter: Literal["otlp", "console"] = Field(
        default="otlp",
        validation_alias=AliasChoices("OTEL_TRACES_EXPORTER", "otel_traces_exporter"),
    )

    @field_validator("project", "aggregates", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()] or None
        return value

    @field_validator("filter_value", mode="before")
    @classmethod
    def _json_value(cls, value: Any) -> Any:
        # From the environment every value is text: `true`, `5`, `["a","b"]` mean JSON.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _schema_exists(cls, value: str | None) -> str | None:
        if not value:
            return None
        return str(resolve_schema_path(value))

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        check_settings(self)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the YAML file, which arrives as init arguments.
        return env_settings, init_settings, file_secret_settings

    # The grouped views: what code reads (the flat fields are the parsing layer).

    @property
    def kafka(self) -> KafkaSettings:
        """Connection, security, group, guarantee; `librdkafka_common()`."""
        return KafkaSettings.of(self)

    @property
    def consumer(self) -> ConsumerSettings:
        """Batch size, poll timeout and the group consumer's bounds."""
        return ConsumerSettings.of(self)

    @property
    def producer(self) -> ProducerSettings:
        """Linger, batch bytes, compression, queue bound, delivery timeout."""
        return ProducerSettings.of(self)

    @property
    def topics(self) -> TopicSettings:
        """Input, output, DLQ and late topics."""
        return TopicSettings.of(self)

    @property
    def input(self) -> SerdeSettings:
        """How input values are serialized."""
        return SerdeSettings.of(self, "input")

    @property
    def output(self) -> SerdeSettings:
        """How output values are serialized."""
        return SerdeSettings.of(self, "output")

    @property
    def registry(self) -> RegistrySettings:
        """The Schema Registry and the output subject."""
        return RegistrySettings.of(self)

    @property
    def pipeline(self) -> PipelineSettings:
        """The declarative steps, RILL_APP and record limits."""
        return PipelineSettings.of(self)

    @property
    def window(self) -> WindowSettings:
        """The declarative window step."""
        return WindowSettings.of(self)

    @property
    def state(self) -> StateSettings:
        """Redis, where window state lives."""
        return StateSettings.of(self)

    @property
    def retry(self) -> RetrySettings:
        """Backoff and circuit breakers."""
        return RetrySettings.of(self)

    @property
    def observability(self) -> ObservabilitySettings:
        """Metrics, health, logs and traces."""
        return ObservabilitySettings.of(self)


def resolve_schema_path(value: str) -> Path:
    """A schema file as given, else one of the built-in schemas shipped with rill."""
    path = Path(value)
    if path.is_file():
        return path
    builtin = SCHEMA_DIR / value
    if builtin.is_file():
        return builtin
    raise ValueError(f"schema file {value!r} not found (give a path to an existing file)")


def _setting_name(loc: tuple[int | str, ...]) -> str:
    name = "_".join(str(part) for part in loc) if loc else "settings"
    return f"{ENV_PREFIX}{name.upper()}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Parse the settings once, from a YAML file (optional), the environment and overrides.

    Args:
        config_file: a YAML mapping of setting names to values; `RILL_CONFIG` when None.
        overrides: values that win over the file (used by the CLI and the tests).

    Returns:
        The frozen settings.

    Raises:
        ConfigError: naming each wrong setting and how to fix it.
    """
    data: dict[str, Any] = {}
    path = config_file or os.environ.get(f"{ENV_PREFIX}CONFIG")
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"RILL_CONFIG: cannot read {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"RILL_CONFIG: {path} must hold a mapping of setting: value")
        data.update(loaded)
    data.update(overrides)
    try:
        return Settings(**data)
    except SettingsError as exc:
        raise ConfigError(
            f"invalid configuration: {exc} (JSON expected for maps and lists, "
            'e.g. RILL_RENAME=\'{"a": "b"}\')'
        ) from exc
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = _setting_name(tuple(err["loc"]))
            given = err.get("input")
            shown = (
                ""
                if isinstance(given, dict) or "password" in where.lower()
                else f" (got {given!r})"
            )
            lines.append(f"{where}{shown}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from exc
