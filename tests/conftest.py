"""Shared by every tier."""

import pytest

# The contract suites live in tests/support: show their failed asserts' values too.
pytest.register_assert_rewrite("tests.support")
