"""Enrichment from a table at the runtime edge: one lookup per batch, the join is pure.

A batch is decoded first (`processing.batch.decode_batch`), its distinct table keys are
looked up in one round trip (behind back-pressure, like every Redis call), and the batch
is processed with those rows (`process_batch`, which joins each record before the
steps). A pipeline without a join takes `process_batch` as it is (`NoTable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from service.processing.batch import Plan, decode_batch, process_batch
from service.records import BatchResult, InRecord
from service.runtime.backpressure import BackPressure
from service.runtime.edges import Consumer, Table
from service.runtime.observers import Observers

# How often the start waits for the table between checks.
LOAD_POLL_S = 0.1


class NoTable:
    """The table of a pipeline that joins none: always loaded, never looked up."""

    def start(self) -> object:
        """Nothing to read."""
        return self

    def loaded(self) -> bool:
        """Nothing to wait for."""
        return True

    def status(self) -> str:
        """Nothing to say."""
        return "no table"

    def lag(self) -> int | None:
        """Nothing to read."""
        return 0

    def check(self) -> None:
        """Nothing can fail."""

    def get(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """No rows."""
        return {}

    def ping(self) -> bool:
        """Always answers."""
        return True

    def close(self) -> None:
        """Nothing open."""


def wait_loaded(table: Table, obs: Observers) -> None:
    """Block until the table is read to its end at start (or the worker is asked to stop).

    The loop beats /healthz meanwhile (a long table is not a stalled worker); /readyz
    says how far the table is read. Raises what stopped the table's follower, if it did.
    """
    while not table.loaded() and not obs.stop.is_set():
        obs.health.beat()
        table.check()
        obs.stop.wait(LOAD_POLL_S)
    table.check()


def process(
    records: Sequence[InRecord],
    plan: Plan,
    now_ms: int,
    table: Table,
    backpressure: BackPressure,
    consumer: Consumer,
) -> BatchResult:
    """Step 2 of the record flow: decode, look the batch's table keys up once, join,
    transform. The lookup is retried behind back-pressure while Redis fails."""
    if plan.join is None:
        return process_batch(records, plan, now_ms)
    table.check()
    decoded, keys = decode_batch(records, plan)
    rows = backpressure.run("redis", partial(table.get, keys), consumer) if keys else {}
    resolver = plan.join.resolver
    if resolver is not None and rows:
        # The rows' writer schemas, fetched where new (registry wire format); a row whose
        # schema the registry does not give sends its record to the DLQ, with the reason.
        topic = plan.join.topic
        resolver.prefetch([InRecord(topic, -1, -1, k, v, None, 0) for k, v in rows.items()])
    return process_batch(records, plan, now_ms, decoded, rows)
