"""The progress bar stays on screen when a call ends, showing the final count (and what came from the cache or
failed), for ``generate``, ``generate_many`` and ``iter_generate``, sync and async."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from _helpers import screen
from fw_rollouts import AsyncFireworks, Fireworks
from fw_rollouts.testing import Fault, FireworksSimulator


def options(sim: FireworksSimulator, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "base_url": sim.base_url, "api_key": sim.api_key, "cache_dir": str(tmp_path / "cache"), "max_tokens": 4,
        "max_retries": 0, **overrides,
    }  # fmt: skip


def final_bar(capsys: pytest.CaptureFixture[str]) -> str:
    """The last line a call's bar left on the (captured) terminal."""
    shown = screen(capsys.readouterr().err)
    assert shown and shown[-1].startswith("Generating"), shown
    return shown[-1]


def test_sync_calls_end_showing_the_final_count(
    sim: FireworksSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Fireworks("qwen-15b", **options(sim, tmp_path)) as client:
        client.generate("What is 2+2?", n_samples=5)
        assert "| 5/5 [" in final_bar(capsys)
        client.generate_many(["a", "b"], 3)
        assert "| 6/6 [" in final_bar(capsys)
        assert len(list(client.iter_generate(["c", "d"], 2))) == 4
        assert "| 4/4 [" in final_bar(capsys)
        client.generate("What is 2+2?", n_samples=8)  # five from the cache, three fetched
        last = final_bar(capsys)
        assert "| 8/8 [" in last and "5 cached" in last


def test_async_calls_end_showing_the_final_count(
    sim: FireworksSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def main() -> list[str]:
        async with AsyncFireworks("qwen-15b", **options(sim, tmp_path)) as client:
            await client.generate("What is 2+2?", n_samples=5)
            first = final_bar(capsys)
            await client.generate_many(["a", "b", "c"], 2)
            return [first, final_bar(capsys)]

    first, many = asyncio.run(main())
    assert "| 5/5 [" in first and "| 6/6 [" in many


def test_a_call_with_failed_samples_ends_showing_how_far_it_got(
    sim: FireworksSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.faults.push(Fault.status(500), Fault.status(500))
    with Fireworks("qwen-15b", **options(sim, tmp_path, max_concurrency=1)) as client:
        client.generate_many(["a", "b"], 2, on_error="return")
    last = final_bar(capsys)
    assert "| 2/4 [" in last and "2 failed" in last
