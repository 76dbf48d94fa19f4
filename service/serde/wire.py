"""Framing of a serialized value: plain, or the Confluent wire format.

Confluent wire format: byte 0 is the magic 0, bytes 1-4 the schema id (big endian),
then the payload.
"""

from __future__ import annotations

import struct
from typing import Protocol

from service.errors import DecodeError

_HEADER = struct.Struct(">bI")


class Wire(Protocol):
    """Where a value's payload starts, and the header a written value gets."""

    def payload_start(self, data: bytes) -> int: ...

    def header(self) -> bytes: ...


class PlainWire:
    """No framing: the payload is the whole value."""

    def payload_start(self, data: bytes) -> int:
        """The payload starts at byte 0."""
        return 0

    def header(self) -> bytes:
        """No header."""
        return b""


class ConfluentWire:
    """Magic byte + 4-byte schema id; only the configured id is accepted.

    Args:
        schema_id: the id written, and the only one accepted on read (a registry
            resolves others; without one, an unknown id is a DLQ entry).
    """

    def __init__(self, schema_id: int) -> None:
        self.schema_id = schema_id
        self._header = _HEADER.pack(0, schema_id)

    def payload_start(self, data: bytes) -> int:
        """Check magic byte and schema id; the payload starts at byte 5."""
        if data[:5] == self._header:  # the hot path: one slice compared in C
            return 5
        if len(data) < _HEADER.size:
            raise DecodeError(f"value of {len(data)} bytes is shorter than the wire header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != 0:
            raise DecodeError(f"unknown magic byte {magic} (expected 0, Confluent wire format)")
        if schema_id != self.schema_id:
            raise DecodeError(f"unknown schema id {schema_id} (expected {self.schema_id})")
        return _HEADER.size

    def header(self) -> bytes:
        """Magic byte and schema id."""
        return self._header
