"""Routing: the output topic of each output, chosen from an allow-list.

A route is a field of the output value whose text names the topic (RILL_ROUTE_FIELD),
or a Python function of the output value returning the topic (`Pipeline.route(fn)`).
In a stateless pipeline the output value is a transformed record; in a windowed one it
is the window result (`key`, `window_start`, `window_end` and the aggregates). A topic
outside the allow-list (RILL_ROUTE_TOPICS), a missing field or a function that raises
is a `RecordError` of stage `route`: that output goes to the DLQ with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from service.errors import RecordError

RouteFn: TypeAlias = Callable[[Any], str]
STAGE = "route"


@dataclass(frozen=True, slots=True)
class Router:
    """Picks each output's topic from `topics`.

    Attributes:
        topics: the allow-list (every one created at start).
        field: the field naming the topic (None: `fn` routes).
        fn: the function returning the topic (None: `field` routes).
    """

    topics: frozenset[str]
    field: str | None = None
    fn: RouteFn | None = None

    def topic(self, value: Any) -> str:
        """The topic of one output value.

        Raises:
            RecordError: stage `route`: no topic, or one outside the allow-list.
        """
        if self.fn is not None:
            try:
                topic = self.fn(value)
            except RecordError:
                raise
            except Exception as exc:  # user code may raise anything: it becomes a DLQ entry
                why = f"route function raised {type(exc).__name__}: {exc}"
                raise RecordError(STAGE, why) from exc
        else:
            try:
                topic = value[self.field]
            except (KeyError, TypeError, IndexError):
                raise RecordError(STAGE, f"route field {self.field!r} is missing") from None
        if not isinstance(topic, str):
            raise RecordError(STAGE, f"route gave a {type(topic).__name__}, not a topic name")
        if topic not in self.topics:
            raise RecordError(
                STAGE,
                f"route names topic {topic!r}, not one of RILL_ROUTE_TOPICS "
                f"({', '.join(sorted(self.topics))})",
            )
        return topic

    def describe(self) -> str:
        """How it routes, for the start log line."""
        how = f"field {self.field!r}" if self.fn is None else getattr(self.fn, "__name__", "fn")
        return f"{how} -> {sorted(self.topics)}"


# (index among the record's items, key, value, why) of an item that goes to the DLQ.
Unrouted: TypeAlias = tuple[int, Any, Any, RecordError]


def route_items(
    router: Router, items: Sequence[tuple[Any, Any]], skip: Callable[[Any], bool]
) -> tuple[list[str | None], list[Unrouted]]:
    """The topic of each item (None where it has none), and the items that cannot be routed.

    Items whose key `skip` says already failed are left alone (None, not listed).
    """
    topics: list[str | None] = []
    failed: list[Unrouted] = []
    for index, (key, value) in enumerate(items):
        if skip(key):
            topics.append(None)
            continue
        try:
            topics.append(router.topic(value))
        except RecordError as exc:
            topics.append(None)
            failed.append((index, key, value, exc))
    return topics, failed
