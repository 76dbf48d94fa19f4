"""Demo pipeline configurations shared by the tests and the bench."""

from __future__ import annotations

from typing import Any

# The demo as a stateless projection pipeline (the built-in default windows instead):
# keep five fields, rename amount to total, write Avro with the order_out schema.
PROJECTION_SETTINGS: dict[str, Any] = {
    "window_type": "none",
    "project": ["order_id", "customer_id", "amount", "currency", "created_at"],
    "rename": {"amount": "total"},
    "output_format": "avro",
    "output_schema": "order_out.avsc",
    "output_wire": "confluent",
    "output_schema_id": 2,
}

# The demo as `make demo` runs it: orders keyed by order id (`produce-demo --key
# order_id`), windowed per customer through group_by's repartition topic.
GROUP_BY_SETTINGS: dict[str, Any] = {"group_by": "customer_id"}
