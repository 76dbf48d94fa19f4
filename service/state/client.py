"""Building the Redis client from settings: the one place connection errors are mapped."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

from service.errors import ConfigError, FatalError, RillError, StateError

RedisClient = redis.Redis | RedisCluster
# What a client raises when Redis fails; a cluster client that finds no node raises
# RedisClusterException, which is not a RedisError.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)
# Error replies that mean "not now": full (noeviction), a replica, a slot moving, a
# cluster or primary down, a server busy or loading. Any other error reply is a script
# (or command) failing on its inputs: retrying it cannot help, and a script stopped
# half-way has written its first half, so a retry would apply that part twice.
_TRANSIENT_REPLIES = (
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
    AskError,
    ClusterError,
    NoScriptError,
)
_TRANSIENT_PREFIXES = ("BUSY", "LOADING", "MASTERDOWN", "MISCONF", "NOREPLICAS", "OOM")


def mapped(exc: Exception, what: str) -> RillError:
    """A client error as rill's: `FatalError` for an error reply of a script or command
    that failed on its inputs (with Redis's message), `StateError` (transient) for the rest.

    Args:
        exc: what the client raised (one of `REDIS_ERRORS`).
        what: the operation, for the message.
    """
    if isinstance(exc, ResponseError) and not isinstance(exc, _TRANSIENT_REPLIES):
        message = str(exc)
        if not message.upper().startswith(_TRANSIENT_PREFIXES):
            return FatalError(f"{what}: Redis refused it for good (a script error): {message}")
    return StateError(f"{what} failed: {exc}")


def connect(
    url: str,
    *,
    cluster: bool = False,
    timeout_s: float = 5.0,
    password: str | None = None,
    ssl_ca_certs: str | None = None,
) -> RedisClient:
    """A client of the Redis (or Redis Cluster) at `url`, checked to answer.

    Args:
        url: redis://, rediss:// or unix:// URL (RILL_REDIS_URL).
        cluster: connect to a Redis Cluster (RILL_REDIS_CLUSTER).
        timeout_s: connect and socket timeout.
        password: RILL_REDIS_PASSWORD, when not in the URL.
        ssl_ca_certs: CA bundle for rediss://.

    Raises:
        ConfigError: the URL is malformed or the credentials are refused.
        StateError: Redis does not answer (transient: the caller may retry).
    """
    opts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if password is not None:
        opts["password"] = password
    if ssl_ca_certs is not None:
        opts["ssl_ca_certs"] = ssl_ca_certs
    client: RedisClient | None = None
    try:
        if cluster:
            client = RedisCluster.from_url(url, **opts)
        else:
            client = redis.Redis.from_url(url, **opts)
        client.ping()
    except ValueError as exc:
        raise ConfigError(f"RILL_REDIS_URL: {exc}") from exc
    except redis.AuthenticationError as exc:
        _close(client)
        raise ConfigError(
            "Redis refused the credentials: check RILL_REDIS_PASSWORD / RILL_REDIS_URL"
        ) from exc
    except REDIS_ERRORS as exc:
        _close(client)
        raise StateError(f"Redis does not answer: {exc}") from exc
    return client


def _close(client: RedisClient | None) -> None:
    if client is not None:
        client.close()
