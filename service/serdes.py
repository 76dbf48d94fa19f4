"""Serdes for both sides of a pipeline, from settings, including the registry wire format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from service.config import Settings
from service.errors import ConfigError
from service.kafka.registry import RegistryResolver, record_name_of, subject_name
from service.serde import Serde, build_serde
from service.serde.avro_registry import RegistryAvroSerde, prepare_avro
from service.serde.json_registry import RegistryJsonSerde, prepare_json
from service.serde.protobuf_serde import ProtobufSerde, load_message_class
from service.serde.registry import SchemaCache


def _prepare_protobuf(schema_type: str, _text: str) -> bool:
    # The reader type decodes every compatible writer version; the id must exist and be
    # a Protobuf schema.
    if schema_type.upper() != "PROTOBUF":
        raise ValueError(f"schema type {schema_type}, not PROTOBUF")
    return True


def _read_json(path: str, setting: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"RILL_{setting}_SCHEMA: {path} is not valid JSON: {exc}") from exc


def side_serde(settings: Settings, side: Literal["input", "output"]) -> Serde:
    """One side's serde in the plain or fixed-id Confluent wire format.

    Raises:
        ConfigError: the side uses the registry wire format, which needs the registry
            client that `build_serdes` wires.
    """
    s = settings
    wire = getattr(s, f"{side}_wire")
    if wire == "registry":
        raise ConfigError(
            f"RILL_{side.upper()}_WIRE=registry: this command reads or writes only the plain "
            "and confluent wire formats"
        )
    return build_serde(
        getattr(s, f"{side}_format"),
        getattr(s, f"{side}_schema"),
        wire,
        getattr(s, f"{side}_schema_id"),
        side,
        getattr(s, f"{side}_proto_message"),
    )


def build_serdes(settings: Settings) -> tuple[Serde, Serde, RegistryResolver | None]:
    """(decoder, encoder, the registry resolver when either side uses the registry)."""
    s = settings
    if "registry" not in (s.input_wire, s.output_wire):
        return side_serde(s, "input"), side_serde(s, "output"), None
    resolver = RegistryResolver(s.registry_config(), None, s.schema_registry_retries).start()
    decoder = (
        _registry_decoder(s, resolver) if s.input_wire == "registry" else side_serde(s, "input")
    )
    encoder = (
        _registry_encoder(s, resolver) if s.output_wire == "registry" else side_serde(s, "output")
    )
    return decoder, encoder, resolver


def _registry_decoder(s: Settings, resolver: RegistryResolver) -> Serde:
    if s.input_format == "protobuf":
        assert s.input_schema is not None
        assert s.input_proto_message is not None
        cache = SchemaCache(_prepare_protobuf)
        resolver.cache = cache
        return ProtobufSerde(load_message_class(s.input_schema, s.input_proto_message), cache=cache)
    if s.input_format == "avro":
        reader = _read_json(s.input_schema, "INPUT") if s.input_schema else None
        cache = SchemaCache(prepare_avro(reader))
        resolver.cache = cache
        return RegistryAvroSerde(cache)
    cache = SchemaCache(prepare_json)
    resolver.cache = cache
    return RegistryJsonSerde(cache)


def _registry_encoder(s: Settings, resolver: RegistryResolver) -> Serde:
    assert s.output_schema is not None
    text = Path(s.output_schema).read_text()
    name: str | None
    if s.output_format == "protobuf":
        if not s.output_schema.endswith(".proto"):
            raise ConfigError(
                "RILL_OUTPUT_SCHEMA: the registry needs the .proto text of the "
                "output type, not a descriptor set"
            )
        schema_type, name = "PROTOBUF", s.output_proto_message
    else:
        schema_type = "AVRO" if s.output_format == "avro" else "JSON"
        name = record_name_of(text, schema_type)
    subject = subject_name(s.output_subject_strategy, s.output_topic, name)
    schema_id = resolver.output_id(subject, text, schema_type, s.output_auto_register)
    if s.output_format == "protobuf":
        assert s.output_proto_message is not None
        return ProtobufSerde(
            load_message_class(s.output_schema, s.output_proto_message), output_id=schema_id
        )
    if s.output_format == "avro":
        return RegistryAvroSerde(
            SchemaCache(prepare_avro(None)), output=(json.loads(text), schema_id)
        )
    return RegistryJsonSerde(SchemaCache(prepare_json), output_id=schema_id)
