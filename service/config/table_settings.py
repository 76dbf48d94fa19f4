"""The table a pipeline enriches its records from (`docs/enrichment.md`).

A compacted topic, read whole by every worker into Redis and joined to each record by
a field of the record. Its values are read with the same serde options as the input.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, TypeAlias

from pydantic import BeforeValidator

from service.config.declare import setting
from service.config.serde_settings import Format, SchemaFile, SerdeSettings, Side, Wire

JoinKind: TypeAlias = Literal["inner", "left"]
Missing: TypeAlias = Literal["dlq", "drop"]


def _empty_is_none(value: object) -> object:
    return value or None


class TableSettings(SerdeSettings):
    """Table: enrich each record from a compacted topic materialized in Redis."""

    side: ClassVar[Side] = "table"
    flat_prefix: ClassVar[str] = "table_"

    topic: Annotated[str | None, BeforeValidator(_empty_is_none)] = setting(
        None,
        "Compacted topic whose latest value per key joins each record (unset: no join). "
        "Every worker reads all of it into Redis before it is ready.",
    )
    key_field: str | None = setting(
        None,
        "Field of the (decoded) input record whose value, as text, is the table's Kafka key.",
    )
    join: JoinKind = setting(
        "inner",
        "`inner`: a record without a table row is not joined (see RILL_TABLE_MISSING); "
        "`left`: it goes on with the table field null (merged: no field added).",
    )
    missing: Missing = setting(
        "dlq",
        "Inner join, no row for the key: `dlq` (stage `join`) or `drop` (counted).",
    )
    as_: Annotated[str | None, BeforeValidator(_empty_is_none)] = setting(
        "table",
        "Field the table row goes into; empty: the row's fields are merged into the record "
        "(the record's own fields win).",
        name="table_as",
    )
    format: Format = setting("json", "Format of the table's values.")
    schema_file: SchemaFile = setting(
        None, "Schema file of the table's values.", name="table_schema"
    )
    wire: Wire = setting(
        "plain",
        "`plain`, `confluent` (magic byte + 4-byte schema id) or `registry` (ids resolved "
        "through the Schema Registry; a row whose schema it does not give: its record to "
        "the DLQ).",
    )
    schema_id: int | None = setting(None, "Schema id accepted on read (`confluent` wire).", ge=0)
    proto_message: str | None = setting(None, "Full name of the Protobuf message type.")
