"""`rill plan` runs on the chart's values: its defaults, --values, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.errors import ConfigError
from service.planner import chart
from service.planner.cli import main
from service.planner.hpa import (
    Behavior,
    HpaSpec,
    ScalingPolicy,
    Tolerance,
    external_average_value_replicas,
)
from service.planner.keda import (
    KafkaTrigger,
    PartitionOffsets,
    ScaledObjectSpec,
    total_lag_from_offsets,
)
from service.planner.profile import step
from service.planner.simulate import KedaAutoscaler, simulate
from service.planner.system import GroupParams, drain_rate, replicas_needed

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "deploy" / "helm" / "rill" / "values.yaml"


def test_planner_defaults_are_the_charts_values() -> None:
    """CHART_AUTOSCALING is the chart's autoscaling block, key for key."""
    assert yaml.safe_load(VALUES.read_text())["autoscaling"] == chart.CHART_AUTOSCALING


def test_values_file_merges_over_the_chart() -> None:
    """A values file changes what it names; behavior falls back to the API's per direction."""
    c = chart.autoscaling(
        {"autoscaling": {"partitions": 8, "maxReplicas": 8, "keda": {"pollingInterval": 5}}}
    )
    assert (c.partitions, c.max_replicas, c.min_replicas) == (8, 8, 1)
    assert (c.polling_interval_s, c.cooldown_s) == (5.0, 300.0)
    assert c.scale_up.policies[0] == ScalingPolicy("Pods", 2, 30), "the chart's scale-up"
    only_down = chart.autoscaling(
        {"autoscaling": {"behavior": {"scaleUp": None, "scaleDown": {"selectPolicy": "Min"}}}}
    )
    assert only_down.scale_up.policies[0] == ScalingPolicy("Pods", 4, 15), "the API's default"
    assert only_down.scale_down.select_policy == "Min"


def test_values_flag_drives_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--values sets partitions and bounds; an explicit flag still wins."""
    values = tmp_path / "v.yaml"
    values.write_text("autoscaling: {partitions: 8, maxReplicas: 8, lagThreshold: 500}\n")
    args = ["--values", str(values), "--per-replica-rps", "1000", "--duration", "60"]
    assert main(args) == 0
    assert "8 partitions" in capsys.readouterr().out
    assert main([*args, "--partitions", "6", "--max-replicas", "6"]) == 0
    assert "6 partitions" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--per-replica-rps", "0"], "--per-replica-rps must be above 0"),
        (["--per-replica-rps", "nan"], "--per-replica-rps must be a finite number"),
        (["--tolerance", "-0.1"], "--tolerance must be at least 0"),
        (["--scale-up-tolerance", "0.2"], "need --controller-version 1.33"),
        (["--partitions", "0"], "--partitions must be at least 1"),
        (["--scale-down-window", "4000"], "--scale-down-window must be within 0..3600"),
        (["--scale-up-policy", "Pods:0:15"], "the value must be at least 1"),
        (["--values", "/nonexistent/values.yaml"], "cannot read the values file"),
        (["--every", "0"], "--every must be above 0"),
    ],
)
def test_bad_arguments_are_clear_errors(
    flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad value exits 2 with one line naming the flag, no traceback."""
    base = ["--per-replica-rps", "1000", "--duration", "60"]
    assert main([*base, *flags]) == 2
    err = capsys.readouterr().err
    assert named in err
    assert "Traceback" not in err


def test_headline_uses_the_partition_model(capsys: pytest.CaptureFixture[str]) -> None:
    """3000 records/s on 4 partitions at 1000 each needs 4 replicas, not 3 (3 drain like 2)."""
    params = GroupParams(partitions=4, per_replica_rps=1000)
    assert drain_rate(3, params) == drain_rate(2, params) == 2000
    assert replicas_needed(3000, params) == 4
    assert replicas_needed(4001, params) is None
    assert main(["--per-replica-rps", "1000", "--peak", "3000", "--duration", "60"]) == 0
    assert "needs 4 replicas" in capsys.readouterr().out
    assert main(["--per-replica-rps", "1000", "--peak", "5000", "--duration", "60"]) == 0
    assert "add partitions" in capsys.readouterr().out


def test_processes_count_as_group_members(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With 2 processes per pod, 8 partitions at 1000 records/s per process: 2 pods are 4
    members (4000/s), 3 pods are 6 members and drain like 4 (busiest holds 2 partitions),
    4 pods use all 8; replicas x processes beyond the partitions add nothing."""
    params = GroupParams(partitions=8, per_replica_rps=1000, processes=2)
    assert params.members(3) == 6
    assert drain_rate(2, params) == drain_rate(3, params) == 4000
    assert drain_rate(4, params) == drain_rate(9, params) == 8000
    assert replicas_needed(5000, params) == 4
    assert replicas_needed(8001, params) is None
    argv = ["--per-replica-rps", "1000", "--partitions", "8", "--peak", "5000", "--duration", "60"]
    assert main([*argv, "--processes", "2", "--max-replicas", "6"]) == 0
    out = capsys.readouterr().out
    assert "2 processes per replica" in out
    assert "needs 4 replicas" in out
    assert "replicas x processes beyond 8 partitions sit idle" in out
    values = tmp_path / "values.yaml"
    values.write_text("processes: 4\n")
    assert main([*argv, "--values", str(values), "--max-replicas", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 processes per replica" in out
    assert "needs 2 replicas" in out
    assert "sit idle" not in out


def test_planner_processes_default_is_the_charts() -> None:
    """CHART_PROCESSES is the chart's `processes`; a bad one in a values file is refused."""
    assert yaml.safe_load(VALUES.read_text())["processes"] == chart.CHART_PROCESSES
    with pytest.raises(ConfigError, match="processes"):
        chart.processes({"processes": 0})


def test_tolerance_rule_by_controller_version() -> None:
    """A ratio of exactly 1.1 scales on 1.32 and holds on 1.33; 1.33 has a band per direction."""
    assert external_average_value_replicas(4, 4_400_000, 1_000_000, Tolerance()) == 5
    assert external_average_value_replicas(4, 4_400_000, 1_000_000, Tolerance(version="1.33")) == 4
    wide_up = Tolerance(scale_up=0.5, scale_down=0.05, version="1.33")
    assert external_average_value_replicas(4, 5_900_000, 1_000_000, wide_up) == 4
    assert external_average_value_replicas(4, 3_700_000, 1_000_000, wide_up) == 4
    assert external_average_value_replicas(4, 3_500_000, 1_000_000, wide_up) == 4
    assert external_average_value_replicas(4, 3_000_000, 1_000_000, wide_up) == 3
    with pytest.raises(ValueError, match=r"1\.33"):
        Tolerance(scale_up=0.2, scale_down=0.1)


def test_keda_no_committed_offset_by_reset_policy() -> None:
    """No commit: lag 1 (latest) or the whole partition (earliest); 0 with scaleToZero..."""
    parts = [PartitionOffsets(5000, None), PartitionOffsets(5000, 4000)]
    latest = KafkaTrigger(lag_threshold=1000, offset_reset_policy="latest")
    earliest = KafkaTrigger(lag_threshold=1000, offset_reset_policy="earliest")
    zero = KafkaTrigger(
        lag_threshold=1000, offset_reset_policy="earliest", scale_to_zero_on_invalid_offset=True
    )
    assert total_lag_from_offsets(parts, latest, {}) == (1001, 1001)
    assert total_lag_from_offsets(parts, earliest, {}) == (2000, 6000), "capped at 2 x 1000"
    assert total_lag_from_offsets(parts, zero, {}) == (1000, 1000)


def test_keda_exclude_persistent_lag() -> None:
    """A commit that did not move since the last read counts 0 for scaling, not for activity."""
    trigger = KafkaTrigger(lag_threshold=1000, exclude_persistent_lag=True)
    previous: dict[int, int] = {}
    first = [PartitionOffsets(900, 100), PartitionOffsets(900, 100)]
    assert total_lag_from_offsets(first, trigger, previous) == (1600, 1600)
    stuck = [PartitionOffsets(950, 100), PartitionOffsets(950, 300)]
    assert total_lag_from_offsets(stuck, trigger, previous) == (650, 1500)


def test_fresh_group_with_latest_reset_looks_idle_to_keda() -> None:
    """No commit yet and offsetResetPolicy latest: 1 per partition, so KEDA does not scale."""
    c = chart.autoscaling()
    params = GroupParams(partitions=4, per_replica_rps=100)
    hpa = HpaSpec(1, 4, 1000, behavior=Behavior(c.scale_up, c.scale_down))
    first: dict[bool, int] = {}
    for fresh in (True, False):
        trigger = KafkaTrigger(lag_threshold=1000, offset_reset_policy="latest")
        scaler = KedaAutoscaler(ScaledObjectSpec(1, 4), trigger, hpa)
        runs = simulate(
            step(0, 0, 0, None, 30),
            params,
            scaler,
            initial_replicas=1,
            initial_lag=40_000,
            fresh_group=fresh,
        )
        first[fresh] = runs[0].desired
    assert first == {True: 1, False: 3}
