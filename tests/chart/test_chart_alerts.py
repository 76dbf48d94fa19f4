"""The chart's alerts fire on what they exist for, under `promtool test rules`.

The PrometheusRule is rendered per variant (compose's KEDA default, mode hpa, KEDA scaling
to zero) into a rules file beside a copy of its test file from deploy/monitoring/tests.
Annotations are dropped from the copy: promtool compares them verbatim, and what the tests
pin is when each alert fires (`promtool check rules` still parses their templates).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.monitoring.build_rules import COMPOSE_SETS, RULES_PATH, render_rules
from tests.chart.test_helm_chart import ROOT

TESTS = ROOT / "deploy" / "monitoring" / "tests"
VARIANTS: dict[str, tuple[str, ...]] = {
    "alerts.test.yml": COMPOSE_SETS,
    "alerts-hpa.test.yml": (*COMPOSE_SETS, "autoscaling.mode=hpa"),
    "alerts-scale-to-zero.test.yml": (*COMPOSE_SETS, "autoscaling.minReplicas=0"),
}
ALERTS = {
    "RillConsumerLagGrowing",
    "RillConsumerLagSecondsHigh",
    "RillCircuitBreakerOpen",
    "RillDLQRateHigh",
    "RillStateLost",
    "RillWorkerNotReady",
    "RillWorkersAbsent",
    "RillPollLoopStalled",
    "RillScaledOutAndLagging",
    "RillAutoscalerCannotScale",
}


def promtool() -> str:
    """promtool on PATH, else the one `make tools` links into .rill/bin."""
    local = ROOT / ".rill" / "bin" / "promtool"
    found = shutil.which("promtool") or (str(local) if local.exists() else None)
    assert found, "promtool is missing: `make tools` builds it"
    return found


def without_annotations(rules: str) -> str:
    """The rules file with every rule's annotations removed."""
    doc = yaml.safe_load(rules)
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return yaml.safe_dump(doc, sort_keys=False)


def run_tests(tmp: Path, test_file: str, rules: str) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` on a copy of test_file next to `rules` as rules.yml."""
    (tmp / "rules.yml").write_text(without_annotations(rules))
    shutil.copy(TESTS / test_file, tmp / test_file)
    return subprocess.run(
        [promtool(), "test", "rules", test_file],
        cwd=tmp,
        capture_output=True,
        text=True,
        check=False,
    )


def test_compose_rules_file_is_the_chart_rendering() -> None:
    """deploy/monitoring/rules.yml (compose's Prometheus loads it) is the chart's current rules."""
    assert RULES_PATH.read_text() == render_rules(), (
        "rules.yml is out of date: python deploy/monitoring/build_rules.py"
    )


def test_rules_file_passes_promtool_check() -> None:
    """`promtool check rules` accepts every expression and annotation template."""
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES_PATH)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_promtool_cases() -> None:
    """Each alert of the chart is named by a firing case and a silent case in the test files."""
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TESTS.glob("*.test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check["exp_alerts"] else silent).add(check["alertname"])
    rendered = yaml.safe_load(RULES_PATH.read_text())
    names = {r["alert"] for g in rendered["groups"] for r in g["rules"]}
    assert names == ALERTS
    assert firing == ALERTS, f"no firing case: {sorted(ALERTS - firing)}"
    assert silent == ALERTS, f"no silent case: {sorted(ALERTS - silent)}"
    assert set(VARIANTS) == {p.name for p in TESTS.glob("*.test.yml")}


@pytest.mark.parametrize("test_file", sorted(VARIANTS))
def test_alert_rules_under_promtool(test_file: str, tmp_path: Path) -> None:
    """`promtool test rules` passes on the chart's rules rendered for the file's variant."""
    done = run_tests(tmp_path, test_file, render_rules(VARIANTS[test_file]))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_old_breaker_rule_misses_the_half_open_cycle(tmp_path: Path) -> None:
    """With `== 1` (the rule before) the open/half-open outage case fails: the tests can fail."""
    rules = render_rules()
    fixed = '(rill_circuit_state{namespace="default",job="rill"}) > 0'
    assert fixed in rules
    done = run_tests(tmp_path, "alerts.test.yml", rules.replace(fixed, fixed[:-3] + "== 1"))
    assert done.returncode != 0
    assert "RillCircuitBreakerOpen" in done.stdout + done.stderr
