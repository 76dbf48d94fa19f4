"""Clients of the real Redis for the integration tier, by mode."""

from __future__ import annotations

import pytest

from service.state.client import RedisClient, connect

MODES = ["single", "cluster"]


def real_redis(request: pytest.FixtureRequest) -> RedisClient:
    """A client of the real Redis (`single`) or the real 3-node Redis Cluster (`cluster`).

    Args:
        request: a fixture request parametrized with one of `MODES`.
    """
    if request.param == "cluster":
        return connect(request.getfixturevalue("redis_cluster_url"), cluster=True)
    return connect(request.getfixturevalue("endpoints").redis_url)
