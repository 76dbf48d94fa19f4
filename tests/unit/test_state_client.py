"""state.client.connect: connection problems become rill errors naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigError, StateError
from service.state.client import connect


def test_a_malformed_url_is_a_config_error_naming_the_setting() -> None:
    """A URL without a Redis scheme is a ConfigError naming RILL_REDIS_URL."""
    with pytest.raises(ConfigError, match="RILL_REDIS_URL"):
        connect("http://127.0.0.1:6379/0")


def test_a_redis_that_does_not_answer_is_a_state_error(tmp_path: Path) -> None:
    """No server behind the URL (a unix socket that is not there): StateError, from the cause."""
    with pytest.raises(StateError, match="does not answer") as raised:
        connect(f"unix://{tmp_path}/absent.sock", timeout_s=0.5)
    assert raised.value.__cause__ is not None
