"""HTTP endpoints: /metrics, /healthz (the loop turns), /readyz (assigned and reachable)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from service.errors import ConfigError


class Probes(Protocol):
    """What the endpoints ask: a worker's `HealthState`, or a supervisor's view of its
    children (`runtime/supervisor.py`)."""

    def live(self) -> tuple[bool, str]:
        """/healthz: (ok, why)."""
        ...

    @property
    def ready_check(self) -> Callable[[], tuple[bool, str]]:
        """/readyz: (ok, why)."""
        ...


class HealthState:
    """What the endpoints report; the worker updates it, the server reads it."""

    def __init__(self, liveness_threshold_s: float) -> None:
        self.liveness_threshold_s = liveness_threshold_s
        self.last_loop = time.monotonic()
        self.ready_check: Callable[[], tuple[bool, str]] = lambda: (False, "starting")

    def beat(self) -> None:
        """The poll loop turned."""
        self.last_loop = time.monotonic()

    def live(self) -> tuple[bool, str]:
        """Live while the loop turned within the threshold."""
        age = time.monotonic() - self.last_loop
        if age > self.liveness_threshold_s:
            return False, f"poll loop stalled for {age:.1f}s"
        return True, f"poll loop turned {age:.1f}s ago"


class HealthServer:
    """A small threaded HTTP server on its own daemon thread.

    Args:
        port: TCP port on all interfaces (0 picks a free one).
        registry: the metrics registry to expose.
        state: liveness and readiness (a `HealthState`, or a supervisor's).
    """

    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        state: Probes,
        host: str = "0.0.0.0",  # noqa: S104 - scraped from outside the pod
    ) -> None:
        self._address = (host, port)
        self._registry = registry
        self._state = state
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        """Bind and serve in the background."""
        registry, state = self._registry, self._state

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/healthz"):
                    ok, why = state.live()
                    self._send(200 if ok else 503, why.encode())
                elif self.path.startswith("/readyz"):
                    ok, why = state.ready_check()
                    self._send(200 if ok else 503, why.encode())
                else:
                    self._send(404, b"not found")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self._server = ThreadingHTTPServer(self._address, Handler)
        except OSError as exc:
            raise ConfigError(
                f"RILL_METRICS_PORT={self._address[1]}: cannot listen ({exc.strerror}); "
                "choose a free port, or 0 to turn the endpoints off"
            ) from exc
        threading.Thread(target=self._server.serve_forever, name="rill-http", daemon=True).start()
        return self

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
