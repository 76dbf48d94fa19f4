"""The one place a client message becomes a plain record."""

from __future__ import annotations

from typing import Any

from service.records import InRecord


def to_in_record(msg: Any) -> InRecord:
    """Copy a consumed confluent-kafka message (without error) into an `InRecord`."""
    return InRecord(
        msg.topic(),
        msg.partition(),
        msg.offset(),
        msg.key(),
        msg.value(),
        msg.headers(),
        msg.timestamp()[1],
    )
