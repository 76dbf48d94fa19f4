"""The serdes of both sides of a pipeline, built from settings without any network I/O.

With the registry wire format the serdes come with an unstarted `RegistryResolver`:
the worker starts it (and gets the output schema id) in `service.app.open_plan`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.config import RegistrySettings, SerdeSettings, Settings
from service.errors import ConfigError
from service.kafka.registry_client import RegistryResolver, record_name_of, subject_name
from service.serde import Serde
from service.serde.avro_registry import RegistryAvroSerde, prepare_avro
from service.serde.avro_serde import AvroSerde
from service.serde.json_registry import RegistryJsonSerde, prepare_json
from service.serde.json_serde import JsonSerde
from service.serde.protobuf_serde import ProtobufSerde, load_message_class
from service.serde.schema_cache import OutputSchema, SchemaCache
from service.serde.wire import ConfluentWire, PlainWire, Wire


@dataclass(frozen=True, slots=True)
class Serdes:
    """Both sides' serdes, and the registry edge they need (not started).

    Attributes:
        decoder: input bytes to records.
        encoder: records to output bytes.
        registry: fills the decoder's schema cache and finds the encoder's output id,
            once started; None when neither side uses the registry wire format.
    """

    decoder: Serde
    encoder: Serde
    registry: RegistryResolver | None


def side_serde(side: SerdeSettings) -> Serde:
    """One side's serde in the plain or fixed-id Confluent wire format.

    Raises:
        ConfigError: the side uses the registry wire format (see `build_serdes`), or
            its schema file is unusable.
    """
    if side.wire == "registry":
        raise ConfigError(
            f"{side.env('wire')}=registry: this command reads or writes only the plain "
            "and confluent wire formats"
        )
    framing: Wire = ConfluentWire(side.schema_id or 0) if side.wire == "confluent" else PlainWire()
    if side.format == "json":
        return JsonSerde(framing)
    if side.format == "protobuf":
        if side.schema_file is None or side.proto_message is None:
            raise ConfigError(f"{side.env('schema')} and {side.env('proto_message')} are needed")
        return ProtobufSerde(load_message_class(side.schema_file, side.proto_message), framing)
    if side.schema_file is None:
        raise ConfigError(f"{side.env('schema')}: avro needs a schema file")
    try:
        return AvroSerde(json.loads(Path(side.schema_file).read_text()), framing)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{side.env('schema')}: {side.schema_file} is not a valid Avro schema: {exc}"
        ) from exc


def build_serdes(settings: Settings) -> Serdes:
    """The decoder and encoder of the settings, and the registry edge if one side uses it.

    Reads schema files; opens no connection (the registry is started by the worker).
    """
    s_in, s_out, registry = settings.input, settings.output, settings.registry
    if "registry" not in (s_in.wire, s_out.wire):
        return Serdes(side_serde(s_in), side_serde(s_out), None)
    cache: SchemaCache | None = None
    output: OutputSchema | None = None
    if s_in.wire == "registry":
        decoder, cache = _registry_decoder(s_in)
    else:
        decoder = side_serde(s_in)
    if s_out.wire == "registry":
        encoder, output = _registry_encoder(s_out, registry, settings.topics.output)
    else:
        encoder = side_serde(s_out)
    resolver = RegistryResolver(
        registry.client_config(),
        cache,
        registry.retries,
        output=output,
        retry_interval_s=registry.retry_interval_s,
        wait_s=registry.wait_s,
    )
    return Serdes(decoder, encoder, resolver)


def table_serde(
    table: SerdeSettings, registry: RegistrySettings
) -> tuple[Serde, RegistryResolver | None]:
    """The table's decoder, and with the registry wire format the resolver that fills its
    schema cache (not started; `app.open_plan` starts it, the runtime asks it for the
    writer schemas of each batch's rows)."""
    if table.wire != "registry":
        return side_serde(table), None
    decoder, cache = _registry_decoder(table)
    # A row's records cannot wait in Kafka for the registry as input records do: wait_s=0,
    # so a row whose writer schema the registry does not give sends its record to the DLQ.
    resolver = RegistryResolver(
        registry.client_config(),
        cache,
        registry.retries,
        retry_interval_s=registry.retry_interval_s,
        wait_s=0,
    )
    return decoder, resolver


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
        raise ConfigError(f"{setting}: {path} is not valid JSON: {exc}") from exc


def _registry_decoder(side: SerdeSettings) -> tuple[Serde, SchemaCache]:
    """A decoder reading writer schemas from a cache, and that cache (filled at the edge)."""
    if side.format == "protobuf":
        assert side.schema_file is not None
        assert side.proto_message is not None
        cache = SchemaCache(_prepare_protobuf)
        message_class = load_message_class(side.schema_file, side.proto_message)
        return ProtobufSerde(message_class, cache=cache), cache
    if side.format == "avro":
        reader = _read_json(side.schema_file, side.env("schema")) if side.schema_file else None
        cache = SchemaCache(prepare_avro(reader))
        return RegistryAvroSerde(cache), cache
    cache = SchemaCache(prepare_json)
    return RegistryJsonSerde(cache), cache


def _registry_encoder(
    side: SerdeSettings, registry: RegistrySettings, topic: str
) -> tuple[Serde, OutputSchema]:
    """An encoder still waiting for its schema id, and what to resolve the id from."""
    assert side.schema_file is not None
    text = Path(side.schema_file).read_text()
    name: str | None
    if side.format == "protobuf":
        if not side.schema_file.endswith(".proto"):
            raise ConfigError(
                f"{side.env('schema')}: the registry needs the .proto text of the "
                "output type, not a descriptor set"
            )
        assert side.proto_message is not None
        schema_type, name = "PROTOBUF", side.proto_message
        encoder: ProtobufSerde | RegistryAvroSerde | RegistryJsonSerde = ProtobufSerde(
            load_message_class(side.schema_file, side.proto_message), registry_output=True
        )
    elif side.format == "avro":
        schema_type = "AVRO"
        name = record_name_of(text, schema_type)
        encoder = RegistryAvroSerde(
            SchemaCache(prepare_avro(None)),
            output_schema=_read_json(side.schema_file, side.env("schema")),
        )
    else:
        schema_type, name = "JSON", None
        encoder = RegistryJsonSerde(SchemaCache(prepare_json))
    subject = subject_name(registry.subject_strategy, topic, name)
    return encoder, OutputSchema(subject, text, schema_type, registry.auto_register, encoder)
