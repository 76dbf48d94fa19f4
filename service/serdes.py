"""Serdes for both sides of a pipeline, from settings, including the registry wire format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def build_serdes(settings: Settings) -> tuple[Serde, Serde, RegistryResolver | None]:
    """(decoder, encoder, the registry resolver when either side uses the registry)."""
    s = settings
    resolver = None
    if "registry" in (s.input_wire, s.output_wire):
        resolver = RegistryResolver(s.registry_config(), None, s.schema_registry_retries).start()
    if s.input_wire == "registry":
        assert resolver is not None
        decoder = _registry_decoder(s, resolver)
    else:
        decoder = build_serde(
            s.input_format,
            s.input_schema,
            s.input_wire,
            s.input_schema_id,
            "input",
            s.input_proto_message,
        )
    if s.output_wire == "registry":
        assert resolver is not None
        encoder = _registry_encoder(s, resolver)
    else:
        encoder = build_serde(
            s.output_format,
            s.output_schema,
            s.output_wire,
            s.output_schema_id,
            "output",
            s.output_proto_message,
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
