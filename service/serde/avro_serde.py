"""Avro values (fastavro, schemaless), plain or in the Confluent wire format."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import fastavro

from service.errors import DecodeError, EncodeError
from service.serde.wire import Wire


class AvroSerde:
    """Decode and encode Avro records of one schema.

    Args:
        schema: the Avro schema as parsed JSON.
        wire: the framing of values.
    """

    def __init__(self, schema: dict[str, Any], wire: Wire) -> None:
        self.schema = fastavro.parse_schema(schema)
        self.wire = wire

    def decode(self, data: bytes | None) -> Any:
        """Bytes to a record; the whole value must be consumed."""
        if data is None:
            raise DecodeError("null value (tombstone) where an Avro record was expected")
        start = self.wire.payload_start(data)
        buf = BytesIO(data)
        buf.seek(start)
        try:
            record = fastavro.schemaless_reader(buf, self.schema, None)
        except Exception as exc:
            raise DecodeError(
                f"not an Avro record of the schema: {type(exc).__name__}: {exc}"
            ) from exc
        if buf.tell() != len(data):
            raise DecodeError(
                f"{len(data) - buf.tell()} trailing bytes after the Avro record (wrong schema?)"
            )
        return record

    def encode(self, record: Any) -> bytes:
        """A record to bytes; a record that does not fit the schema raises EncodeError."""
        buf = BytesIO()
        buf.write(self.wire.header())
        try:
            fastavro.schemaless_writer(buf, self.schema, record, strict_allow_default=True)
        except Exception as exc:
            raise EncodeError(f"record does not fit the output schema: {exc}") from exc
        return buf.getvalue()
