"""Avro values in the Confluent wire format with writer schemas from the registry.

Each writer schema is resolved against the pipeline's reader schema (schema evolution:
fields added with defaults, removed, promoted types); records come out in the reader
shape. With no reader schema, records keep their writer shape.
"""

from __future__ import annotations

import json
import struct
from io import BytesIO
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError

from service.errors import DecodeError, EncodeError
from service.serde.registry import SchemaCache

HEADER_SIZE = 5
_ID = struct.Struct(">I")


def prepare_avro(reader: dict[str, Any] | None) -> Any:
    """A `SchemaCache.prepare` for Avro: (parsed writer, reader or None when identical)."""
    reader_text = json.dumps(reader, sort_keys=True) if reader is not None else None
    parsed_reader = fastavro.parse_schema(reader) if reader is not None else None

    def prepare(schema_type: str, text: str) -> tuple[Any, Any]:
        if schema_type.upper() != "AVRO":
            raise ValueError(f"schema type {schema_type}, not AVRO")
        writer = json.loads(text)
        same = reader_text is not None and json.dumps(writer, sort_keys=True) == reader_text
        return fastavro.parse_schema(writer), None if same else parsed_reader

    return prepare


class RegistryAvroSerde:
    """Decode Confluent wire-format Avro by schema id; encode with one output schema.

    Args:
        cache: writer schemas by id (filled at the edge).
        output: the output schema and its id, for encoding.
    """

    def __init__(
        self, cache: SchemaCache, output: tuple[dict[str, Any], int] | None = None
    ) -> None:
        self.cache = cache
        self._known = cache.known
        self._output = (fastavro.parse_schema(output[0]), output[1]) if output else None

    def decode(self, data: bytes | None) -> Any:
        """Bytes to a record in the reader shape."""
        # The hot path: one C-level unpack and one dict lookup; anything unusual takes
        # the checked path, which raises the precise reason.
        try:
            schema_id = _ID.unpack_from(data, 1)[0]  # type: ignore[arg-type]
            writer, reader = self._known[schema_id]
            if data[0]:  # type: ignore[index]
                raise KeyError(schema_id)
        except (TypeError, KeyError, struct.error):
            schema_id, (writer, reader) = self.cache.header(data)
        assert data is not None
        buf = BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(buf, writer, reader)
        except SchemaResolutionError as exc:
            raise DecodeError(
                f"writer schema id {schema_id} is incompatible with the reader schema: {exc}"
            ) from exc
        except Exception as exc:
            raise DecodeError(
                f"not an Avro record of schema id {schema_id}: {type(exc).__name__}: {exc}"
            ) from exc
        if buf.tell() != len(data):
            raise DecodeError(
                f"{len(data) - buf.tell()} trailing bytes after the Avro record "
                f"of schema id {schema_id}"
            )
        return record

    def encode(self, record: Any) -> bytes:
        """A record to wire-format bytes with the output schema's id."""
        if self._output is None:
            raise EncodeError("no output schema configured for the registry serde")
        schema, schema_id = self._output
        buf = BytesIO()
        buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
        try:
            fastavro.schemaless_writer(buf, schema, record, strict_allow_default=True)
        except Exception as exc:
            raise EncodeError(f"record does not fit the output schema: {exc}") from exc
        return buf.getvalue()
