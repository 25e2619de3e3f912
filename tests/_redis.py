"""A real ``redis-server`` for the tests: the ``redis_server`` fixture and :func:`require_redis`.

The server itself is :class:`fw_rollouts.testing.RedisServer` (re-exported here). CI installs Debian's
``redis-server`` and sets ``FW_ROLLOUTS_REQUIRE_REDIS=1``, so there a missing server fails the tests that
need one instead of skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fw_rollouts.testing import RedisServer
from fw_rollouts.testing._redis import find_redis_binary

__all__ = ["RedisServer", "redis_server", "require_redis"]


def require_redis() -> str:
    """The redis-server binary, or skip the test (fail under ``FW_ROLLOUTS_REQUIRE_REDIS=1``)."""
    binary = find_redis_binary()
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("FW_ROLLOUTS_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test (about 10 ms to start); the test may stop and restart it."""
    with RedisServer(require_redis()) as server:
        yield server
