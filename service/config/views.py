"""The pipeline's settings: declarative steps, window, state, retries, observability.

The Kafka side's groups are in `kafka_settings.py`, serialization in `serde_settings.py`;
how a setting is declared is `declare.py`'s.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

from pydantic import AliasChoices, BeforeValidator, SecretStr
from pydantic_settings import NoDecode

from service.config.declare import View, setting

FilterOp: TypeAlias = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "exists"]
WindowType: TypeAlias = Literal[
    "none", "tumbling", "hopping", "sliding", "session", "count_tumbling", "count_hopping"
]


def _split_list(value: Any) -> Any:
    """`a,b` or a JSON list: from the environment a list is text."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()] or None
    return value


def _json_value(value: Any) -> Any:
    """From the environment every value is text: `true`, `5`, `["a","b"]` mean JSON."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _empty_is_none(value: Any) -> Any:
    return value or None


class PipelineSettings(View):
    """Pipeline: the declarative steps (or the Python pipeline that replaces them), limits."""

    app: str | None = setting(
        None, "`module:attribute` of a Python `Pipeline`; replaces the declarative steps."
    )
    filter_field: str | None = setting("status", "Field to filter on (empty: no filter).")
    filter_op: FilterOp = setting("ne", "How the field compares with the value.")
    filter_value: Annotated[Any, BeforeValidator(_json_value)] = setting(
        "cancelled",
        'Value to compare with; read as JSON when it is JSON (`true`, `5`, `["a","b"]`), '
        "else as text.",
    )
    key_by: str | None = setting(
        "customer_id", "Field whose value becomes the output key (empty: keep the input key)."
    )
    group_by: Annotated[str | None, BeforeValidator(_empty_is_none)] = setting(
        None,
        "Field whose value is the window key when the input is not keyed by it: records "
        "are re-keyed through the repartition topic `<group_id>-repartition` "
        "(docs/group-by.md; empty: window by the key as it is).",
    )
    project: Annotated[list[str] | None, NoDecode, BeforeValidator(_split_list)] = setting(
        None, "Fields to keep, comma-separated (or a JSON list)."
    )
    rename: dict[str, str] = setting(doc="JSON map old name -> new name.", factory=dict)
    max_record_bytes: int = setting(1_000_000, "Larger input or output values go to the DLQ.", gt=0)
    transform_retries: int = setting(
        2, "Retries of a step that raised, before the DLQ.", ge=0, le=100
    )


class WindowSettings(View):
    """Window: the declarative window step (`none`: a stateless pipeline)."""

    flat_prefix: ClassVar[str] = "window_"

    kind: WindowType = setting("tumbling", "Window kind.", name="window_type")
    size_ms: int = setting(10_000, "Window size (tumbling, hopping, sliding).", ge=0)
    advance_ms: int = setting(0, "Hop of hopping windows (0 < advance <= size).", ge=0)
    gap_ms: int = setting(0, "Inactivity gap of session windows.", ge=0)
    count: int = setting(
        0,
        "Records per window of a key (count_tumbling, count_hopping); a count window "
        "closes when full, never by time (docs/count-windows.md).",
        ge=0,
    )
    count_advance: int = setting(
        0, "Records between the starts of two count_hopping windows (0 < advance <= count).", ge=0
    )
    grace_ms: int = setting(
        2_000, "How far behind the max event time records are still on time.", ge=0
    )
    time_field: Annotated[str | None, BeforeValidator(_empty_is_none)] = setting(
        "created_at", "Event-time field (empty: the Kafka timestamp)."
    )
    emit: Literal["final", "update"] = setting(
        "final", "`final`: once, when the window closes; `update`: each batch that changes it."
    )
    idle_timeout_ms: int = setting(
        5_000,
        "Idle time after which a partition's watermark follows the wall clock (0: never).",
        ge=0,
    )
    aggregates: Annotated[list[str], NoDecode, BeforeValidator(_split_list)] = setting(
        doc="Aggregates, comma-separated: `count`, `sum:f`, `min:f`, `max:f`, `mean:f`, "
        "`first:f`, `last:f`, each optionally `as name`.",
        name="aggregates",
        factory=lambda: ["count", "sum:amount as total", "max:amount", "mean:amount"],
    )
    max_future_ms: int = setting(
        3_600_000,
        "Records whose event time is further ahead of the wall clock go to the DLQ "
        "(`EventTimeError`), so one bad clock cannot make every later record late "
        "(0: no limit).",
        ge=0,
    )


class DedupeSettings(View):
    """De-duplication: drop records whose id was seen within a time window (Redis keeps the ids)."""

    flat_prefix: ClassVar[str] = "dedupe_"

    id_field: Annotated[str | None, BeforeValidator(_empty_is_none)] = setting(
        None,
        "Field holding each record's id (dots reach nested fields); a record whose id was "
        "seen within the window is dropped (empty: no de-duplication).",
        name="dedupe_field",
    )
    window_ms: int = setting(
        3_600_000,
        "How long an id is remembered after the record that carried it (Kafka timestamps).",
        gt=0,
    )
    dlq: bool = setting(
        False, "A duplicate also goes to the DLQ (stage `duplicate`); else it is only counted."
    )


class RepartitionSettings(View):
    """Repartition topic: where `group_by` re-keys records (`<group_id>-repartition`)."""

    flat_prefix: ClassVar[str] = "repartition_"

    partitions: int = setting(
        0,
        "Partitions of the repartition topic when rill creates it (0: as many as the "
        "input topic). An existing topic keeps its count.",
        ge=0,
        le=10_000,
    )
    retention_ms: int = setting(
        7 * 24 * 3600 * 1000,
        "`retention.ms` of the repartition topic when rill creates it (cleanup policy "
        "`delete`): how long re-keyed records wait for stage two, e.g. while every "
        "worker is down (-1: forever).",
        ge=-1,
    )


class StateSettings(View):
    """State: Redis, where window state lives."""

    flat_prefix: ClassVar[str] = "redis_"

    url: SecretStr = setting(
        SecretStr("redis://127.0.0.1:16379/0"),
        "Redis for window state (`rediss://` for TLS; a secret).",
    )
    password: SecretStr | None = setting(
        None, "Redis AUTH password (or put it in the URL; both kept secret)."
    )
    ssl_ca_certs: str | None = setting(None, "CA file for `rediss://`.")
    cluster: bool = setting(False, "The URL is a node of a Redis Cluster.")
    timeout_s: float = setting(5.0, "Redis socket timeout.", gt=0)
    prefix: str = setting("rill", "First part of every key.")
    ttl_s: int = setting(
        7 * 24 * 3600,
        "TTL on every state key, refreshed while the partition is owned (collects "
        "abandoned state).",
        name="state_ttl_s",
        gt=0,
    )
    loss: Literal["fail", "reset"] = setting(
        "fail",
        "Redis lost state Kafka's commits say it had: `fail` holds the partition (not "
        "ready), `reset` goes on from what Redis has (counted, logged).",
        name="state_loss",
    )
    overlap: bool = setting(
        True,
        "Apply a batch's window state in Redis (one thread) while the next batch is "
        "fetched and decoded; `false`: one step after the other (also when tracing is on).",
        name="state_overlap",
    )


class RetrySettings(View):
    """Retries: backoff of every retry loop, and the circuit breakers."""

    base_s: float = setting(0.2, "First backoff.", name="retry_base_s", gt=0)
    max_s: float = setting(10.0, "Largest backoff.", name="retry_max_s", gt=0)
    breaker_threshold: int = setting(3, "Failures in a row that open a breaker.", ge=1)
    breaker_reset_s: float = setting(5.0, "Seconds an open breaker waits before a trial.", gt=0)


class ObservabilitySettings(View):
    """Observability: metrics and health endpoint, logs and traces."""

    metrics_port: int = setting(
        9400, "Port of `/metrics`, `/healthz`, `/readyz` (0: off).", ge=0, le=65535
    )
    health_stall_s: float = setting(
        60.0, "`/healthz` fails when the poll loop has not turned for this long.", gt=0
    )
    summary_interval_s: float = setting(10.0, "Period of the summary log line.", gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", "Log level.")
    log_format: Literal["json", "console"] = setting("json", "Log line format.")
    tracing_enabled: bool = setting(False, "An OpenTelemetry span per batch.")
    traces_exporter: Literal["otlp", "console"] = setting(
        "otlp",
        "Where spans go (the OpenTelemetry variable, without the RILL_ prefix).",
        name="otel_traces_exporter",
        validation_alias=AliasChoices("OTEL_TRACES_EXPORTER", "otel_traces_exporter"),
    )
