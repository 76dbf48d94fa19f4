"""The chart's `processes` (RILL_PROCESSES): group members per pod, and the partitions
they need."""

from __future__ import annotations

import pytest

from tests.chart.test_helm_chart import container_env, render, rendered


def test_processes_reaches_the_worker_as_rill_processes() -> None:
    """`processes` renders as RILL_PROCESSES (1 by default: one process, no supervisor)."""
    assert container_env(rendered())["RILL_PROCESSES"] == "1"
    two = rendered("processes=2", "autoscaling.enabled=true", "autoscaling.maxReplicas=2")
    assert container_env(two)["RILL_PROCESSES"] == "2"


def test_max_replicas_times_processes_above_partitions_is_refused() -> None:
    """Each process is a group member: maxReplicas x processes may not pass the partitions."""
    done = render(
        "processes=2",
        "autoscaling.enabled=true",
        "autoscaling.maxReplicas=3",
        "autoscaling.partitions=4",
    )
    assert done.returncode != 0
    assert "maxReplicas (3) x processes (2) must not exceed autoscaling.partitions (4)" in (
        done.stderr
    )


def test_fixed_replicas_times_processes_above_partitions_is_refused() -> None:
    """Without autoscaling, replicas x processes may not pass the partitions either."""
    done = render("processes=4", "replicas=2", "autoscaling.partitions=4")
    assert done.returncode != 0
    assert "replicas (2) x processes (4) must not exceed autoscaling.partitions (4)" in done.stderr
    assert rendered("processes=2", "replicas=2", "autoscaling.partitions=4")


@pytest.mark.parametrize("bad", ["processes=0", "processes=65", "env.RILL_PROCESSES=2"])
def test_processes_out_of_bounds_or_set_twice_is_refused(bad: str) -> None:
    """The schema bounds `processes` like the setting (1..64) and `env` cannot set it again."""
    assert render(bad).returncode != 0
