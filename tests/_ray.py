"""A real local Ray cluster for the tests: ``ray.init`` with this machine's CPUs, once per test session.

CI sets ``FW_ROLLOUTS_REQUIRE_RAY=1``, so there a Ray that cannot be imported or started fails the tests instead
of skipping them. Starting a local cluster takes about 5 s on two cores, so every test module shares one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["ray_cluster"]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """The ``ray`` module, connected to a local cluster started for this test session (shut down at its end)."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        if os.environ.get("FW_ROLLOUTS_REQUIRE_RAY") == "1":
            pytest.fail(f"ray is not installed: {exc}")
        pytest.skip(f"ray is not installed: {exc}")
    started = not ray.is_initialized()
    if started:
        # The workers import fw_rollouts from this tree: the tests run against src/, not an installed copy.
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
        path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(
            num_cpus=os.cpu_count() or 2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
