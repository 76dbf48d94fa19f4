"""The consumer-group model and the time loop of `rill plan`, by cases and by properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import ConfigError
from service.planner.hpa import HpaSpec
from service.planner.keda import KafkaTrigger, ScaledObjectSpec
from service.planner.profile import Profile, diurnal, parse_csv, step
from service.planner.report import summarize
from service.planner.simulate import HpaAutoscaler, KedaAutoscaler, simulate
from service.planner.system import ConsumerGroup, GroupParams


def test_replicas_beyond_partitions_add_no_capacity() -> None:
    """8 ready replicas on 4 partitions consume like 4."""
    group = ConsumerGroup(GroupParams(4, 100.0), replicas=8)
    assert group.capacity(0.0) == 400.0


def test_uneven_partition_shares_limit_the_drain() -> None:
    """12 partitions on 5 consumers: the 3-partition consumers fall behind at 4.5 x rate."""
    group = ConsumerGroup(GroupParams(12, 100.0, rebalance_pause_s=0.0), replicas=5)
    for t in range(60):
        group.advance(float(t), 1.0, 450.0)  # 450/s needs 4.5 replicas' worth, 5 are ready
    # Consumers 0 and 1 hold 3 partitions each (112.5/s > 100/s); the others keep up.
    assert group.total_lag() == pytest.approx(2 * 12.5 * 60)


def test_lag_grows_by_input_minus_capacity() -> None:
    """One replica at 100/s under 300/s input: lag grows 200 per second."""
    group = ConsumerGroup(GroupParams(4, 100.0), replicas=1)
    for t in range(10):
        group.advance(float(t), 1.0, 300.0)
    assert group.total_lag() == pytest.approx(2000.0)
    # The oldest waiting record came 10 s x 75/s ago less 100 consumed from its partition.
    assert group.lag_seconds(10.0) == pytest.approx(500 / 75)


def test_new_pods_serve_after_the_start_delay_and_a_rebalance_pause() -> None:
    """A pod created at 0 with a 20 s start is Ready at 20; the group pauses 3 s then."""
    group = ConsumerGroup(GroupParams(4, 100.0, 20.0, 3.0), replicas=1)
    group.scale_to(2, 0.0)
    assert group.ready_replicas(19.0) == 1
    assert group.ready_replicas(20.0) == 2
    assert group.capacity(20.0) == 0.0
    assert group.capacity(23.0) == 200.0


def test_scale_down_removes_starting_pods_first() -> None:
    """Scale-down deletes a pod still starting before a Ready one."""
    group = ConsumerGroup(GroupParams(4, 100.0, 20.0), replicas=2)
    group.scale_to(3, 0.0)
    group.scale_to(2, 5.0)
    assert group.ready_replicas(5.0) == 2


def test_step_profile_holds_and_returns() -> None:
    """A step is base before --start, peak until --end, base after."""
    profile = step(100.0, 900.0, 60.0, 120.0, 300.0)
    assert [profile.rate_at(t) for t in (0, 59.9, 60, 119, 120, 299)] == [
        100.0,
        100.0,
        900.0,
        900.0,
        100.0,
        100.0,
    ]


def test_diurnal_profile_peaks_at_half_period() -> None:
    """The raised cosine starts at base and reaches peak at half the period."""
    profile = diurnal(100.0, 500.0, 3600.0, 3600.0)
    assert profile.rate_at(0.0) == pytest.approx(100.0)
    assert profile.rate_at(1800.0) == pytest.approx(500.0)


def test_csv_profile_interpolates_linearly() -> None:
    """CSV points join by straight lines; the duration defaults to the last time."""
    profile = parse_csv("t_s,records_per_s\n0,0\n100,1000\n200,1000\n")
    assert profile.rate_at(50.0) == 500.0
    assert profile.duration_s == 200.0


@pytest.mark.parametrize(
    "text",
    ["time,rate\n0,1\n", "t_s,records_per_s\n0,1\n0,2\n", "t_s,records_per_s\n0,x\n"],
)
def test_bad_csv_profiles_are_refused(text: str) -> None:
    """A wrong header, times that do not increase, or a bad number are ConfigErrors."""
    with pytest.raises(ConfigError):
        parse_csv(text)


def test_hpa_scales_up_on_a_step_and_drains_the_lag() -> None:
    """A 3x step: the HPA reaches the replicas the rate needs and the lag returns to zero."""
    profile = step(500.0, 3000.0, 60.0, None, 600.0)
    samples = simulate(
        profile,
        GroupParams(4, 1000.0, 20.0, 3.0),
        HpaAutoscaler(HpaSpec(1, 4, 1000)),
        initial_replicas=1,
        metric_delay_s=15.0,
    )
    summary = summarize(samples, 1.0, 60.0)
    assert summary.peak_replicas == 4
    assert summary.max_lag > 0
    assert samples[300].lag == 0


_profiles = st.builds(
    step,
    base=st.floats(0, 2000),
    peak=st.floats(0, 8000),
    start_s=st.floats(0, 100),
    end_s=st.one_of(st.none(), st.floats(150, 250)),
    duration_s=st.just(300.0),
)


@settings(max_examples=40, deadline=None)
@given(
    profile=_profiles,
    partitions=st.integers(1, 12),
    max_replicas=st.integers(1, 16),
    min_fraction=st.floats(0, 1),
    rps=st.floats(50, 3000),
    start_delay=st.floats(0, 40),
    pause=st.floats(0, 10),
    target=st.integers(1, 5000),
    keda=st.booleans(),
)
def test_replicas_stay_in_bounds_and_lag_never_negative(
    profile: Profile,
    partitions: int,
    max_replicas: int,
    min_fraction: float,
    rps: float,
    start_delay: float,
    pause: float,
    target: int,
    keda: bool,
) -> None:
    """Any profile and settings: min <= replicas <= max, capacity <= partitions, lag >= 0."""
    min_replicas = 1 + round(min_fraction * (max_replicas - 1))
    spec = HpaSpec(min_replicas, max_replicas, target)
    scaler = (
        KedaAutoscaler(
            ScaledObjectSpec(0, max_replicas),
            KafkaTrigger(target, activation_lag_threshold=5),
            spec,
        )
        if keda
        else HpaAutoscaler(spec)
    )
    lowest = 0 if keda else min_replicas
    params = GroupParams(partitions, rps, start_delay, pause)
    for s in simulate(profile, params, scaler, initial_replicas=lowest):
        assert lowest <= s.desired <= max_replicas
        assert s.ready <= s.desired
        assert s.capacity_rps <= min(s.ready, partitions) * rps + 1e-6
        assert s.lag >= 0
        assert s.lag_s >= 0
