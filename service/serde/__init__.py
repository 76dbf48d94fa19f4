"""Serde: bytes to records and back. One small protocol, one module per format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Protocol

from service.errors import ConfigError
from service.serde.avro_serde import AvroSerde
from service.serde.json_serde import JsonSerde
from service.serde.protobuf_serde import ProtobufSerde, load_message_class
from service.serde.wire import ConfluentWire, PlainWire, Wire


class Serde(Protocol):
    """Turns Kafka value bytes into a record and a record into bytes.

    `decode` raises `DecodeError` and `encode` raises `EncodeError`; nothing else.
    """

    def decode(self, data: bytes | None) -> Any: ...

    def encode(self, record: Any) -> bytes: ...


def build_serde(
    fmt: Literal["avro", "json", "protobuf"],
    schema_file: str | None,
    wire: Literal["plain", "confluent", "registry"],
    schema_id: int | None,
    setting: str,
    proto_message: str | None = None,
) -> Serde:
    """The serde for one side of the pipeline (input or output).

    Args:
        fmt: avro, json or protobuf.
        schema_file: the .avsc file (avro), .proto or descriptor set (protobuf).
        wire: plain bytes or the Confluent wire format with a fixed schema id (the
            registry wire format is built by `service.app`, which owns the client).
        schema_id: the schema id written, and the one accepted on read.
        setting: the settings prefix (`input` / `output`) named in errors.
        proto_message: the full name of the Protobuf message type.
    """
    framing: Wire = ConfluentWire(schema_id or 0) if wire == "confluent" else PlainWire()
    if fmt == "json":
        return JsonSerde(framing)
    if fmt == "protobuf":
        if schema_file is None or proto_message is None:
            raise ConfigError(f"RILL_{setting.upper()}_SCHEMA and _PROTO_MESSAGE are needed")
        return ProtobufSerde(load_message_class(schema_file, proto_message), framing)
    if schema_file is None:
        raise ConfigError(f"RILL_{setting.upper()}_SCHEMA: avro needs a schema file")
    try:
        schema = json.loads(Path(schema_file).read_text())
        return AvroSerde(schema, framing)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"RILL_{setting.upper()}_SCHEMA: {schema_file} is not a valid Avro schema: {exc}"
        ) from exc


__all__ = ["AvroSerde", "JsonSerde", "ProtobufSerde", "Serde", "build_serde"]
