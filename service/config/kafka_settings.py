"""The Kafka side's settings: connection and group, consumer, producer, topics."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeAlias

from pydantic import SecretStr

from service.config.declare import View, setting

Guarantee: TypeAlias = Literal["at_least_once", "exactly_once"]
Client: TypeAlias = Literal["consumer", "producer"]
# kafka_extra keys with these prefixes go only to that client (see `KafkaSettings.extra_for`).
CLIENT_SCOPES = ("consumer.", "producer.")


def secret(value: SecretStr | None) -> str | None:
    """The text of a secret setting, where it is set."""
    return value.get_secret_value() if value is not None else None


class KafkaSettings(View):
    """Kafka: connection, security, group and delivery guarantee, shared by every client."""

    flat_prefix: ClassVar[str] = "kafka_"

    bootstrap_servers: str = setting(
        "127.0.0.1:19092", "Kafka bootstrap servers.", name="bootstrap_servers"
    )
    group_id: str = setting("rill", "Consumer group id.", name="group_id")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = setting(
        "PLAINTEXT", "How clients talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = setting(
        None, "SASL mechanism (required with SASL)."
    )
    sasl_username: str | None = setting(None, "SASL user (required with SASL).")
    sasl_password: SecretStr | None = setting(None, "SASL password (a secret, never logged).")
    ssl_ca_location: str | None = setting(None, "CA file of the brokers' TLS (must exist).")
    ssl_certificate_location: str | None = setting(
        None, "Client certificate file for TLS (must exist)."
    )
    ssl_key_location: str | None = setting(None, "Client key file for TLS (must exist).")
    ssl_key_password: SecretStr | None = setting(None, "Password of the TLS client key.")
    guarantee: Guarantee = setting(
        "at_least_once",
        "`exactly_once` runs each batch as one Kafka transaction (outputs, DLQ, offsets).",
        name="processing_guarantee",
    )
    transaction_timeout_ms: int = setting(
        60_000,
        "Exactly-once: how long a crashed worker's open transaction can block readers.",
        name="transaction_timeout_ms",
        ge=1_000,
        le=900_000,
    )
    extra: dict[str, str] = setting(
        doc="JSON map of extra librdkafka settings for all clients; keys prefixed "
        "`consumer.` / `producer.` go to that client only (e.g. "
        '`{"consumer.fetch.max.bytes": "1048576"}`).',
        factory=dict,
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
            "sasl.password": secret(self.sasl_password),
            "ssl.key.password": secret(self.ssl_key_password),
        }
        conf.update({k: v for k, v in secrets.items() if v is not None})
        return conf

    def extra_for(self, client: Client) -> dict[str, str]:
        """`kafka_extra` keys like `consumer.fetch.max.bytes`, for that client only."""
        prefix = f"{client}."
        return {k[len(prefix) :]: v for k, v in self.extra.items() if k.startswith(prefix)}


class ConsumerSettings(View):
    """Consumer: the group consumer and the batches it hands to the worker."""

    batch_size: int = setting(
        5000,
        "Most records per micro-batch. Under load a batch fills to this before the poll "
        "timeout, so per-batch costs (the Redis round trip, the producer flush, a "
        "transaction) are shared by more records (docs/performance.md).",
        gt=0,
        le=100_000,
    )
    poll_timeout_s: float = setting(
        0.005,
        "Longest wait for a batch to fill: below the maximum rate a record waits at most "
        "this long, so batches stay small and latency low; raise it for fewer, larger "
        "batches at moderate rates (docs/performance.md).",
        gt=0,
        le=30,
    )
    max_poll_interval_ms: int = setting(300_000, "librdkafka `max.poll.interval.ms`.", ge=10_000)
    queue_kbytes: int = setting(
        16_384,
        "Records fetched ahead, at most (librdkafka `queued.max.messages.kbytes`).",
        name="consumer_queue_kbytes",
        ge=1024,
    )
    stats_interval_ms: int = setting(
        5_000,
        "librdkafka statistics period: lag metrics, and the offsets the idle check uses "
        "(0: off; a partition then counts as idle only against the high watermark).",
        ge=0,
    )
    processes: int = setting(
        1,
        "Group members run in this container, each its own process with its own consumer, "
        "producer and Redis client, under one supervisor that serves the endpoints "
        "(docs/processes.md). 1: one process, no supervisor.",
        name="processes",
        ge=1,
        le=64,
    )


class ProducerSettings(View):
    """Producer: the batching producer of sink, DLQ and late records."""

    flat_prefix: ClassVar[str] = "producer_"

    linger_ms: int = setting(20, "Producer linger.", ge=0, le=60_000)
    batch_bytes: int = setting(1_048_576, "Producer batch size.", gt=0)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = setting(
        "lz4", "Compression of produced batches."
    )
    queue_kbytes: int = setting(65_536, "Records queued for delivery, at most.", ge=1024)
    delivery_timeout_s: float = setting(
        60.0, "Longest wait for a batch's deliveries.", name="delivery_timeout_s", gt=0
    )
    message_max_bytes: int = setting(
        1_000_000,
        "The producer's `message.max.bytes`: a larger output goes to the DLQ; a larger DLQ "
        "copy keeps a reference to its source record instead of the value.",
        ge=1_000,
        le=1_000_000_000,
    )


class TopicSettings(View):
    """Topics: what a pipeline reads and writes."""

    input: str = setting("orders", "Topic to read.", name="input_topic")
    output: str = setting("orders-by-customer", "Sink topic.", name="output_topic")
    dlq: str = setting("orders-dlq", "Dead-letter topic.", name="dlq_topic")
    late: str | None = setting(None, "Topic for late records (unset: the DLQ).", name="late_topic")
