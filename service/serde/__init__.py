"""Serde: bytes to records and back. One small protocol, one module per format.

`service.serdes` builds the serdes a pipeline's settings ask for; `schema_cache` holds the
registry's schemas as plain values; the registry client itself is at the edge
(`service.kafka.registry_client`).
"""

from __future__ import annotations

from typing import Any, Protocol

from service.serde.avro_serde import AvroSerde
from service.serde.json_serde import JsonSerde
from service.serde.protobuf_serde import ProtobufSerde


class Serde(Protocol):
    """Turns Kafka value bytes into a record and a record into bytes.

    `decode` raises `DecodeError` and `encode` raises `EncodeError`; nothing else.
    """

    def decode(self, data: bytes | None) -> Any: ...

    def encode(self, record: Any) -> bytes: ...


__all__ = ["AvroSerde", "JsonSerde", "ProtobufSerde", "Serde"]
