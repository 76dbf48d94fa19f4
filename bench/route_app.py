"""The bench's routed stateless job, loaded by the worker with RILL_APP.

The declarative stateless job of the other stateless rows (filter, key, project, rename
from the RILL_* settings), each output routed by its customer's CRC32 over
RILL_ROUTE_TOPICS: the cost of choosing a topic per record, with every output of a
batch still in its one produce (and, in exactly-once, its one transaction).
"""

from __future__ import annotations

from typing import Any

from bench.workloads import route_of
from service.app import declared_pipeline
from service.config import load_settings
from service.pipeline import Pipeline


def _routed() -> Pipeline:
    settings = load_settings()
    topics = settings.routing.allowed
    job = declared_pipeline(settings)

    def by_customer(order: dict[str, Any]) -> str:
        return route_of(order["customer_id"], topics)

    return job.route(by_customer)


pipeline = _routed()
