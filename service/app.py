"""The processing plan: built from settings without I/O, opened by the worker.

`build_plan` reads settings and schema files only, so `rill check-config` touches no
network. `open_plan` starts the clients the plan holds, inside the worker's
`ExitStack`.
"""

from __future__ import annotations

import importlib
from contextlib import ExitStack
from dataclasses import replace

from service import __version__
from service.config import (
    DedupeSettings,
    RegistrySettings,
    Settings,
    TableSettings,
    WindowSettings,
)
from service.errors import ConfigError
from service.kafka.registry_client import RegistryResolver
from service.pipeline import Pipeline, declarative_pipeline
from service.processing.aggregates import Aggregation
from service.processing.batch import Plan
from service.processing.dedupe import DedupePlan, field_id
from service.processing.join import JoinPlan, field_key
from service.processing.regroup import Regroup, key_function, repartition_topic
from service.processing.routing import Router
from service.processing.windows import WindowPlan, WindowSpec
from service.serdes import build_serdes, table_serde


def load_app(spec: str) -> Pipeline:
    """Import `module:attr` and check it is a Pipeline (or a function returning one)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"RILL_APP={spec!r}: expected module:attribute, e.g. myapp.jobs:pipeline")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"RILL_APP={spec!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        found = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"RILL_APP={spec!r}: {module_name} has no attribute {attr!r}") from exc
    if callable(found) and not isinstance(found, Pipeline):
        found = found()
    if not isinstance(found, Pipeline):
        raise ConfigError(f"RILL_APP={spec!r}: is a {type(found).__name__}, not a rill Pipeline")
    return found


def build_pipeline(settings: Settings) -> Pipeline:
    """The Python pipeline named by RILL_APP, else the declarative one."""
    p = settings.pipeline
    if p.app:
        return load_app(p.app)
    return declared_pipeline(settings)


def declared_pipeline(settings: Settings) -> Pipeline:
    """The declarative pipeline of the settings (filter, key, project, rename), RILL_APP
    aside: a Python app may start from it and add steps."""
    p = settings.pipeline
    return declarative_pipeline(
        p.filter_field,
        p.filter_op,
        p.filter_value,
        p.key_by,
        list(p.project) if p.project is not None else None,
        dict(p.rename),
    )


def build_plan(settings: Settings) -> Plan:
    """Everything the pure batch function needs; opens no connection.

    Clients the plan holds (the schema registry) are not started: see `open_plan`.
    """
    pipeline = build_pipeline(settings)
    serdes = build_serdes(settings)
    topics, limits = settings.topics, settings.pipeline
    window = pipeline.window_plan if limits.app else build_window(settings.window)
    if window is not None:
        # RILL_WINDOW_MAX_FUTURE_MS holds for the Python API's window too.
        window = replace(window, max_future_ms=settings.window.max_future_ms)
    return Plan(
        decoder=pipeline.decoder or serdes.decoder,
        encoder=pipeline.encoder or serdes.encoder,
        steps=tuple(pipeline.steps),
        output_topic=topics.output,
        dlq_topic=topics.dlq,
        max_record_bytes=limits.max_record_bytes,
        transform_retries=limits.transform_retries,
        version=__version__,
        window=window,
        late_topic=topics.late,
        max_message_bytes=settings.producer.message_max_bytes,
        resolver=serdes.registry,
        dedupe=pipeline.dedupe_plan or build_dedupe(settings.dedupe),
        router=build_router(settings, pipeline),
        join=build_join(
            pipeline.join_plan if limits.app else None, settings.table, settings.registry
        ),
        regroup=build_regroup(settings, pipeline, window is not None),
    )


def build_router(settings: Settings, pipeline: Pipeline) -> Router | None:
    """The output route of RILL_ROUTE_FIELD or `Pipeline.route`, or None (the sink topic).

    Raises:
        ConfigError: both are given, or a route without RILL_ROUTE_TOPICS, or topics
            without a route.
    """
    route = settings.routing
    fn = pipeline.route_fn
    if fn is not None and route.field:
        raise ConfigError(
            f"Pipeline {pipeline.name!r} calls route() and RILL_ROUTE_FIELD is set too: "
            "unset RILL_ROUTE_FIELD (or drop route())"
        )
    if fn is None and not route.field:
        if route.topics:
            raise ConfigError(
                f"RILL_ROUTE_TOPICS is set but Pipeline {pipeline.name!r} does not call "
                "route(): set RILL_ROUTE_FIELD, call route(), or unset RILL_ROUTE_TOPICS"
            )
        return None
    if not route.topics:
        raise ConfigError(
            f"Pipeline {pipeline.name!r} calls route() but RILL_ROUTE_TOPICS is empty: set it "
            "to the topics the route may name"
        )
    return Router(frozenset(route.allowed), route.field, fn)


def build_regroup(settings: Settings, pipeline: Pipeline, windowed: bool) -> Regroup | None:
    """The re-keying of `group_by` (the Python pipeline's, else RILL_GROUP_BY), or None.

    Raises:
        ConfigError: group_by without a window, or a repartition topic that is one of the
            pipeline's own topics.
    """
    by = pipeline.group_key if settings.pipeline.app else settings.pipeline.group_by
    if by is None:
        return None
    if not windowed:
        raise ConfigError(
            "group_by re-keys records for a window, and this pipeline has none: set "
            "RILL_WINDOW_TYPE (or window() in the Python pipeline), or unset RILL_GROUP_BY "
            "(key_by sets the output key of a stateless pipeline)"
        )
    if pipeline.dedupe_plan is not None or settings.dedupe.id_field:
        # Ids are kept per input partition, and with group_by the input partitions have no
        # state of their own (only the repartition topic's are claimed).
        raise ConfigError(
            "group_by and dedupe together are not supported: de-duplicate upstream of the "
            "re-keying (a pipeline of its own), or unset RILL_DEDUPE_FIELD / drop dedupe()"
        )
    topic = repartition_topic(settings.kafka.group_id)
    t = settings.topics
    if topic in (t.input, t.output, t.dlq, t.late, *settings.routing.allowed):
        raise ConfigError(
            f"the repartition topic {topic!r} would be one of the pipeline's own topics: "
            "set RILL_GROUP_ID to another group id"
        )
    fn, name = key_function(by)
    return Regroup(topic, fn, name)


def open_plan(plan: Plan, stack: ExitStack) -> None:
    """Start the clients the plan holds; `stack` closes them.

    The worker calls this first inside its `ExitStack`. Today the one client is the
    schema registry: started, closed by `stack`, and asked once for the output schema
    id, which goes to the encoder (registered first when RILL_OUTPUT_AUTO_REGISTER).

    Raises:
        ConfigError: the output schema is not usable under its subject.
        RillError: the registry cannot be reached for the output schema id.
    """
    table: RegistryResolver | None = plan.join.resolver if plan.join is not None else None
    if table is not None:  # the table's values in the registry wire format
        table.start()
        stack.callback(table.close)
    registry: RegistryResolver | None = plan.resolver
    if registry is None:
        return
    registry.start()
    stack.callback(registry.close)
    registry.resolve_output()


def build_join(
    given: JoinPlan | None, table: TableSettings, registry: RegistrySettings
) -> JoinPlan | None:
    """The table join: the Python pipeline's (`join_table`), else the declarative one
    (RILL_TABLE_TOPIC), with the configured table serde where none is given."""
    join = given
    if join is None:
        if table.topic is None:
            return None
        if table.key_field is None:
            raise ConfigError(
                "RILL_TABLE_TOPIC is set but RILL_APP's pipeline calls no join_table(): set "
                "RILL_TABLE_KEY_FIELD, or call join_table() in the pipeline"
            )
        join = JoinPlan(
            table.topic,
            field_key(table.key_field),
            None,
            table.join,
            table.missing,
            table.as_,
            table.key_field,
        )
    if join.decoder is None:
        decoder, resolver = table_serde(table, registry)
        join = replace(join, decoder=decoder, resolver=resolver)
    return join


def build_dedupe(dedupe: DedupeSettings) -> DedupePlan | None:
    """The dedupe step of the settings (RILL_DEDUPE_FIELD), or None."""
    if not dedupe.id_field:
        return None
    return DedupePlan(field_id(dedupe.id_field), dedupe.window_ms, dedupe.dlq, dedupe.id_field)


def build_window(window: WindowSettings) -> WindowPlan | None:
    """The window step of the declarative settings, or None for a stateless pipeline."""
    if window.kind == "none":
        return None
    spec = WindowSpec(
        window.kind,
        size_ms=window.size_ms,
        advance_ms=window.advance_ms,
        gap_ms=window.gap_ms,
        grace_ms=window.grace_ms,
        count=window.count,
        count_advance=window.count_advance,
    )
    return WindowPlan(
        spec,
        tuple(Aggregation.parse(a) for a in window.aggregates),
        window.time_field,
        window.emit,
        window.idle_timeout_ms,
    )
