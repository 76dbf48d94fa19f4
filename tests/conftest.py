"""Shared by every tier."""

import pytest

# The contract suites live in tests/support: show their failed asserts' values too.
pytest.register_assert_rewrite("tests.support")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group tests by file for `pytest -n N --dist loadgroup` (`make test`'s integration
    tier): a file's tests share module fixtures and run on one worker, as with
    `loadfile`. Without xdist the marker does nothing. (The k8s tier shares one control
    plane and runs without -n.)"""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
