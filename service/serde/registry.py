"""Schemas by id, for values in the Confluent wire format: a cache the decoders read.

The registry is only asked at the edge (`kafka.registry.RegistryResolver.prefetch`),
once per unknown id and batch; the decoders only look up this cache, so decoding
stays pure and no record causes an HTTP request.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.errors import DecodeError

_HEADER = struct.Struct(">bI")


def peek_schema_id(data: bytes | None) -> int | None:
    """The schema id of a Confluent wire-format value, or None when it is not one."""
    if data is None or len(data) < _HEADER.size or data[0] != 0:
        return None
    return int(_HEADER.unpack_from(data)[1])


@dataclass(slots=True)
class SchemaCache:
    """Writer schemas by id, each prepared by `prepare` for one format.

    Attributes:
        prepare: turns the registry's (schema type, schema text) into what the decoder
            needs (a parsed Avro schema, a JSON Schema validator...).
        known: prepared schemas by id.
        failed: why an id could not be had, for this batch (retried with the next one).
    """

    prepare: Callable[[str, str], Any]
    known: dict[int, Any] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)

    def header(self, data: bytes | None) -> tuple[int, Any]:
        """(schema id, prepared writer schema) of a value; DecodeError when unusable."""
        if data is None:
            raise DecodeError("null value (tombstone) where a record was expected")
        if len(data) < _HEADER.size:
            raise DecodeError(f"value of {len(data)} bytes is shorter than the wire header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != 0:
            raise DecodeError(f"unknown magic byte {magic} (expected 0, Confluent wire format)")
        prepared = self.known.get(schema_id)
        if prepared is None:
            raise DecodeError(self.failed.get(schema_id, f"unknown schema id {schema_id}"))
        return schema_id, prepared
