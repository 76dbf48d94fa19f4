"""Avro values in the Confluent wire format with writer schemas from the registry.

Each writer schema is resolved against the pipeline's reader schema (schema evolution:
fields added with defaults, removed, promoted types); records come out in the reader
shape. With no reader schema, records keep their writer shape.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import fastavro

from service.errors import EncodeError
from service.serde.avro_serde import read_avro, write_avro
from service.serde.schema_cache import SchemaCache
from service.serde.wire import ConfluentWire

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
        output_schema: the schema records are encoded with.
        output_id: its registry id; when the worker starts it is handed over by
            `use_output_id`.
    """

    def __init__(
        self,
        cache: SchemaCache,
        output_schema: dict[str, Any] | None = None,
        output_id: int | None = None,
    ) -> None:
        self.cache = cache
        self._known = cache.known
        self._schema = fastavro.parse_schema(output_schema) if output_schema else None
        self._wire = ConfluentWire(output_id) if output_id is not None else None

    def use_output_id(self, schema_id: int) -> None:
        """Write `schema_id` in the header of every value from now on."""
        self._wire = ConfluentWire(schema_id)

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
        return read_avro(data, HEADER_SIZE, writer, reader, schema_id)

    def encode(self, record: Any) -> bytes:
        """A record to wire-format bytes with the output schema's id."""
        if self._schema is None or self._wire is None:
            raise EncodeError("no output schema and id for the registry Avro serde")
        return write_avro(self._wire.header(), self._schema, record)
