"""How records are serialized: each side's format and wire, and the Schema Registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

from pydantic import AfterValidator, SecretStr

from service.config.declare import View, setting
from service.config.kafka_settings import secret

Side: TypeAlias = Literal["input", "output", "table"]
Format: TypeAlias = Literal["avro", "json", "protobuf"]
Wire: TypeAlias = Literal["plain", "confluent", "registry"]

SCHEMA_DIR = Path(__file__).parent.parent / "schemas"


def resolve_schema_path(value: str) -> Path:
    """A schema file as given, else one of the built-in schemas shipped with rill."""
    path = Path(value)
    if path.is_file():
        return path
    builtin = SCHEMA_DIR / value
    if builtin.is_file():
        return builtin
    raise ValueError(f"schema file {value!r} not found (give a path to an existing file)")


def _schema_file(value: str | None) -> str | None:
    return str(resolve_schema_path(value)) if value else None


SchemaFile: TypeAlias = Annotated[str | None, AfterValidator(_schema_file)]
_SCHEMA = (
    "Schema file: Avro `.avsc`, JSON Schema, or `.proto` / descriptor set (a path, or a "
    "built-in schema: `order.avsc`, `order_out.avsc`)."
)
_WIRE = (
    "`plain`, `confluent` (magic byte + 4-byte schema id) or `registry` (ids resolved "
    "through the Schema Registry)."
)
_PROTO = "Full name of the Protobuf message type."


class SerdeSettings(View):
    """How one side (input or output) is serialized."""

    side: ClassVar[Side]
    format: Format
    schema_file: str | None
    wire: Wire
    schema_id: int | None
    proto_message: str | None

    @classmethod
    def env(cls, field: str) -> str:
        """The environment variable of a field's setting, e.g. RILL_INPUT_SCHEMA.

        `schema` names `schema_file` (pydantic keeps the name `schema` for itself).
        """
        return super().env("schema_file" if field == "schema" else field)


class InputSettings(SerdeSettings):
    """Input serialization: how input values are read."""

    side: ClassVar[Side] = "input"
    flat_prefix: ClassVar[str] = "input_"

    format: Format = setting("avro", "Format of input values.")
    schema_file: SchemaFile = setting("order.avsc", _SCHEMA, name="input_schema")
    wire: Wire = setting("confluent", _WIRE)
    schema_id: int | None = setting(1, "Schema id accepted on read (`confluent` wire).", ge=0)
    proto_message: str | None = setting(None, _PROTO)


class OutputSettings(SerdeSettings):
    """Output serialization: how output values are written."""

    side: ClassVar[Side] = "output"
    flat_prefix: ClassVar[str] = "output_"

    format: Format = setting("json", "Format of output values.")
    schema_file: SchemaFile = setting(None, _SCHEMA, name="output_schema")
    wire: Wire = setting("plain", _WIRE)
    schema_id: int | None = setting(None, "Schema id written (`confluent` wire).", ge=0)
    proto_message: str | None = setting(None, _PROTO)


class RegistrySettings(View):
    """Schema Registry: the Confluent-API registry of the `registry` wire format."""

    flat_prefix: ClassVar[str] = "schema_registry_"

    url: str | None = setting(None, "Registry URL (needed by the `registry` wire format).")
    username: str | None = setting(None, "Basic auth user.")
    password: SecretStr | None = setting(None, "Basic auth password (a secret).")
    ca_location: str | None = setting(None, "CA file for an https registry.")
    timeout_s: float = setting(5.0, "Timeout of one request.", gt=0)
    retries: int = setting(
        3, "Attempts for a new id while the registry does not answer.", ge=1, le=20
    )
    retry_interval_s: float = setting(
        10.0, "While ids are pending, one request per this interval.", gt=0
    )
    wait_s: float = setting(
        60.0,
        "How long records with pending ids wait (partition paused) before the DLQ (0: at once).",
        ge=0,
    )
    subject_strategy: Literal["topic", "record", "topic_record"] = setting(
        "topic", "Subject name of the output schema.", name="output_subject_strategy"
    )
    auto_register: bool = setting(
        False, "Register the output schema at start.", name="output_auto_register"
    )

    def client_config(self) -> dict[str, Any]:
        """SchemaRegistryClient settings; rill retries lookups itself."""
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s, "max.retries": 0}
        if self.username is not None:
            conf["basic.auth.user.info"] = f"{self.username}:{secret(self.password) or ''}"
        if self.ca_location is not None:
            conf["ssl.ca.location"] = self.ca_location
        return conf
