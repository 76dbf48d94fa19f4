"""librdkafka's own log lines as structlog events (JSON like every other line).

Without a `logger` in its configuration librdkafka writes raw `%3|...|FAIL|...` lines to
stderr. With one, confluent-kafka calls `logger.log(level, "%s [%s] %s", facility, client
name, text)` with the syslog level mapped to Python's, from the thread that polls,
consumes or flushes the client: so the lines come out between rill's own, in order.
"""

from __future__ import annotations

from typing import Any

import structlog


class LibrdkafkaLog:
    """The `logger` of one librdkafka client (`client`: consumer, producer, admin...)."""

    def __init__(self, client: str) -> None:
        self._log = structlog.get_logger("rill.librdkafka").bind(client=client)

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """One librdkafka line: `args` are (facility, client name, text)."""
        facility, name, text = [*args, "", "", ""][:3]
        self._log.log(level, "librdkafka", facility=facility, client_name=name, text=text)


def logged(conf: dict[str, Any], client: str) -> dict[str, Any]:
    """`conf` with librdkafka's log lines going through structlog.

    A `logger` already in `conf` is kept; `None` there leaves librdkafka writing its raw
    lines to stderr at once (with a logger they come out only when the client is polled).
    """
    if "logger" in conf:
        return {k: v for k, v in conf.items() if not (k == "logger" and v is None)}
    return {**conf, "logger": LibrdkafkaLog(client)}
