"""Studies, continued (issue 9): the study file (output=), resume from it, session affinity, usage, cost and the
dry-run estimate, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient, docs_block
from fw_rollouts import (
    Fireworks,
    FwRollouts,
    Prices,
    PriceTable,
    UsageTotals,
    ValidationError,
    load_study,
)
from fw_rollouts.testing import FireworksSimulator

PROMPTS = [f"Study prompt {i}" for i in range(4)]


def _completions(sim: FireworksSimulator) -> list[Any]:
    return [r for r in sim.requests if r.path.endswith("/completions") and r.body is not None]


def _same(a: list[FwRollouts], b: list[FwRollouts]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert [r.seed for r in x] == [r.seed for r in y]
        for r, s in zip(x, y, strict=True):
            d, e = r.to_dict(), s.to_dict()
            d.pop("cached"), e.pop("cached")
            assert d == e


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_output_writes_every_sample_and_loads_back_exactly(
    make_client: MakeClient, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"study{suffix}"

    async def main() -> list[FwRollouts]:
        async with make_client(max_tokens=6) as client:
            return await client.generate_many(PROMPTS, n_samples=3, output=path)

    results = asyncio.run(main())
    back = load_study(path)
    _same(results, back)
    assert [r.prompt for r in back] == PROMPTS and all(r.complete for r in back)


def test_an_interrupted_study_resumes_from_its_file_without_the_cache(
    make_client: MakeClient, sim: FireworksSimulator, tmp_path: Path
) -> None:
    path = tmp_path / "resume.jsonl"

    async def main() -> tuple[int, int, list[FwRollouts]]:
        async with make_client(max_tokens=4, use_cache=False, max_concurrency=4) as client:
            task = asyncio.ensure_future(client.generate_many(PROMPTS, n_samples=25, output=path))
            while len(_completions(sim)) < 40:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            on_file = sum(1 for _ in path.read_text().splitlines()) - 1  # every line whole, minus the header
            before = len(_completions(sim))
            results = await client.generate_many(PROMPTS, n_samples=25, output=path)
            return on_file, len(_completions(sim)) - before, results

    on_file, sent, results = asyncio.run(main())
    assert 0 < on_file < 100
    assert sent == 100 - on_file  # only what the file did not hold
    assert all(len(r) == 25 for r in results)
    assert sum(s.cached for r in results for s in r) == on_file
    _same(results, load_study(path))
    lines = path.read_text().splitlines()
    assert (
        len(lines) == 1 + 100
        and len({(json.loads(x)["item"], json.loads(x)["response"]["seed"]) for x in lines[1:]}) == 100
    )


def test_a_file_of_another_study_is_refused_before_any_request(
    make_client: MakeClient, sim: FireworksSimulator, tmp_path: Path
) -> None:
    path = tmp_path / "one.jsonl"

    async def main() -> None:
        async with make_client(max_tokens=4) as client:
            await client.generate_many(PROMPTS, n_samples=2, output=path)
            sent = len(_completions(sim))
            with pytest.raises(ValidationError, match="output"):
                await client.generate_many(PROMPTS, n_samples=3, output=path)
            with pytest.raises(ValidationError, match=r"output|format"):
                await client.generate_many(PROMPTS, output=tmp_path / "study.csv")
            assert len(_completions(sim)) == sent

    asyncio.run(main())


def test_session_affinity_can_be_turned_off(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async def main() -> None:
        async with make_client(max_tokens=4) as client:
            await client.generate("epsilon", 3, session_affinity=False)

    asyncio.run(main())
    assert len(_completions(sim)) == 3
    assert all("x-session-affinity" not in r.headers for r in _completions(sim))


def test_session_affinity_header_is_sent(make_client: MakeClient, sim: FireworksSimulator) -> None:
    items: list[Any] = [
        "alpha",
        "beta",
        {"prompt": "gamma", "affinity": "trace-0"},
        {"prompt": "delta", "affinity": "trace-0"},
    ]

    async def main() -> None:
        async with make_client(max_tokens=4) as client:
            await client.generate_many(items, n_samples=3)

    asyncio.run(main())
    keys: dict[str, set[str]] = {}
    for r in _completions(sim):
        word = next(w for w in ("alpha", "beta", "gamma", "delta") if w in r.body["prompt"])
        keys.setdefault(word, set()).add(r.headers.get("x-session-affinity", ""))
    assert all(len(v) == 1 and "" not in v for v in keys.values())  # every sample of a prompt, one key
    assert keys["alpha"] != keys["beta"] and keys["gamma"] == keys["delta"] == {"trace-0"}
    assert "alpha" not in next(iter(keys["alpha"]))  # a hash, not the prompt's text


def test_usage_per_item_and_running_totals_and_cost(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async def main() -> tuple[list[FwRollouts], UsageTotals, UsageTotals]:
        async with make_client(max_tokens=5, samples_per_request=2) as client:
            results = await client.generate_many(PROMPTS[:2], n_samples=4)
            first = client.usage
            await client.generate_many(PROMPTS[:2], n_samples=4)  # all from the cache
            return results, first, client.usage

    results, first, after = asyncio.run(main())
    bodies = [r.body for r in _completions(sim)]
    assert first.requests == len(bodies) == 4 and first.samples == 8 and first.cached_samples == 0
    assert first.generated_tokens == sum(s.usage.completion_tokens for r in results for s in r)
    # The prompt once per request (two choices each), as the server reported it.
    assert first.prompt_tokens == sum(r[0].usage.prompt_tokens + r[2].usage.prompt_tokens for r in results)
    assert after.cached_samples == 8 and after.samples == 8 and after.requests == 4
    item = results[0].usage
    assert item.requests == 2 and item.samples == 4 and item.generated_tokens > 0
    prices = Prices(prompt=1.0, generated=2.0)
    expected = (first.prompt_tokens * 1.0 + first.generated_tokens * 2.0) / 1e6
    assert results[0].cost(prices) + results[1].cost(prices) == pytest.approx(expected)
    table = PriceTable({"deepseek-r1-distill-qwen-1p5b": prices})
    assert results[0].cost(table) == pytest.approx(results[0].cost(prices))


def test_the_estimate_is_made_before_anything_is_sent(sim: FireworksSimulator, tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "base_url": sim.base_url,
        "api_key": sim.api_key,
        "cache_dir": str(tmp_path / "cache"),
        "progress_bar": False,
        "max_tokens": 10,
        "requests_per_minute": 60,
        "generated_tokens_per_minute": 100,
    }
    with Fireworks("qwen-15b", **options) as client:
        client.generate(PROMPTS[0], 2)
        sim.reset()
        guess = client.estimate(PROMPTS, n_samples=5, prices=Prices(prompt=0.5, generated=1.5))
        assert _completions(sim) == []
        assert guess.cached_samples == 2 and guess.samples == 18 and guess.requests == 18
        assert guess.generated_tokens == 18 * 10
        assert guess.binding == "generated_tokens_per_minute" and guess.minutes == pytest.approx(180 / 100)
        assert guess.dollars is not None and guess.dollars == pytest.approx(
            (guess.prompt_tokens * 0.5 + guess.generated_tokens * 1.5) / 1e6
        )


def test_the_worked_example_in_docs_runs_as_written_and_resumes(tmp_path: Path) -> None:
    """docs/studies.md's example, run twice in a fresh directory: the second run sends nothing."""
    import subprocess
    import sys

    script = tmp_path / "example.py"
    script.write_text(docs_block("studies.md"), encoding="utf-8")
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    assert outputs[0].count("reach 391") == 4 and "requests=80" in outputs[0]
    assert "requests=0" in outputs[1] and "cached_samples=80" in outputs[1]
    assert (tmp_path / "trace-0.jsonl").exists()
