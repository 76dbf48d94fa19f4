"""A STAND-IN for prometheus-adapter: serves `external.metrics.k8s.io/v1beta1` for tests.

In production the HPA's External metric comes from prometheus-adapter with the chart's
rule (deploy/helm/rill/files/prometheus-adapter-rule.yaml), `rill_consumer_lag_total`:

    sum by (topic) (max by (topic, partition) (rill_consumer_lag{<<.LabelMatchers>>}))

where the matchers are the HPA's selector (topic, job) and the HPA's namespace. Here there
is no Prometheus, so this server scrapes the workers' `/metrics` itself on every request
and computes exactly that. Series get the `namespace` and `job` labels of the target they
were scraped from (registered with `set_targets`), as Prometheus with a ServiceMonitor
would give them. A target that does not answer contributes no series (Prometheus would
keep its last samples for up to 5 minutes). No authentication: the aggregator's
front-proxy headers are not checked. Not for production; for tests and demos only.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client.parser import text_string_to_metric_families

GROUP_VERSION = "external.metrics.k8s.io/v1beta1"
SOURCE_METRIC = "rill_consumer_lag"
EXPOSED_METRIC = "rill_consumer_lag_total"
# The rule's metricsQuery, which `total_by_topic` implements (a test keeps them equal).
RULE_QUERY = "sum by (topic) (max by (topic, partition) (<<.Series>>{<<.LabelMatchers>>}))"
_PATH = re.compile(r"^/apis/external\.metrics\.k8s\.io/v1beta1/namespaces/([^/]+)/([^/]+)$")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher of a Kubernetes label selector (`k=v`, `k==v`, `k!=v`)."""

    label: str
    value: str
    equal: bool

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a series' labels satisfy this matcher."""
        return (labels.get(self.label, "") == self.value) == self.equal


def parse_selector(selector: str) -> list[Matcher]:
    """Parse the equality-based label selector the HPA sends (from `matchLabels`).

    Raises:
        ValueError: for set-based selectors (`in`, `notin`, `exists`), which the chart
            never produces.
    """
    matchers = []
    for part in filter(None, (p.strip() for p in selector.split(","))):
        if "!=" in part:
            label, value = part.split("!=", 1)
            matchers.append(Matcher(label.strip(), value.strip(), equal=False))
        elif "=" in part:
            label, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            matchers.append(Matcher(label.strip(), value.strip(), equal=True))
        else:
            raise ValueError(f"unsupported label selector term {part!r}")
    return matchers


def lag_series(exposition: str) -> list[tuple[dict[str, str], float]]:
    """The `rill_consumer_lag` samples of one Prometheus text exposition."""
    found: list[tuple[dict[str, str], float]] = []
    for family in text_string_to_metric_families(exposition):
        if family.name != SOURCE_METRIC:
            continue
        found.extend((dict(sample.labels), sample.value) for sample in family.samples)
    return found


def total_by_topic(
    series: Iterable[tuple[dict[str, str], float]], matchers: Iterable[Matcher]
) -> dict[str, float]:
    """`sum by (topic) (max by (topic, partition) (series{matchers}))`.

    A partition exported by two workers during a hand-over counts once.
    """
    wanted = list(matchers)
    per_partition: dict[tuple[str, str], float] = {}
    for labels, value in series:
        if all(m.matches(labels) for m in wanted):
            key = (labels.get("topic", ""), labels.get("partition", ""))
            per_partition[key] = max(value, per_partition.get(key, value))
    totals: dict[str, float] = defaultdict(float)
    for (topic, _), value in per_partition.items():
        totals[topic] += value
    return dict(totals)


def metric_value_list(name: str, totals: Mapping[str, float]) -> dict[str, Any]:
    """An `ExternalMetricValueList` with one item per topic."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    items = [
        {
            "metricName": name,
            "metricLabels": {"topic": topic},
            "timestamp": now,
            "value": str(round(total)),
        }
        for topic, total in sorted(totals.items())
    ]
    return {
        "kind": "ExternalMetricValueList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": items,
    }


def discovery() -> dict[str, Any]:
    """The `APIResourceList` the aggregator asks for before routing to this server."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": EXPOSED_METRIC,
                "singularName": "",
                "namespaced": True,
                "kind": "ExternalMetricValueList",
                "verbs": ["get"],
            }
        ],
    }


class StandInAdapter:
    """The stand-in server: register scrape targets per namespace, then `start()`."""

    def __init__(self, cert: Path, key: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self._cert, self._key = cert, key
        self._address = (host, port)
        self._targets: dict[str, tuple[str, list[str]]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.requests: list[str] = []

    @property
    def port(self) -> int:
        """The bound port (after `start()`)."""
        assert self._server is not None
        return self._server.server_address[1]

    def set_targets(self, namespace: str, job: str, urls: Iterable[str]) -> None:
        """The `/metrics` URLs of the namespace's workers, scraped as job `job`."""
        with self._lock:
            self._targets[namespace] = (job, list(urls))

    def scrape(self, namespace: str) -> list[tuple[dict[str, str], float]]:
        """Every lag series of the namespace's targets, with `namespace` and `job` labels."""
        with self._lock:
            job, urls = self._targets.get(namespace, ("", []))
        series: list[tuple[dict[str, str], float]] = []
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=3) as answer:  # noqa: S310 - our URLs
                    text = answer.read().decode()
            except (urllib.error.URLError, OSError):
                continue
            for labels, value in lag_series(text):
                series.append(({**labels, "namespace": namespace, "job": job}, value))
        return series

    def answer(self, path: str, query: str) -> tuple[int, dict[str, Any]]:
        """Status and JSON body for one GET."""
        self.requests.append(path)
        if path.rstrip("/") == f"/apis/{GROUP_VERSION}":
            return 200, discovery()
        found = _PATH.match(path)
        if not found or found.group(2) != EXPOSED_METRIC:
            return 404, _status(404, f"{path} is not served by the stand-in adapter")
        namespace = found.group(1)
        selector = parse_qs(query).get("labelSelector", [""])[0]
        try:
            matchers = parse_selector(selector)
        except ValueError as exc:
            return 400, _status(400, str(exc))
        matchers.append(Matcher("namespace", namespace, equal=True))
        return 200, metric_value_list(
            EXPOSED_METRIC, total_by_topic(self.scrape(namespace), matchers)
        )

    def start(self) -> StandInAdapter:
        """Serve HTTPS in a daemon thread."""
        adapter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                status, body = adapter.answer(parts.path, parts.query)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(self._address, Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._cert, self._key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _status(code: int, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "code": code,
    }
