"""The image and the compose stack are set up as the chart expects them.

No Docker engine runs here, so the image is not built: these tests read the Dockerfile,
.dockerignore and docker-compose.yml, and `docker compose config` checks the compose file
where the compose client is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.chart.test_helm_chart import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def final_stage() -> list[str]:
    """Instructions of the Dockerfile's last stage, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    start = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[start:]


def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_image_runs_as_a_non_root_user() -> None:
    """The last USER is a numeric non-root uid (runAsNonRoot can verify a number only)."""
    users = [line.split()[1] for line in final_stage() if line.upper().startswith("USER ")]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert int(uid) == 10001, "the chart's podSecurityContext.runAsUser"


def test_image_writes_nothing_outside_tmp() -> None:
    """No bytecode writes, HOME and TMPDIR in /tmp: fit for a read-only root filesystem."""
    env = " ".join(line for line in final_stage() if line.upper().startswith("ENV "))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp", "TMPDIR=/tmp"):
        assert setting in env, setting


def test_image_has_a_healthcheck_on_healthz() -> None:
    """HEALTHCHECK asks /healthz on the metrics port."""
    checks = [line for line in final_stage() if line.upper().startswith("HEALTHCHECK ")]
    assert len(checks) == 1
    assert "/healthz" in checks[0]
    assert "RILL_METRICS_PORT" in checks[0]


def test_dockerignore_keeps_the_build_context_to_the_package() -> None:
    """.dockerignore drops the venv, caches and git, never what the build copies."""
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".rill", "**/__pycache__", "tests"} <= ignored
    copied = {
        part
        for line in final_stage() + DOCKERFILE.read_text().splitlines()
        if line.strip().upper().startswith("COPY ") and "--from" not in line
        for part in line.split()[1:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "service"}
    assert not copied & ignored


def test_compose_redis_keeps_state_and_never_evicts() -> None:
    """Compose Redis: AOF on, a data volume, maxmemory-policy noeviction."""
    redis = compose()["services"]["redis"]
    args = redis["command"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_compose_runs_rill_read_only_with_prometheus_and_grafana() -> None:
    """rill read-only with a /tmp tmpfs; Prometheus scrapes it; Grafana gets the dashboard."""
    services = compose()["services"]
    assert services["rill"]["read_only"] is True
    assert services["rill"]["tmpfs"] == ["/tmp"]  # noqa: S108 - the one writable path
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), f"{service} mounts {source}, which is missing"
    prometheus = yaml.safe_load((ROOT / "deploy" / "monitoring" / "prometheus.yml").read_text())
    targets = [
        t
        for job in prometheus["scrape_configs"]
        for static in job["static_configs"]
        for t in static["targets"]
    ]
    assert "rill:9400" in targets
    mounted = {Path(v.split(":")[1]).name for v in services["grafana"]["volumes"]}
    assert "rill.json" in mounted


def test_compose_file_validates_where_the_client_exists() -> None:
    """`docker compose config` accepts the file when the compose client is installed."""
    docker = shutil.which("docker")
    has_compose = (
        docker is not None
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if has_compose:
        assert docker is not None
        done = subprocess.run(
            [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    services = compose()["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
