"""Schema Registry on a real registry: evolution, unknown and incompatible ids, outages."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from service.processing import dlq
from service.serde.protobuf_serde import load_message_class
from tests.integration.conftest import Endpoints, start_registry, stop_registry
from tests.integration.helpers import (
    create_topics,
    header,
    produce,
    read_all,
    read_once,
    start_worker,
    stop_worker,
    worker_env,
)

pytestmark = pytest.mark.integration

ID = {"name": "id", "type": "string"}
AMOUNT_LONG = {"name": "amount", "type": "long"}
CURRENCY = {"name": "currency", "type": "string", "default": "EUR"}


def _payment(*fields: dict[str, Any]) -> dict[str, Any]:
    """A version of the Payment record schema with these fields."""
    return {"type": "record", "name": "Payment", "namespace": "t", "fields": list(fields)}


PAYMENT_V1 = _payment(ID, {"name": "amount", "type": "int"})
PAYMENT_V2 = _payment(ID, AMOUNT_LONG, CURRENCY)
PAYMENT_V3 = _payment(
    ID, AMOUNT_LONG, CURRENCY, {"name": "note", "type": ["null", "string"], "default": None}
)
READER = _payment(
    ID, AMOUNT_LONG, CURRENCY, {"name": "channel", "type": "string", "default": "web"}
)
BAD = _payment(ID, {"name": "amount", "type": "string"})
OUT = {
    "output_format": "json",
    "output_wire": "plain",
    "window_type": "none",
    "filter_field": "",
    "key_by": "id",
}


def _avro(schema: dict[str, Any], schema_id: int, record: dict[str, Any]) -> bytes:
    buf = BytesIO()
    buf.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


def _register(url: str, subject: str, text: str, kind: str) -> int:
    return int(SchemaRegistryClient({"url": url}).register_schema(subject, Schema(text, kind)))


def test_avro_three_writer_versions_decode_into_the_reader_shape(
    endpoints: Endpoints, registry_url: str, unique: str, tmp_path: Path
) -> None:
    """v1/v2/v3 writers mixed -> reader shape; unknown id and incompatible -> DLQ."""
    reader = tmp_path / "reader.avsc"
    reader.write_text(json.dumps(READER))
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        input_format="avro",
        input_wire="registry",
        input_schema=str(reader),
        schema_registry_url=registry_url,
        **OUT,
    )
    topic = env["RILL_INPUT_TOPIC"]
    ids = [
        _register(registry_url, f"{topic}-value", json.dumps(s), "AVRO")
        for s in (PAYMENT_V1, PAYMENT_V2, PAYMENT_V3)
    ]
    bad_id = _register(registry_url, f"{topic}-bad-value", json.dumps(BAD), "AVRO")
    items: list[tuple[bytes | None, bytes | None]] = []
    expected = {}
    for i in range(300):
        version = i % 3
        rec: dict[str, Any] = {"id": f"p{i}", "amount": i}
        if version >= 1:
            rec["currency"] = "USD"
        if version == 2:
            rec["note"] = "n"
        items.append(
            (
                rec["id"].encode(),
                _avro((PAYMENT_V1, PAYMENT_V2, PAYMENT_V3)[version], ids[version], rec),
            )
        )
        expected[rec["id"]] = {
            "id": rec["id"],
            "amount": i,
            "currency": rec.get("currency", "EUR"),
            "channel": "web",
        }
    items.append((b"unknown", _avro(PAYMENT_V1, 987_654, {"id": "x", "amount": 1})))
    items.append((b"incompatible", _avro(BAD, bad_id, {"id": "y", "amount": "lots"})))
    create_topics(endpoints.bootstrap, [topic], partitions=2)
    produce(endpoints.bootstrap, topic, items)
    proc = start_worker(env, tmp_path / "w.log")
    try:
        sink = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 300)
        dead = read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 2)
    finally:
        code = stop_worker(proc)
    assert code == 0
    got = {json.loads(r.value or b"")["id"]: json.loads(r.value or b"") for r in sink}
    assert got == expected
    reasons = {(r.key or b"").decode(): header(r, dlq.ERROR_MESSAGE) or "" for r in dead}
    assert "unknown schema id 987654" in reasons["unknown"]
    assert "incompatible" in reasons["incompatible"]


PROTO_V1 = 'syntax = "proto3";\npackage t;\nmessage Payment { string id = 1; int64 amount = 2; }\n'
PROTO_V2 = (
    'syntax = "proto3";\npackage t;\n'
    "message Payment { string id = 1; int64 amount = 2; string currency = 3; }\n"
)
PROTO_V3 = (
    'syntax = "proto3";\npackage t;\n'
    "message Payment { reserved 2; string id = 1; string currency = 3; "
    "string note = 4; }\n"
)
PROTO_READER = PROTO_V2


def _proto_class(tmp_path: Path, name: str, text: str) -> Any:
    path = tmp_path / name / "payment.proto"
    path.parent.mkdir()
    path.write_text(text)
    return load_message_class(str(path), "t.Payment")


def test_protobuf_three_writer_versions_decode_with_the_reader_type(
    endpoints: Endpoints, registry_url: str, unique: str, tmp_path: Path
) -> None:
    """Protobuf v1/v2/v3 writers mixed decode with the reader type; unknown id -> DLQ."""
    reader = tmp_path / "reader" / "payment.proto"
    reader.parent.mkdir()
    reader.write_text(PROTO_READER)
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        input_format="protobuf",
        input_wire="registry",
        input_schema=str(reader),
        input_proto_message="t.Payment",
        schema_registry_url=registry_url,
        **OUT,
    )
    topic = env["RILL_INPUT_TOPIC"]
    texts = (PROTO_V1, PROTO_V2, PROTO_V3)
    ids = [_register(registry_url, f"{topic}-value", t, "PROTOBUF") for t in texts]
    classes = [_proto_class(tmp_path, f"v{n}", t) for n, t in enumerate(texts)]
    items: list[tuple[bytes | None, bytes | None]] = []
    expected = {}
    for i in range(300):
        version = i % 3
        fields: dict[str, Any] = {"id": f"p{i}"}
        if version < 2:
            fields["amount"] = i
        if version >= 1:
            fields["currency"] = "USD"
        if version == 2:
            fields["note"] = "n"
        payload = classes[version](**fields).SerializeToString()
        items.append(
            (fields["id"].encode(), struct.pack(">bI", 0, ids[version]) + b"\x00" + payload)
        )
        expected[fields["id"]] = {
            "id": fields["id"],
            "amount": fields.get("amount", 0),
            "currency": fields.get("currency", ""),
        }
    items.append((b"unknown", struct.pack(">bI", 0, 987_655) + b"\x00"))
    create_topics(endpoints.bootstrap, [topic], partitions=2)
    produce(endpoints.bootstrap, topic, items)
    proc = start_worker(env, tmp_path / "w.log")
    try:
        sink = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 300)
        dead = read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 1)
    finally:
        code = stop_worker(proc)
    assert code == 0
    assert {json.loads(r.value or b"")["id"]: json.loads(r.value or b"") for r in sink} == (
        expected
    )
    assert [header(r, dlq.ERROR_MESSAGE) for r in dead] == [
        "unknown schema id 987655 (not in the schema registry)"
    ]


def test_output_schema_registered_at_start_and_written_with_its_id(
    endpoints: Endpoints, registry_url: str, unique: str, tmp_path: Path
) -> None:
    """The worker registers the output schema when it starts (not when the plan is built)
    and every output value carries that id."""
    schema = tmp_path / "payment_out.avsc"
    schema.write_text(json.dumps(PAYMENT_V2))
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        input_format="json",
        input_wire="plain",
        input_schema="",
        output_format="avro",
        output_schema=str(schema),
        output_wire="registry",
        output_auto_register="true",
        schema_registry_url=registry_url,
        window_type="none",
        filter_field="",
        key_by="id",
    )
    topic, subject = env["RILL_INPUT_TOPIC"], f"{env['RILL_OUTPUT_TOPIC']}-value"
    items: list[tuple[bytes | None, bytes | None]] = [
        (f"p{i}".encode(), json.dumps({"id": f"p{i}", "amount": i}).encode()) for i in range(50)
    ]
    create_topics(endpoints.bootstrap, [topic], partitions=2)
    produce(endpoints.bootstrap, topic, items)
    proc = start_worker(env, tmp_path / "w.log")
    try:
        sink = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 50)
    finally:
        code = stop_worker(proc)
    assert code == 0
    registered = SchemaRegistryClient({"url": registry_url}).get_latest_version(subject)
    parsed = fastavro.parse_schema(PAYMENT_V2)
    got = {}
    for r in sink:
        value = r.value or b""
        assert value[:5] == struct.pack(">bI", 0, registered.schema_id)
        record = fastavro.schemaless_reader(BytesIO(value[5:]), parsed, parsed)
        got[record["id"]] = record
    assert got == {f"p{i}": {"id": f"p{i}", "amount": i, "currency": "EUR"} for i in range(50)}


def registry_input(
    endpoints: Endpoints, url: str, unique: str, **extra: Any
) -> tuple[dict[str, str], int, int]:
    """A worker env reading registry-framed Avro payments, the topic made, v1 and v2
    registered under its subject: (env, v1 id, v2 id)."""
    env = worker_env(
        endpoints.bootstrap,
        endpoints.redis_url,
        unique,
        input_format="avro",
        input_wire="registry",
        input_schema="",
        schema_registry_url=url,
        schema_registry_timeout_s=1,
        schema_registry_retries=2,
        **extra,
        **OUT,
    )
    topic = env["RILL_INPUT_TOPIC"]
    v1 = _register(url, f"{topic}-value", json.dumps(PAYMENT_V1), "AVRO")
    v2 = _register(url, f"{topic}-value", json.dumps(PAYMENT_V2), "AVRO")
    create_topics(endpoints.bootstrap, [topic], partitions=1)
    return env, v1, v2


@pytest.fixture
def own_registry() -> Iterator[tuple[str, int]]:
    """A registry of this test only, which it stops mid-run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    url = start_registry(port)
    yield url, port
    stop_registry(port)


def test_registry_outage_cached_ids_flow_new_ids_retried_then_dlq(
    endpoints: Endpoints, own_registry: tuple[str, int], unique: str, tmp_path: Path
) -> None:
    """Registry stopped mid-run: cached ids keep flowing; a new id goes to the DLQ."""
    url, port = own_registry
    # The new id's records (and those after them) wait 3 s, then the DLQ.
    env, v1, v2 = registry_input(endpoints, url, unique, schema_registry_wait_s=3)
    topic = env["RILL_INPUT_TOPIC"]

    def v1_records(start: int, n: int) -> list[tuple[bytes | None, bytes | None]]:
        return [
            (f"a{i}".encode(), _avro(PAYMENT_V1, v1, {"id": f"a{i}", "amount": i}))
            for i in range(start, start + n)
        ]

    produce(endpoints.bootstrap, topic, v1_records(0, 100))
    proc = start_worker(env, tmp_path / "w.log")
    try:
        read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 100, settle_s=0)
        stop_registry(port)
        new = [
            (
                f"b{i}".encode(),
                _avro(PAYMENT_V2, v2, {"id": f"b{i}", "amount": i, "currency": "USD"}),
            )
            for i in range(20)
        ]
        produce(endpoints.bootstrap, topic, [*v1_records(100, 100), *new, *v1_records(200, 100)])
        sink = read_all(endpoints.bootstrap, env["RILL_OUTPUT_TOPIC"], 300)
        dead = read_all(endpoints.bootstrap, env["RILL_DLQ_TOPIC"], 20)
    finally:
        code = stop_worker(proc)
    assert code == 0
    assert sorted(json.loads(r.value or b"")["id"] for r in sink) == sorted(
        f"a{i}" for i in range(300)
    ), "cached schemas keep flowing"
    assert sorted((r.key or b"").decode() for r in dead) == sorted(f"b{i}" for i in range(20))
    assert all("schema registry unavailable" in (header(r, dlq.ERROR_MESSAGE) or "") for r in dead)
    assert len(read_once(endpoints.bootstrap, topic)) == len(sink) + len(dead), "none lost"
