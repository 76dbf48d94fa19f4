"""Shared by every tier."""

import pytest

# The contract suites live in tests/support: show their failed asserts' values too.
pytest.register_assert_rewrite("tests.support")

# The k8s tier shares one control plane (one external-metrics APIService, one set of
# nodes): its files run on one xdist worker, one after another.
_K8S = "tests/k8s/"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group tests for `pytest -n N --dist loadgroup` (`make test`'s integration tier).

    A file's tests share module fixtures and run on one worker, as with `loadfile`;
    the k8s files are one group, scheduled first because they are the longest.
    Without xdist the marker does nothing but the order holds.
    """
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = "k8s" if path.startswith(_K8S) else path
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: not item.nodeid.startswith(_K8S))
