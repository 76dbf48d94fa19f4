"""The Python API: a pipeline is a list of steps over decoded records.

    from service import Pipeline

    app = (
        Pipeline("big-orders")
        .filter(lambda order: order["amount"] > 100)
        .key_by(lambda order: order["customer_id"])
        .map(lambda order: {**order, "amount_cents": int(order["amount"] * 100)})
    )

Run it with `RILL_APP=mymodule:app rill run`. The declarative settings build the same
object (`declarative_pipeline`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from service.errors import ConfigError
from service.processing.aggregates import Aggregation, Reducer
from service.processing.chain import Step, StepFn, StepKind
from service.processing.dedupe import DedupePlan, field_id
from service.processing.join import JoinKind, JoinPlan, Missing
from service.processing.steps import make_filter, make_key_by, make_project, make_rename
from service.processing.windows import WindowKind, WindowPlan, WindowSpec


class Pipeline:
    """An ordered list of steps; each method appends one and returns the pipeline."""

    def __init__(self, name: str = "pipeline") -> None:
        self.name = name
        self.steps: list[Step] = []
        self.window_plan: WindowPlan | None = None
        self.dedupe_plan: DedupePlan | None = None
        self.decoder: Any = None
        self.encoder: Any = None
        self.route_fn: Callable[[Any], str] | None = None
        self.join_plan: JoinPlan | None = None
        # The window key when the input is not keyed by it (`group_by`).
        self.group_key: str | Callable[[Any], Any] | None = None

    def _add(self, kind: StepKind, fn: StepFn, name: str | None) -> Pipeline:
        if self.group_key is not None:
            raise ConfigError(
                f"Pipeline {self.name!r}: {kind}() after group_by(): put the steps before "
                "group_by (they run before the records are re-keyed)"
            )
        label = name or getattr(fn, "__name__", kind)
        self.steps.append(Step(kind, fn, f"{kind}:{label}"))
        return self

    def map(self, fn: Callable[[Any], Any], name: str | None = None) -> Pipeline:
        """Replace each record by fn(record)."""
        return self._add("map", fn, name)

    def filter(self, fn: Callable[[Any], bool], name: str | None = None) -> Pipeline:
        """Keep records for which fn(record) is true."""
        return self._add("filter", fn, name)

    def key_by(self, fn: Callable[[Any], Any], name: str | None = None) -> Pipeline:
        """Set the output key to fn(record)."""
        return self._add("key_by", fn, name)

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], name: str | None = None) -> Pipeline:
        """Replace each record by zero or more records."""
        return self._add("flat_map", fn, name)

    def dedupe(
        self,
        id_of: str | Callable[[Any], Any],
        *,
        within_ms: int,
        to_dlq: bool = False,
    ) -> Pipeline:
        """Drop records whose id was seen within `within_ms` (stateless or windowed).

        The id is read from the decoded input record, before the other steps, wherever
        this is called: a field name (dots reach nested fields) or a function of the
        record. The ids live in Redis with the partition's state and change atomically
        with it, in both guarantee modes. A record without an id goes to the DLQ (stage
        `dedupe`).

        Args:
            id_of: the id field, or a function returning the id.
            within_ms: how long an id is remembered after the record that carried it
                (measured on the records' Kafka timestamps).
            to_dlq: a duplicate also goes to the DLQ with stage `duplicate`.

        Raises:
            ConfigError: `within_ms` is not positive.
        """
        if isinstance(id_of, str):
            fn, name = field_id(id_of), id_of
        else:
            fn, name = id_of, getattr(id_of, "__name__", "id")
        try:
            self.dedupe_plan = DedupePlan(fn, within_ms, to_dlq, name)
        except ConfigError as exc:
            raise ConfigError(f"Pipeline {self.name!r}: dedupe(): {exc}") from exc
        return self

    def route(self, fn: Callable[[Any], str]) -> Pipeline:
        """Send each output to the topic fn(output) names, one of RILL_ROUTE_TOPICS.

        The output is the transformed record, or in a windowed pipeline the window result
        (`key`, `window_start`, `window_end` and the aggregates). A topic outside the
        list, or an exception, sends that output to the DLQ (stage `route`).

        Raises:
            ConfigError: fn is not callable.
        """
        if not callable(fn):
            raise ConfigError(
                f"Pipeline {self.name!r}: route() takes a function of the output, "
                f"not a {type(fn).__name__}"
            )
        self.route_fn = fn
        return self

    def join_table(
        self,
        topic: str,
        key: Callable[[Any], Any],
        *,
        join: JoinKind = "inner",
        missing: Missing = "dlq",
        as_: str | None = "table",
        decoder: Any = None,
    ) -> Pipeline:
        """Enrich each record with the latest row of a table (a compacted topic) first.

        The join runs on the decoded record before every other step, so the steps see
        the joined record; call it before them. docs/enrichment.md has the rules.

        Args:
            topic: the table's compacted topic; its Kafka keys are the table keys.
            key: record -> the key to look up (compared as text; None: no row).
            join: `inner` (no row: DLQ stage `join`, or dropped) or `left` (goes on).
            missing: inner join without a row: `dlq` or `drop`.
            as_: the field the row goes into (a left join's miss: None); None merges
                the row's fields into the record (the record's own fields win).
            decoder: the table values' serde; by default the one of RILL_TABLE_FORMAT etc.

        Raises:
            ConfigError: a second join, a join after other steps, or unknown options.
        """
        if self.join_plan is not None:
            raise ConfigError(f"Pipeline {self.name!r}: join_table(): one table per pipeline")
        if self.steps:
            raise ConfigError(
                f"Pipeline {self.name!r}: join_table() runs before every step: call it first"
            )
        if join not in ("inner", "left") or missing not in ("dlq", "drop"):
            raise ConfigError(
                f"Pipeline {self.name!r}: join_table(): join is inner or left, missing is "
                f"dlq or drop (got {join!r}, {missing!r})"
            )
        name = getattr(key, "__name__", "key")
        self.join_plan = JoinPlan(topic, key, decoder, join, missing, as_, name)
        return self

    def group_by(self, by: str | Callable[[Any], Any]) -> Pipeline:
        """Window by `by` (a field name, or a function of the record) although the input is
        keyed otherwise: each record goes, under its new key, through the repartition
        topic `<group_id>-repartition`, so every record of a key reaches one partition's
        window state (docs/group-by.md). The last step before `window()`.
        """
        if not by:
            raise ConfigError(f"Pipeline {self.name!r}: group_by() needs a field or a function")
        if self.group_key is not None:
            raise ConfigError(f"Pipeline {self.name!r}: group_by() once per pipeline")
        self.group_key = by
        return self

    def serdes(self, decoder: Any = None, encoder: Any = None) -> Pipeline:
        """Use these serdes instead of the configured ones, e.g. generated Protobuf classes:

        from service.serde import ProtobufSerde
        from service.serde.wire import PlainWire
        Pipeline().serdes(decoder=ProtobufSerde(orders_pb2.Order, PlainWire()))
        """
        self.decoder = decoder or self.decoder
        self.encoder = encoder or self.encoder
        return self

    def window(
        self,
        kind: WindowKind,
        *,
        size_ms: int = 0,
        advance_ms: int = 0,
        gap_ms: int = 0,
        grace_ms: int = 0,
        count: int = 0,
        count_advance: int = 0,
        time_field: str | None = None,
        emit: str = "final",
        idle_timeout_ms: int = 5_000,
        aggregates: Sequence[str] = ("count",),
    ) -> Pipeline:
        """Aggregate keyed records in windows (the last step; state lives in Redis).

        Args:
            kind: tumbling, hopping, sliding, session, count_tumbling or count_hopping.
            size_ms / advance_ms / gap_ms / grace_ms: the window definition (time).
            count / count_advance: records per count window of a key, and (count_hopping)
                records between two windows' starts; e.g.
                `window("count_hopping", count=100, count_advance=50)`.
            time_field: event-time field; None uses the Kafka timestamp (count windows
                read no event time).
            emit: final (once, on close) or update (each batch that changes it).
            idle_timeout_ms: after this long without records a partition's watermark
                follows the wall clock (0: never).
            aggregates: e.g. ["count", "sum:amount as total"].

        Raises:
            ConfigError: a window that cannot assign records (size 0, hopping without
                an advance or with one above the size, session without a gap, count
                window without a count, count_hopping without a count_advance in
                1..count, negative grace, unknown kind, emit mode or aggregate), naming
                the argument.
        """
        try:
            spec = WindowSpec(
                kind,
                size_ms=size_ms,
                advance_ms=advance_ms,
                gap_ms=gap_ms,
                grace_ms=grace_ms,
                count=count,
                count_advance=count_advance,
            )
            aggs = tuple(Aggregation.parse(a) for a in aggregates)
            self.window_plan = WindowPlan(spec, aggs, time_field, emit, idle_timeout_ms)
        except ConfigError as exc:
            raise ConfigError(f"Pipeline {self.name!r}: window(): {exc}") from exc
        return self

    def reduce(
        self, name: str, initializer: Callable[[], Any], reducer: Callable[[Any, Any], Any]
    ) -> Pipeline:
        """Add a user aggregate to the window: `reducer(acc, record) -> acc`.

        The accumulator starts as `initializer()` per window and is stored in Redis
        (JSON), so it survives restarts and moves with its partition. Return a new
        accumulator rather than mutating the old one. Tumbling and hopping windows only
        (by time or by count): sessions and sliding windows merge partial aggregates,
        which a fold cannot.
        """
        plan = self.window_plan
        if plan is None:
            raise ConfigError(f"Pipeline {self.name!r}: call window() before reduce()")
        if plan.spec.kind not in ("tumbling", "hopping", "count_tumbling", "count_hopping"):
            raise ConfigError(
                f"Pipeline {self.name!r}: reduce() needs tumbling or hopping windows "
                "(by time or by count), "
                f"not {plan.spec.kind}"
            )
        custom = Aggregation("custom", None, name, Reducer(initializer, reducer))
        self.window_plan = WindowPlan(
            plan.spec,
            (*plan.aggregations, custom),
            plan.time_field,
            plan.emit,
            plan.idle_timeout_ms,
        )
        return self

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={[s.name for s in self.steps]})"


def declarative_pipeline(
    filter_field: str | None,
    filter_op: str,
    filter_value: Any,
    key_by: str | None,
    project: list[str] | None,
    rename: dict[str, str],
) -> Pipeline:
    """The default pipeline: optional filter, key by a field, project, rename."""
    pipeline = Pipeline("declarative")
    if filter_field:
        pipeline.filter(make_filter(filter_field, filter_op, filter_value), filter_field)
    if key_by:
        pipeline.key_by(make_key_by(key_by), key_by)
    if project:
        pipeline.map(make_project(project, rename), "project")
    elif rename:
        pipeline.map(make_rename(rename), "rename")
    return pipeline
