"""Build the processing plan from settings: serdes plus the declarative or Python pipeline."""

from __future__ import annotations

import importlib

from service import __version__
from service.config import Settings
from service.errors import ConfigError
from service.pipeline import Pipeline
from service.processing.batch import Plan
from service.processing.steps import declarative_pipeline
from service.processing.windows import Aggregation, WindowPlan, WindowSpec
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
    if settings.app:
        return load_app(settings.app)
    return declarative_pipeline(
        settings.filter_field,
        settings.filter_op,
        settings.filter_value,
        settings.key_by,
        settings.project,
        settings.rename,
    )


def build_plan(settings: Settings) -> Plan:
    """Everything the pure batch function needs."""
    s = settings
    pipeline = build_pipeline(s)
    decoder, encoder, resolver = build_serdes(s)
    return Plan(
        decoder=pipeline.decoder or decoder,
        encoder=pipeline.encoder or encoder,
        steps=tuple(pipeline.steps),
        output_topic=s.output_topic,
        dlq_topic=s.dlq_topic,
        max_record_bytes=s.max_record_bytes,
        transform_retries=s.transform_retries,
        version=__version__,
        window=pipeline.window_plan if s.app else build_window(s),
        late_topic=s.late_topic,
        resolver=resolver,
    )


def build_window(settings: Settings) -> WindowPlan | None:
    """The window step of the declarative settings, or None for a stateless pipeline."""
    s = settings
    if s.window_type == "none":
        return None
    spec = WindowSpec(
        s.window_type,
        size_ms=s.window_size_ms,
        advance_ms=s.window_advance_ms,
        gap_ms=s.window_gap_ms,
        grace_ms=s.window_grace_ms,
    )
    return WindowPlan(
        spec,
        tuple(Aggregation.parse(a) for a in s.aggregates),
        s.window_time_field or None,
        s.window_emit,
        s.window_idle_timeout_ms,
    )
