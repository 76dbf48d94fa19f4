"""JSON values (orjson): objects only, plain or in the Confluent wire format."""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import DecodeError, EncodeError
from service.serde.wire import Wire


class JsonSerde:
    """Decode and encode JSON objects.

    Args:
        wire: the framing of values.
    """

    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    def decode(self, data: bytes | None) -> Any:
        """Bytes to a dict; anything but a JSON object raises DecodeError."""
        if data is None:
            raise DecodeError("null value (tombstone) where a JSON object was expected")
        start = self.wire.payload_start(data)
        try:
            record = orjson.loads(data[start:] if start else data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise DecodeError(f"JSON {type(record).__name__} where an object was expected")
        return record

    def encode(self, record: Any) -> bytes:
        """A record to JSON bytes (datetimes as RFC 3339)."""
        try:
            return self.wire.header() + orjson.dumps(record)
        except TypeError as exc:
            raise EncodeError(f"record is not JSON-serializable: {exc}") from exc
