"""The Schema Registry edge: fetch writer schemas by id, register or look up the output id.

Nothing here talks to the registry before `start()`; the worker opens it in its
`ExitStack` (`service.app.open_plan`), so building a plan does no I/O.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import structlog
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

from service.errors import ConfigError, RillError
from service.records import InRecord
from service.serde.schema_cache import OutputSchema, SchemaCache, peek_schema_id

log = structlog.get_logger("rill.registry")
NOT_FOUND = 404


class RegistryResolver:
    """Keeps a `SchemaCache` filled (each unknown id is fetched once, with bounded
    retries) and finds the output schema's id.

    Args:
        conf: SchemaRegistryClient configuration (url, auth, TLS, timeout).
        cache: the cache the decoder reads (None: the input does not use the registry).
        retries: attempts per unknown id and batch while the registry does not answer.
        backoff_s: wait between attempts (doubling).
        output: the output schema whose id the encoder needs (None: the output does not
            use the registry).
    """

    def __init__(
        self,
        conf: dict[str, Any],
        cache: SchemaCache | None = None,
        retries: int = 3,
        backoff_s: float = 0.2,
        output: OutputSchema | None = None,
    ) -> None:
        self._conf = conf
        self.cache = cache
        self.output = output
        self._retries = retries
        self._backoff_s = backoff_s
        self._client: SchemaRegistryClient | None = None
        self.lookups = 0

    def start(self) -> RegistryResolver:
        """Create the client (it connects on first use)."""
        # new_client gives the in-memory mock for mock:// URLs (unit tests only).
        self._client = SchemaRegistryClient.new_client(self._conf)
        return self

    def close(self) -> None:
        """Close the client's HTTP session."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def resolve_output(self) -> int | None:
        """Look up (or register) the output schema and hand its id to the encoder.

        Returns:
            The id, or None when the output does not use the registry.

        Raises:
            ConfigError: the subject does not hold the schema (and auto-register is off),
                or the registry refuses it.
            RillError: the registry cannot be reached.
        """
        out = self.output
        if out is None:
            return None
        schema_id = self.output_id(out.subject, out.text, out.schema_type, out.auto_register)
        out.encoder.use_output_id(schema_id)
        return schema_id

    @property
    def client(self) -> SchemaRegistryClient:
        """The client."""
        if self._client is None:
            raise RillError("registry used before start()")
        return self._client

    def prefetch(self, records: Sequence[InRecord]) -> None:
        """Fetch the writer schemas of ids in `records` that the cache does not hold."""
        cache = self.cache
        if cache is None:
            return
        cache.failed.clear()
        wanted = {peek_schema_id(r.value) for r in records} - {None} - cache.known.keys()
        for schema_id in sorted(i for i in wanted if i is not None):
            self._fetch(cache, schema_id)

    def _fetch(self, cache: SchemaCache, schema_id: int) -> None:
        delay = self._backoff_s
        for attempt in range(1, self._retries + 1):
            self.lookups += 1
            try:
                schema = self.client.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code == NOT_FOUND:
                    cache.failed[schema_id] = (
                        f"unknown schema id {schema_id} (not in the schema registry)"
                    )
                    return
                error = f"{exc}"
            except Exception as exc:  # noqa: BLE001 - httpx and others raise many types
                error = f"{type(exc).__name__}: {exc}"
            else:
                try:
                    cache.known[schema_id] = cache.prepare(
                        schema.schema_type or "AVRO", schema.schema_str or ""
                    )
                except Exception as exc:  # noqa: BLE001 - a schema the format cannot use
                    cache.failed[schema_id] = f"schema id {schema_id} is unusable: {exc}"
                return
            log.warning(
                "schema registry lookup failed", schema_id=schema_id, attempt=attempt, error=error
            )
            if attempt < self._retries:
                time.sleep(delay)
                delay *= 2
        cache.failed[schema_id] = (
            f"schema registry unavailable for schema id {schema_id} "
            f"after {self._retries} attempts: {error}"
        )

    def output_id(
        self, subject: str, schema_text: str, schema_type: str, auto_register: bool
    ) -> int:
        """The id of the output schema under `subject`: registered, or looked up."""
        schema = Schema(schema_text, schema_type)
        try:
            if auto_register:
                return int(self.client.register_schema(subject, schema))
            return int(self.client.lookup_schema(subject, schema).schema_id or 0)
        except SchemaRegistryError as exc:
            raise ConfigError(
                f"output schema not usable under subject {subject!r}: {exc}; register it, or "
                "set RILL_OUTPUT_AUTO_REGISTER=true"
            ) from exc
        except Exception as exc:
            raise RillError(f"schema registry unreachable: {exc}") from exc


def subject_name(strategy: str, topic: str, record_name: str | None) -> str:
    """Subject of a topic's values under a subject name strategy."""
    if strategy == "topic":
        return f"{topic}-value"
    if record_name is None:
        raise ConfigError(f"RILL_OUTPUT_SUBJECT_STRATEGY={strategy} needs a named record schema")
    if strategy == "record":
        return record_name
    return f"{topic}-{record_name}"


def record_name_of(schema_text: str, schema_type: str) -> str | None:
    """The full name of an Avro record schema (or a Protobuf message given as such)."""
    if schema_type.upper() != "AVRO":
        return None
    schema = json.loads(schema_text)
    if not isinstance(schema, dict) or "name" not in schema:
        return None
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return f"{namespace}.{name}" if namespace and "." not in name else name
