"""Studies over loopback HTTP: generate_many and iter_generate (issue 9).

Order and item indexes, interleaving across items, one progress bar, per-item failures, early
break and cancel, resume after an interruption, flat memory while streaming, and the sync twins.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fw_rollouts.testing
from _helpers import MakeClient
from fw_rollouts import (
    AuthenticationError,
    BadRequestError,
    Fireworks,
    FwRollouts,
    StudyItem,
    ValidationError,
)
from fw_rollouts.testing import Fault, FireworksSimulator

pytestmark = pytest.mark.anyio

SRC = Path(fw_rollouts.testing.__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _completions(sim: FireworksSimulator) -> list[dict[str, Any]]:
    return [r.body for r in sim.requests if r.path.endswith("/completions") and r.body is not None]


async def test_results_come_back_one_per_item_in_order(make_client: MakeClient, sim: FireworksSimulator) -> None:
    items: list[Any] = [
        "first",
        [{"role": "user", "content": "second"}],
        {"prompt": "third", "n_samples": 3, "temperature": 0.1, "seed": 7},
        StudyItem("fourth", n_samples=1, options={"max_tokens": 3}),
        {"messages": [{"role": "user", "content": "fifth"}]},
    ]
    async with make_client(max_tokens=8) as client:
        results = await client.generate_many(items, n_samples=2)
    assert [len(r) for r in results] == [2, 2, 3, 1, 2]
    assert [[s.seed for s in r] for r in results] == [[0, 1], [0, 1], [7, 8, 9], [0], [0, 1]]
    for index, rollouts in enumerate(results):
        assert isinstance(rollouts, FwRollouts) and rollouts.complete and rollouts.errors == {}
        assert {s.item for s in rollouts} == {index}
    assert results[0].prompt == "first" and results[1].prompt == [{"role": "user", "content": "second"}]
    assert "second" in results[1].prompt_text and "fifth" in results[4].prompt_text
    bodies = _completions(sim)
    assert len(bodies) == 10
    third = [b for b in bodies if "third" in b["prompt"]]
    assert {b["temperature"] for b in third} == {0.1} and sorted(b["seed"] for b in third) == [7, 8, 9]
    assert {b["max_tokens"] for b in bodies if "fourth" in b["prompt"]} == {3}
    assert {b["temperature"] for b in bodies if "first" in b["prompt"]} == {0.7}


async def test_requests_interleave_across_items(make_client: MakeClient, sim: FireworksSimulator) -> None:
    prompts = [f"prompt {i}" for i in range(5)]
    async with make_client(max_tokens=2, max_concurrency=1) as client:
        await client.generate_many(prompts, n_samples=3)
    order = [next(i for i, p in enumerate(prompts) if p in b["prompt"]) for b in _completions(sim)]
    # One worker: round robin over the items taken in (a few times the concurrency in requests at a
    # time, so a study of a million prompts is not all queued at once), never one item after another.
    assert order[:3] == [0, 1, 2] and sorted(order) == sorted([0, 1, 2, 3, 4] * 3)
    assert all(order[i] != order[i + 1] for i in range(len(order) - 1))


async def test_a_study_is_checked_whole_before_any_request(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async with make_client() as client:
        with pytest.raises(ValidationError, match=r"items\[2\]") as info:
            await client.generate_many(["a", "b", {"prompt": "c", "n_samples": 0}])
        assert info.value.argument == "items[2]" or "items[2]" in str(info.value)
        with pytest.raises(ValidationError, match=r"items\[1\].*temperatur"):
            await client.generate_many(["a", {"prompt": "b", "temperatur": 1.0}])
        with pytest.raises(ValidationError, match=r"items\[0\].*chat message"):
            await client.generate_many([{"role": "user", "content": "hi"}])
        with pytest.raises(ValidationError, match="items"):
            await client.generate_many([])
        with pytest.raises(ValidationError, match="items"):
            await client.generate_many("one string is not a list of items")
        with pytest.raises(ValidationError, match="on_error"):
            await client.generate_many(["a"], on_error="ignore")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match=r"items\[1\].*api_key"):
            await client.generate_many(["a", {"prompt": "b", "api_key": "x"}])
    assert _completions(sim) == []


async def test_a_failed_item_does_not_lose_the_others(make_client: MakeClient, tmp_path: Path) -> None:
    with FireworksSimulator(context_length=40) as small:
        long_prompt = "word " * 200
        # Two workers: the long prompt's first request fails while the others' go on; its other
        # requests are then never sent.
        options = {"base_url": small.base_url, "api_key": small.api_key, "max_tokens": 4, "max_concurrency": 2}
        async with make_client(**options) as client:
            with pytest.raises(BadRequestError) as info:
                await client.generate_many(["short one", long_prompt, "short two"], n_samples=4)
            error = info.value
            assert error.results is not None and [len(r) for r in error.results] == [4, 0, 4]
            assert "item 1" in error.message and "1 of 3 items failed" in error.message
            assert error.results[1].errors and not error.results[1].complete
            requests_after_first = len(small.requests)
            # The failed item stopped after its first request: the others of it were never sent.
            assert sum(1 for r in small.requests if r.status == 400) == 1

            results = await client.generate_many(
                ["short one", long_prompt, "short two"], n_samples=4, on_error="return"
            )
            assert [len(r) for r in results] == [4, 0, 4]
            assert [r.cached for r in results[0]] == [True] * 4
            # Only the failed item was asked again: its first request, and the one the second worker had
            # already sent when that failed.
            assert requests_after_first < len(small.requests) <= requests_after_first + 2
            assert isinstance(results[1].errors[0], BadRequestError)


async def test_a_bad_key_ends_the_whole_study_at_once(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async with make_client(api_key="not-the-key-at-all", max_concurrency=2) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate_many([f"p{i}" for i in range(50)], n_samples=10)
    assert info.value.results is not None and len(info.value.results) == 50
    assert len(sim.requests) <= 2  # not 500 requests answered 401


async def test_one_progress_bar_ends_showing_the_final_count(
    make_client: MakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    async with make_client(max_tokens=2, progress_bar=True) as client:
        await client.generate_many([f"p{i}" for i in range(20)], n_samples=3)
        first = capsys.readouterr().err
        await client.generate_many([f"p{i}" for i in range(20)] + ["new"], n_samples=3)
        second = capsys.readouterr().err
    assert first.count("60/60") >= 1 and "/3 " not in first  # one bar over the study, none per item
    assert len({line.split("|")[0] for line in first.replace("\r", "\n").splitlines() if "Generating" in line}) >= 1
    assert "63/63" in second and "60 cached" in second


async def test_iter_generate_yields_each_sample_with_its_item_and_seed(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    async with make_client(max_tokens=4) as client:
        await client.generate("b", 2)  # two of item 1's samples are already cached
        seen = [
            (r.item, r.seed, r.cached) async for r in client.iter_generate(["a", "b", {"prompt": "c", "seed": 5}], 3)
        ]
        single = [(r.item, r.seed) async for r in client.iter_generate("just one", n_samples=2)]
    assert sorted((i, s) for i, s, _ in seen) == [(0, s) for s in (0, 1, 2)] + [(1, s) for s in (0, 1, 2)] + [
        (2, s) for s in (5, 6, 7)
    ]
    assert [(i, s) for i, s, c in seen if c] == [(1, 0), (1, 1)]
    assert sorted(single) == [(0, 0), (0, 1)]


async def test_breaking_out_stops_in_flight_requests_and_keeps_what_finished(
    make_client: MakeClient, tmp_path: Path
) -> None:
    with FireworksSimulator(latency=0.05) as slow:
        options = {"base_url": slow.base_url, "api_key": slow.api_key, "max_tokens": 2, "max_concurrency": 8}
        async with make_client(**options) as client:
            got = 0
            async with client.iter_generate("long study", n_samples=400) as stream:
                async for _ in stream:
                    got += 1
                    if got == 20:
                        break
            await asyncio.sleep(0.2)
            sent = len(slow.requests)
            assert sent < 60  # 20 yielded, at most a window more in flight: not 400
            await asyncio.sleep(0.3)
            assert len(slow.requests) == sent  # nothing more goes out after the break
            results = await client.generate("long study", n_samples=400)
            cached = sum(r.cached for r in results)
            assert cached >= 20  # what finished was kept
            # The re-run asked only for what was missing.
            assert len(slow.requests) == sent + 400 - cached


async def test_cancelling_a_consumer_stops_the_study(make_client: MakeClient) -> None:
    with FireworksSimulator(latency=0.05) as slow:
        options = {"base_url": slow.base_url, "api_key": slow.api_key, "max_tokens": 2, "max_concurrency": 4}
        async with make_client(**options) as client:

            async def consume() -> None:
                async with client.iter_generate("cancelled", n_samples=500) as stream:
                    async for _ in stream:
                        pass

            task = asyncio.ensure_future(consume())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.1)  # the simulator records a request the client left when it notices
            sent = len(slow.requests)
            await asyncio.sleep(0.3)
            assert len(slow.requests) == sent < 100


async def test_iter_generate_raises_after_the_last_sample_when_some_failed(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    async with make_client(max_tokens=2, max_retries=0, max_concurrency=1) as client:
        sim.faults.push(Fault.ok(), Fault.status(500))
        seen: list[int] = []
        with pytest.raises(Exception) as info:
            async for response in client.iter_generate("some fail", n_samples=4):
                seen.append(response.seed or 0)
    assert len(seen) == 3 and "1 sample failed" in str(info.value)


@pytest.fixture
def server_process() -> Iterator[str]:
    """A simulator in its own process (so that its memory is not the test's), as its base URL."""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fw_rollouts.testing", "--port", "0"], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        yield line.split(" listening on ")[1].split(" ")[0]
    finally:
        proc.terminate()
        proc.wait(10)


async def test_streaming_holds_nothing(make_client: MakeClient, server_process: str) -> None:
    options = {"base_url": server_process, "api_key": "sim-key", "use_cache": False, "max_concurrency": 32}
    async with make_client(max_tokens=1, logprobs=None, **options) as client:
        async for _ in client.iter_generate("warm-up", n_samples=100):
            pass
        tracemalloc.start()
        count = 0
        at_1000 = 0
        async for _ in client.iter_generate("flat", n_samples=3500):
            count += 1
            if count in (1000, 3500):
                gc.collect()
                current, _ = tracemalloc.get_traced_memory()
                if count == 1000:
                    at_1000 = current
        tracemalloc.stop()
    assert count == 3500
    # Holding 2,500 more samples would take megabytes (over 600 bytes each, without logprobs);
    # streaming them takes nothing more.
    assert current - at_1000 < 200_000, (at_1000, current)


async def test_resume_after_an_interruption_requests_only_what_is_missing(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    prompts = [f"resume {i}" for i in range(10)]
    async with make_client(max_tokens=2, max_concurrency=4) as client:
        task = asyncio.ensure_future(client.generate_many(prompts, n_samples=10))
        while len(sim.requests) < 40:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        before = len(sim.requests)
        results = await client.generate_many(prompts, n_samples=10)
    cached = sum(r.cached for rollouts in results for r in rollouts)
    assert 30 <= cached < 100
    assert len(sim.requests) - before == 100 - cached
    assert Counter(b["seed"] for b in _completions(sim)[before:]) == Counter(
        r.seed for rollouts in results for r in rollouts if not r.cached
    )


def test_sync_twins(sim: FireworksSimulator, tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "base_url": sim.base_url,
        "api_key": sim.api_key,
        "cache_dir": str(tmp_path / "cache"),
        "progress_bar": False,
        "max_tokens": 2,
    }
    with Fireworks("qwen-15b", **options) as client:
        results = client.generate_many(["x", {"prompt": "y", "n_samples": 2}], n_samples=3)
        assert [len(r) for r in results] == [3, 2]
        streamed = sorted((r.item, r.seed) for r in client.iter_generate(["x", "z"], 2))
        assert streamed == [(0, 0), (0, 1), (1, 0), (1, 1)]
        before = len(sim.requests)
        for count, _ in enumerate(client.iter_generate("broken off", 300), start=1):
            if count == 5:
                break
        sent = len(sim.requests) - before
        # At most what was yielded, what waits in the stream's queue (2 x max_concurrency) and what is in flight
        # (max_concurrency): the other 300 - 197 are never asked for.
        assert sent <= 5 + 2 * 64 + 64
        assert client.generate("x", 1)[0].cached
