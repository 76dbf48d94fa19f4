"""JSON values in the Confluent wire format, checked against JSON Schemas by id."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson

from service.errors import DecodeError, EncodeError
from service.serde.schema_cache import SchemaCache

HEADER_SIZE = 5


def prepare_json(schema_type: str, text: str) -> Any:
    """A `SchemaCache.prepare` for JSON Schema: a validator of the writer schema."""
    if schema_type.upper() != "JSON":
        raise ValueError(f"schema type {schema_type}, not JSON")
    schema = orjson.loads(text)
    return jsonschema.validators.validator_for(schema)(schema)


class RegistryJsonSerde:
    """Decode JSON by schema id (validated against it); encode with one output id.

    Args:
        cache: writer schemas (validators) by id.
        output_id: the schema id written.
    """

    def __init__(self, cache: SchemaCache, output_id: int | None = None) -> None:
        self.cache = cache
        self.output_id = output_id

    def use_output_id(self, schema_id: int) -> None:
        """Write `schema_id` in the header of every value from now on."""
        self.output_id = schema_id

    def decode(self, data: bytes | None) -> Any:
        """Bytes to a dict that the writer's JSON Schema accepts."""
        schema_id, validator = self.cache.header(data)
        assert data is not None
        try:
            record = orjson.loads(data[HEADER_SIZE:])
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"not JSON: {exc}") from exc
        error = jsonschema.exceptions.best_match(validator.iter_errors(record))
        if error is not None:
            raise DecodeError(f"does not match JSON Schema id {schema_id}: {error.message}")
        return record

    def encode(self, record: Any) -> bytes:
        """A record to wire-format JSON with the output schema id."""
        if self.output_id is None:
            raise EncodeError("no output schema id for the registry JSON serde")
        try:
            return b"\x00" + self.output_id.to_bytes(4, "big") + orjson.dumps(record)
        except TypeError as exc:
            raise EncodeError(f"record is not JSON-serializable: {exc}") from exc
