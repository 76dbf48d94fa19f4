"""BatchHistogram exports exactly what prometheus-client's Histogram would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from service.observability.histogram import BatchHistogram

BUCKETS = (0.01, 0.05, 0.1, 1, 5, 300)


def _samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [
        line for line in text.splitlines() if not line.startswith("#") and "_created" not in line
    ]


@given(
    st.lists(
        st.lists(
            st.one_of(st.sampled_from(BUCKETS), st.floats(min_value=0, max_value=1e4)),
            max_size=30,
        ),
        max_size=5,
    )
)
def test_batch_histogram_matches_prometheus_histogram(batches: list[list[float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch_hist = BatchHistogram("lat_seconds", "latency", BUCKETS, ours)
    hist = Histogram("lat_seconds", "latency", buckets=BUCKETS, registry=theirs)
    for batch in batches:
        batch_hist.observe_many(batch)
        for value in batch:
            hist.observe(value)
    assert _samples(ours) == _samples(theirs)
