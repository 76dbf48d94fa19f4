"""Schemas of the registry wire format, as plain values: a cache the decoders read, and
the output schema an encoder waits for.

The registry is only asked at the edge (`kafka.registry_client.RegistryResolver`): once
per unknown id and batch (`prefetch`), and once at start for the output schema id
(`resolve_output`); the serdes only read these values, so decoding stays pure and no
record causes an HTTP request.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.errors import DecodeError
from service.records import TP, InRecord

_HEADER = struct.Struct(">bI")


def peek_schema_id(data: bytes | None) -> int | None:
    """The schema id of a Confluent wire-format value, or None when it is not one."""
    if data is None or len(data) < _HEADER.size or data[0] != 0:
        return None
    return int(_HEADER.unpack_from(data)[1])


def split_waiting(
    records: Sequence[InRecord], waiting: Collection[int]
) -> tuple[list[InRecord], list[InRecord]]:
    """(records that go on, records that wait) for the writer schema ids in `waiting`.

    A partition waits from its first record with such an id on (later records of it
    too, so its offsets stay in order); other partitions go on.
    """
    ready: list[InRecord] = []
    held: list[InRecord] = []
    stopped: set[TP] = set()
    for record in records:
        tp = (record.topic, record.partition)
        if tp in stopped or peek_schema_id(record.value) in waiting:
            stopped.add(tp)
            held.append(record)
        else:
            ready.append(record)
    return ready, held


@dataclass(slots=True)
class SchemaCache:
    """Writer schemas by id, each prepared by `prepare` for one format.

    Attributes:
        prepare: turns the registry's (schema type, schema text) into what the decoder
            needs (a parsed Avro schema, a JSON Schema validator...).
        known: prepared schemas by id.
        failed: why an id could not be had, for this batch (asked again with the next):
            its records go to the DLQ with this reason.
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


class TakesOutputId(Protocol):
    """An encoder that writes the registry id of its output schema, known only at start."""

    def use_output_id(self, schema_id: int) -> None:
        """Write `schema_id` in the header of every value from now on."""


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """The output schema to look up (or register) when the worker starts.

    Attributes:
        subject: the registry subject (after the subject name strategy).
        text: the schema text (.avsc, .proto or JSON Schema).
        schema_type: AVRO, PROTOBUF or JSON.
        auto_register: register the schema when the subject does not hold it.
        encoder: the encoder that is handed the id.
    """

    subject: str
    text: str
    schema_type: str
    auto_register: bool
    encoder: TakesOutputId
