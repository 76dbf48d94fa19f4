"""Routing and partitioning: where outputs go, and how window input is checked."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator
from pydantic_settings import NoDecode

from service.config.declare import View, setting
from service.config.views import _empty_is_none, _split_list


class RoutingSettings(View):
    """Routing: an output topic per record, and the co-partition check of window input."""

    flat_prefix: ClassVar[str] = "route_"

    field: Annotated[str | None, BeforeValidator(_empty_is_none)] = setting(
        None,
        "Field of each output (a window result in a windowed pipeline) whose text names "
        "its topic, one of RILL_ROUTE_TOPICS (unset: the sink topic; or `Pipeline.route`).",
    )
    topics: Annotated[list[str] | None, NoDecode, BeforeValidator(_split_list)] = setting(
        None,
        "Topics a route may name, comma-separated (or a JSON list), created at start like "
        "the sink; a record naming another goes to the DLQ (stage `route`).",
    )

    @property
    def allowed(self) -> list[str]:
        """The route topics (none when unset)."""
        return list(self.topics or ())

    copartition_check: Literal["warn", "fail", "off"] = setting(
        "warn",
        "Windowed pipelines: a record whose window key does not hash to its input partition "
        "(murmur2 or CRC32) is counted (`rill_records_not_copartitioned_total`) and warned "
        "about (`warn`), stops the worker (`fail`), or is not checked (`off`). Fix: key "
        "the input by the window key, or re-key with `group_by`.",
        name="copartition_check",
    )
