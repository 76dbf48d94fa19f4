"""Protobuf values: message types from a .proto file, a descriptor set, or generated code.

Confluent wire format for Protobuf: magic byte, schema id, then the message indexes (a
zigzag-varint count and indexes; a single 0 byte for the first message), then the
message. Protobuf's own evolution rules apply: unknown fields are skipped, missing ones
read as defaults, so one reader type decodes every compatible writer version.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import Message

from service.errors import ConfigError, DecodeError, EncodeError
from service.serde.schema_cache import SchemaCache
from service.serde.wire import Wire

HEADER_SIZE = 5


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated message indexes in the Protobuf wire header")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("malformed varint in the Protobuf wire header")


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def skip_message_indexes(data: bytes, pos: int) -> int:
    """Position after the message-index list that follows the schema id."""
    count, pos = _read_varint(data, pos)
    for _ in range(_zigzag(count)):
        _, pos = _read_varint(data, pos)
    return pos


def load_message_class(path: str, message: str) -> type[Message]:
    """The message class `message` (full name) from a .proto file or a descriptor set.

    A .proto file is compiled with the protoc that grpcio-tools ships.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"Protobuf schema {path} is not a file")
    if source.suffix == ".proto":
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "set.pb"
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "grpc_tools.protoc",
                    f"-I{source.parent}",
                    f"--descriptor_set_out={out}",
                    "--include_imports",
                    source.name,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise ConfigError(f"cannot compile {path}: {done.stderr.strip()}")
            data = out.read_bytes()
    else:
        data = source.read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    try:
        descriptor = pool.FindMessageTypeByName(message)
    except KeyError as exc:
        known = [m for f in files.file for m in (f"{f.package}.{t.name}" for t in f.message_type)]
        raise ConfigError(f"message {message!r} not in {path} (has: {', '.join(known)})") from exc
    return message_factory.GetMessageClass(descriptor)


def message_to_dict(msg: Message) -> dict[str, Any]:
    """A message as a dict of Python values (ints stay ints, enums become names)."""
    out: dict[str, Any] = {}
    for fd in msg.DESCRIPTOR.fields:
        value = getattr(msg, fd.name)
        out[fd.name] = _value(fd, value)
    return out


def _value(fd: Any, value: Any) -> Any:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        vfd = fd.message_type.fields_by_name["value"]
        return {k: _single(vfd, v) for k, v in value.items()}
    if fd.is_repeated:
        return [_single(fd, v) for v in value]
    return _single(fd, value)


def _single(fd: Any, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return message_to_dict(value)
    if fd.type == FieldDescriptor.TYPE_ENUM and fd.enum_type is not None:
        enum_value = fd.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    return value


class ProtobufSerde:
    """Decode and encode one Protobuf message type.

    Args:
        message_class: the reader (and writer) type.
        wire: plain, or fixed-id Confluent framing (with message indexes).
        cache: with the registry, the known schema ids (instead of `wire`).
        output_id: the schema id written with the registry.
        registry_output: encode in the registry wire format, with the id handed over
            by `use_output_id` when the worker starts.
    """

    def __init__(
        self,
        message_class: type[Message],
        wire: Wire | None = None,
        cache: SchemaCache | None = None,
        output_id: int | None = None,
        registry_output: bool = False,
    ) -> None:
        self.cls = message_class
        self.wire = wire
        self.cache = cache
        self.output_id = output_id
        self._registry_output = registry_output or output_id is not None

    def use_output_id(self, schema_id: int) -> None:
        """Write `schema_id` in the header of every value from now on (registry wire)."""
        self.output_id = schema_id
        self._registry_output = True

    def decode(self, data: bytes | None) -> Any:
        """Bytes to a dict of the message's fields."""
        if self.cache is not None:
            self.cache.header(data)
            assert data is not None
            start = skip_message_indexes(data, HEADER_SIZE)
        else:
            if data is None:
                raise DecodeError("null value (tombstone) where a Protobuf message was expected")
            assert self.wire is not None
            start = self.wire.payload_start(data)
            if start:
                start = skip_message_indexes(data, start)
        try:
            msg = self.cls.FromString(data[start:])
        except ProtoDecodeError as exc:
            raise DecodeError(f"not a {self.cls.DESCRIPTOR.full_name}: {exc}") from exc
        return message_to_dict(msg)

    def encode(self, record: Any) -> bytes:
        """A dict (or message) to bytes, framed like the input."""
        try:
            msg = (
                record if isinstance(record, Message) else json_format.ParseDict(record, self.cls())
            )
        except (json_format.ParseError, TypeError) as exc:
            raise EncodeError(
                f"record does not fit {self.cls.DESCRIPTOR.full_name}: {exc}"
            ) from exc
        if self._registry_output:
            if self.output_id is None:
                raise EncodeError("no output schema id for the registry Protobuf serde")
            header = b"\x00" + self.output_id.to_bytes(4, "big") + b"\x00"
        elif self.wire is not None and self.wire.header():
            header = self.wire.header() + b"\x00"
        else:
            header = b""
        return header + msg.SerializeToString()
