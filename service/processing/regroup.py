"""Re-keying through the repartition topic (`group_by`), as plain functions.

Stage one (records of the input topic): decode, the steps, then the window key is
`group_by(value)`; the item goes to the repartition topic under that key, as JSON of the
transformed value, with its event time in a header, to the partition Kafka's Java client
would pick (`partitioning.java_partition`). Stage two (records of the repartition topic):
the JSON back, the key and event time as stage one wrote them, into the window. The
window state is then per repartition-topic partition, where every record of a key lands.
"""

from __future__ import annotations

import base64
import decimal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from service.errors import RecordError, RillError
from service.processing.chain import ItemError
from service.processing.partitioning import java_partition
from service.records import Headers, InRecord, Keyed, OutRecord

REPARTITION_SUFFIX = "-repartition"
# Stage one's event time of the item, in ms (decimal text): stage two windows by it.
EVENT_TIME_HEADER = "rill-event-ms"
# Where the item came from: `<input partition>:<position>` (`source_position`).
SOURCE_HEADER = "rill-source"
# On a record sent again after its delivery failed (`resent`): stage two applies it
# whatever the source marks say, as later records of its input partition may have been
# applied before it (a gap); a copy that had landed after all counts twice, never lost.
RESENT_HEADER = "rill-resent"
# Items of one input record, at most (a record's position leaves room for this many).
ITEMS_PER_RECORD = 2**32


def source_position(offset: int, item: int) -> int:
    """The position of a record's item in its input partition: offset, then item index.

    Stage two applies an input partition's items in this order, once each: the same item
    re-keyed again (its batch redone after a crash) has a position already applied.
    """
    return offset * ITEMS_PER_RECORD + item


Items = list[tuple[Any, Any]]


def repartition_topic(group_id: str) -> str:
    """The repartition topic of a consumer group: `<group_id>-repartition`."""
    return f"{group_id}{REPARTITION_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Regroup:
    """How a pipeline re-keys: the topic, the key function, and the topic's partitions.

    Attributes:
        topic: the repartition topic.
        key: value -> window key (a field's value, or the user's function).
        name: the field or function, for reasons in DLQ entries.
        partitions: the repartition topic's partition count; 0 until the topic is
            known to exist (set by the service at start, `with_partitions`).
    """

    topic: str
    key: Callable[[Any], Any]
    name: str
    partitions: int = 0

    def with_partitions(self, partitions: int) -> Regroup:
        """The same, knowing the topic's partition count."""
        return Regroup(self.topic, self.key, self.name, partitions)


def key_function(by: str | Callable[[Any], Any]) -> tuple[Callable[[Any], Any], str]:
    """A group_by argument as (value -> key, its name): a field name or a function."""
    if callable(by):
        return by, getattr(by, "__name__", "function")
    field = by

    def group_by_field(value: Any) -> Any:
        try:
            return value[field]
        except (KeyError, TypeError, IndexError):
            raise RecordError("transform", f"group_by field {field!r} is missing") from None

    return group_by_field, field


def rekey(regroup: Regroup, items: Items) -> Items:
    """Each item under its group_by key; an item without one carries an `ItemError`."""
    out: Items = []
    for key, value in items:
        if isinstance(key, ItemError):
            out.append((key, value))
            continue
        try:
            new = regroup.key(value)
        except RecordError as exc:
            out.append((ItemError(exc), value))
            continue
        except Exception as exc:  # noqa: BLE001 - user code may raise anything; the item goes to the DLQ
            error = RecordError(
                "transform", f"group_by {regroup.name}: {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            out.append((ItemError(error), value))
            continue
        if new is None:
            why = RecordError("transform", f"group_by {regroup.name!r} gave a null key")
            out.append((ItemError(why), value))
        else:
            out.append((new, value))
    return out


def _jsonable(value: Any) -> Any:
    """JSON of what orjson does not write itself: Decimal as a number, bytes as base64."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_repartition(regroup: Regroup, keyed: Sequence[Keyed]) -> list[OutRecord]:
    """Stage one's records for the repartition topic, one per keyed item.

    Raises:
        RecordError: a value that JSON cannot hold (stage `encode`).
    """
    if regroup.partitions <= 0:
        raise RillError(f"the partition count of {regroup.topic} is not known yet")
    out = []
    for index, item in enumerate(keyed):
        key = item.key.encode()
        try:
            value = orjson.dumps(item.value, default=_jsonable)
        except TypeError as exc:
            raise RecordError("encode", f"group_by: the record is not JSON: {exc}") from exc
        rec = item.record
        where = f"{rec.partition}:{source_position(rec.offset, index)}"
        headers: Headers = [
            (EVENT_TIME_HEADER, str(item.ts).encode()),
            (SOURCE_HEADER, where.encode()),
        ]
        out.append(
            OutRecord(regroup.topic, key, value, headers, java_partition(key, regroup.partitions))
        )
    return out


def resent(record: OutRecord) -> OutRecord:
    """A record sent again after its delivery failed: a repartition record (it names its
    partition) carries `RESENT_HEADER`; any other is sent as it was."""
    headers = record.headers or []
    if record.partition < 0 or any(name == RESENT_HEADER for name, _ in headers):
        return record
    return replace(record, headers=[*headers, (RESENT_HEADER, b"1")])


def from_repartition(record: InRecord) -> Keyed:
    """Stage two: a repartition record back as the keyed item stage one sent.

    Raises:
        RecordError: not a record stage one wrote (stage `decode`).
    """
    if record.key is None:
        raise RecordError("decode", "repartition record without a key")
    found = {name: raw for name, raw in record.headers or () if raw is not None}
    try:
        ts = int(found[EVENT_TIME_HEADER])
        partition, _, position = found[SOURCE_HEADER].partition(b":")
        source: tuple[int, int] | None = (int(partition), int(position))
    except (KeyError, ValueError):
        raise RecordError(
            "decode",
            f"repartition record without valid {EVENT_TIME_HEADER} and {SOURCE_HEADER} headers",
        ) from None
    try:
        value = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError as exc:
        raise RecordError("decode", f"repartition record is not JSON: {exc}") from exc
    if RESENT_HEADER in found:
        source = None  # applied, whatever the marks say (see RESENT_HEADER)
    return Keyed(record, record.key.decode("utf-8", "replace"), value, ts, source)
