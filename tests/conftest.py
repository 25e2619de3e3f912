"""Pytest fixtures shared by the test modules: a simulated server per test and a client factory bound to it.

Plain helpers (fixture files, synthetic bodies) live in ``_helpers.py``; a module that needs a server with other
settings (latency, module scope) defines its own fixture under another name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient, client_for
from fw_rollouts import AsyncFireworks
from fw_rollouts.testing import FireworksSimulator


@pytest.fixture
def sim() -> Iterator[FireworksSimulator]:
    """A running simulator with default settings, new for each test."""
    # One server per test: requests a previous test abandoned must not reach this one (5 ms to start).
    with FireworksSimulator() as server:
        yield server


@pytest.fixture
def make_client(sim: FireworksSimulator, tmp_path: Path) -> MakeClient:
    """A factory of clients for this test's ``sim``, caching under ``tmp_path / "cache"``.

    Defaults: model ``qwen-15b``, the simulator's base URL and API key, no progress bar; any keyword
    overrides them. The test closes what it makes (``async with make_client(...) as client``).
    """

    def make(**options: Any) -> AsyncFireworks:
        return client_for(sim, tmp_path, **options)

    return make


@pytest.fixture(params=["http", "openai"])
def transport_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which transport the clients of a test build: the default, or every request through ``AsyncOpenAI.post``
    (``FW_ROLLOUTS_TRANSPORT=openai``, see fw_rollouts._transport.default_transport)."""
    kind: str = request.param
    if kind == "openai":
        monkeypatch.setenv("FW_ROLLOUTS_TRANSPORT", "openai")
    else:
        monkeypatch.delenv("FW_ROLLOUTS_TRANSPORT", raising=False)
    return kind


# A real redis-server per test (tests/_redis.py) and a local Ray cluster per session (tests/_ray.py).
from _ray import ray_cluster  # noqa: E402, F401
from _redis import redis_server  # noqa: E402, F401
