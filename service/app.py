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
from service.config import Settings, WindowSettings
from service.errors import ConfigError
from service.kafka.registry_client import RegistryResolver
from service.pipeline import Pipeline, declarative_pipeline
from service.processing.aggregates import Aggregation
from service.processing.batch import Plan
from service.processing.regroup import Regroup, key_function, repartition_topic
from service.processing.windows import WindowPlan, WindowSpec
from service.serdes import build_serdes


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
        regroup=build_regroup(settings, pipeline, window is not None),
    )


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
    topic = repartition_topic(settings.kafka.group_id)
    t = settings.topics
    if topic in (t.input, t.output, t.dlq, t.late):
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
    registry: RegistryResolver | None = plan.resolver
    if registry is None:
        return
    registry.start()
    stack.callback(registry.close)
    registry.resolve_output()


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
    )
    return WindowPlan(
        spec,
        tuple(Aggregation.parse(a) for a in window.aggregates),
        window.time_field,
        window.emit,
        window.idle_timeout_ms,
    )
