"""The Schema Registry edge: fetch writer schemas by id, register or look up the output id.

Nothing here talks to the registry before `start()`; the worker opens it in its
`ExitStack` (`service.app.open_plan`), so building a plan does no I/O.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

from service.errors import ConfigError, RillError
from service.records import InRecord
from service.retry import Backoff
from service.serde.schema_cache import OutputSchema, SchemaCache, peek_schema_id

log = structlog.get_logger("rill.registry")
NOT_FOUND = 404


@dataclass(slots=True)
class Pending:
    """An id the registry did not give for now: since when (monotonic s), and why."""

    since: float
    error: str


class RegistryResolver:
    """Keeps a `SchemaCache` filled and finds the output schema's id.

    A new id is fetched with `retries` attempts. When the registry does not answer, the
    id is *pending*: its records wait in Kafka (`prefetch` names the ids; the worker
    rewinds and pauses their partitions) for up to `wait_s`, then go to the DLQ
    (`schema registry unavailable ...`, replayable). While ids are pending the registry
    is asked at most once per `retry_interval_s` (one attempt), so the loop never
    stalls on it and cached ids keep flowing. An id the registry does not know, or a
    schema the format cannot use, goes to the DLQ at once.

    Args:
        conf: SchemaRegistryClient configuration (url, auth, TLS, timeout).
        cache: the cache the decoder reads (None: the input does not use the registry).
        retries: attempts for a new id while the registry is thought up.
        backoff_s: the first backoff ceiling between attempts (`retry.Backoff`: doubling,
            full jitter).
        output: the output schema whose id the encoder needs (None: the output does not
            use the registry).
        retry_interval_s: while ids are pending, the least time between two attempts.
        wait_s: how long records of a pending id wait before they go to the DLQ
            (0: at once).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        conf: dict[str, Any],
        cache: SchemaCache | None = None,
        retries: int = 3,
        backoff_s: float = 0.2,
        output: OutputSchema | None = None,
        retry_interval_s: float = 10.0,
        wait_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conf = conf
        self.cache = cache
        self.output = output
        self._retries = retries
        self._backoff_s = backoff_s
        self._interval_s = retry_interval_s
        self._wait_s = wait_s
        self._clock = clock
        self._client: SchemaRegistryClient | None = None
        self.lookups = 0
        self.pending: dict[int, Pending] = {}
        self._next_try = 0.0

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

    def prefetch(self, records: Sequence[InRecord]) -> set[int]:
        """Fetch the writer schemas of ids in `records` that the cache does not hold.

        Returns:
            The ids whose records must wait (the registry does not answer, and they have
            waited less than `wait_s`); the others decode or go to the DLQ with a reason.
        """
        cache = self.cache
        if cache is None:
            return set()
        cache.failed.clear()
        wanted = {peek_schema_id(r.value) for r in records} - {None} - cache.known.keys()
        for schema_id in sorted(i for i in wanted if i is not None):
            if self.pending and not self.due():
                self._defer(schema_id)  # the registry does not answer: not asked now
                continue
            self._fetch(cache, schema_id, attempts=1 if self.pending else self._retries)
        return self._waiting(cache, {i for i in wanted if i is not None})

    def _defer(self, schema_id: int) -> None:
        if schema_id not in self.pending:
            error = next(iter(self.pending.values())).error
            self.pending[schema_id] = Pending(self._clock(), error)

    def due(self) -> bool:
        """Records that wait may come back: nothing is pending, or it may be asked again."""
        return not self.pending or self._clock() >= self._next_try

    def _waiting(self, cache: SchemaCache, wanted: set[int]) -> set[int]:
        """Pending ids still within `wait_s`; those past it are DLQ reasons from now on."""
        now, waiting = self._clock(), set()
        for schema_id in wanted & self.pending.keys():
            pending = self.pending[schema_id]
            waited = now - pending.since
            if waited < self._wait_s:
                waiting.add(schema_id)
            else:
                cache.failed[schema_id] = (
                    f"schema registry unavailable for schema id {schema_id} "
                    f"for {waited:.0f}s: {pending.error}"
                )
        return waiting

    def _fetch(self, cache: SchemaCache, schema_id: int, attempts: int) -> None:
        if self._lookup(cache, schema_id, attempts):
            self.pending.pop(schema_id, None)

    def _lookup(self, cache: SchemaCache, schema_id: int, attempts: int) -> bool:
        """Ask for one id; True when the registry answered (with a schema or a refusal)."""
        backoff = Backoff(self._backoff_s, self._backoff_s * 8)
        error = ""
        for attempt in range(1, attempts + 1):
            self.lookups += 1
            try:
                schema = self.client.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code == NOT_FOUND:
                    cache.failed[schema_id] = (
                        f"unknown schema id {schema_id} (not in the schema registry)"
                    )
                    return True
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
                return True
            log.warning(
                "schema registry lookup failed", schema_id=schema_id, attempt=attempt, error=error
            )
            if attempt < attempts:
                time.sleep(backoff.next_delay())
        now = self._clock()
        self._next_try = now + self._interval_s
        since = self.pending[schema_id].since if schema_id in self.pending else now
        self.pending[schema_id] = Pending(since, error)
        return False

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
