"""Avro values (fastavro, schemaless), plain or in the Confluent wire format."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError

from service.errors import DecodeError, EncodeError
from service.serde.wire import Wire


def read_avro(
    data: bytes, start: int, writer: Any, reader: Any, schema_id: int | None = None
) -> Any:
    """One Avro record that must fill `data` from `start` to its end (strict decode).

    Args:
        data: the whole value.
        start: where the payload starts (after any wire header).
        writer: the parsed writer schema.
        reader: the parsed reader schema, or None to read in the writer's shape.
        schema_id: the writer's registry id, named in errors (None: "the schema").
    """
    buf = BytesIO(data)
    buf.seek(start)
    try:
        record = fastavro.schemaless_reader(buf, writer, reader)
    except SchemaResolutionError as exc:
        raise DecodeError(
            f"writer {_name(schema_id)} is incompatible with the reader schema: {exc}"
        ) from exc
    except Exception as exc:
        raise DecodeError(
            f"not an Avro record of {_name(schema_id)}: {type(exc).__name__}: {exc}"
        ) from exc
    if buf.tell() != len(data):
        raise DecodeError(
            f"{len(data) - buf.tell()} trailing bytes after the Avro record of {_name(schema_id)}"
            " (wrong schema?)"
        )
    return record


def _name(schema_id: int | None) -> str:
    return "the schema" if schema_id is None else f"schema id {schema_id}"


def write_avro(header: bytes, schema: Any, record: Any) -> bytes:
    """A wire header, then the record in the schema; a misfit raises EncodeError."""
    buf = BytesIO()
    buf.write(header)
    try:
        fastavro.schemaless_writer(buf, schema, record, strict_allow_default=True)
    except Exception as exc:
        raise EncodeError(f"record does not fit the output schema: {exc}") from exc
    return buf.getvalue()


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
        return read_avro(data, self.wire.payload_start(data), self.schema, None)

    def encode(self, record: Any) -> bytes:
        """A record to bytes; a record that does not fit the schema raises EncodeError."""
        return write_avro(self.wire.header(), self.schema, record)
