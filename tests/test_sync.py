"""The sync facade and the rollouts drop-in, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import inspect
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

import fw_rollouts
from fw_rollouts import AsyncFireworks, ConfigurationError, Fireworks, FireworksClient, FwRollouts
from fw_rollouts.testing import FireworksSimulator


def make(sim: FireworksSimulator, tmp_path: Path, **options: Any) -> Fireworks:
    options.setdefault("model", "qwen-15b")
    options.setdefault("max_tokens", 16)
    options.setdefault("progress_bar", False)
    return Fireworks(base_url=sim.base_url, api_key=sim.api_key, cache_dir=str(tmp_path / "cache"), **options)


def completions(sim: FireworksSimulator) -> int:
    return sum(1 for r in sim.requests if r.path.endswith("/completions"))


def test_sync_generate_in_a_plain_script(sim: FireworksSimulator, tmp_path: Path) -> None:
    with make(sim, tmp_path, logprobs=5, echo=True) as client:
        rollouts = client.generate("What is 2+2?", n_samples=5)
        assert isinstance(rollouts, FwRollouts) and len(rollouts) == 5
        for response in rollouts:
            gen = response.get_generation_logprobs()
            prompt = response.get_prompt_logprobs()
            assert gen is not None and prompt is not None
            assert response.logprobs is not None
            assert response.logprobs.tokens == prompt.tokens + gen.tokens
            assert len(response.logprobs.token_logprobs) == len(response.logprobs.top_logprobs)
        assert all(r.cached for r in client.generate("What is 2+2?", n_samples=5))
    assert completions(sim) == 5


def test_sync_inside_a_running_loop_like_jupyter(sim: FireworksSimulator, tmp_path: Path) -> None:
    client = make(sim, tmp_path, use_cache=False)

    async def notebook_cell() -> FwRollouts:
        # A sync call made while this thread's loop is running, as in a Jupyter cell.
        assert asyncio.get_running_loop().is_running()
        return client.generate("Inside a loop", n_samples=3)

    rollouts = asyncio.run(notebook_cell())
    assert len(rollouts) == 3
    client.close()


def test_sync_from_several_threads(sim: FireworksSimulator, tmp_path: Path) -> None:
    client = make(sim, tmp_path, use_cache=False)
    results: list[int] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append(len(client.generate(f"Thread {i}", n_samples=4)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    assert not errors and results == [4] * 8
    assert completions(sim) == 32


def test_sync_and_async_share_nothing_loop_bound(sim: FireworksSimulator, tmp_path: Path) -> None:
    sync_client = make(sim, tmp_path, use_cache=False)
    async_client = AsyncFireworks(
        model="qwen-15b", base_url=sim.base_url, api_key=sim.api_key, use_cache=False, progress_bar=False,
        max_tokens=8,
    )  # fmt: skip

    async def both() -> tuple[int, int]:
        a = await async_client.generate("Async side", n_samples=2)
        s = sync_client.generate("Sync side", n_samples=2)
        await async_client.aclose()
        return len(a), len(s)

    assert asyncio.run(both()) == (2, 2)
    sync_client.close()


def test_every_async_method_has_a_sync_twin() -> None:
    async_methods = {
        name
        for name, member in inspect.getmembers(AsyncFireworks)
        if inspect.iscoroutinefunction(member) and (not name.startswith("_") or name.startswith("__"))
    }
    assert async_methods >= {"generate", "aclose"}
    twins = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}
    for name in async_methods:
        assert hasattr(Fireworks, twins.get(name, name)), name
    assert inspect.signature(Fireworks.__init__) == inspect.signature(AsyncFireworks.__init__)
    a = inspect.signature(AsyncFireworks.generate)
    s = inspect.signature(Fireworks.generate)
    assert list(a.parameters) == list(s.parameters)


def test_public_api_is_exported_and_documented() -> None:
    assert fw_rollouts.__all__ == sorted(fw_rollouts.__all__, key=lambda n: (not n.isupper(), n))
    for name in fw_rollouts.__all__:
        obj = getattr(fw_rollouts, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name


def test_fireworks_client_is_a_rollouts_drop_in(sim: FireworksSimulator, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = FireworksClient(
            model="qwen-15b",
            temperature=0.7,
            top_p=0.95,
            max_tokens=16,
            top_k=None,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            provider={"order": ["fireworks"]},
            reasoning={"max_tokens": 100},
            include_reasoning=True,
            api_key=sim.api_key,
            max_retries=3,
            timeout=30,
            verbose=False,
            use_cache="sql",
            cache_dir=str(tmp_path / "rollouts"),
            requests_per_minute=None,
            progress_bar=False,
            base_url=sim.base_url,
            min_p=0.05,
        )
    messages = [str(w.message) for w in caught]
    assert any("provider" in m for m in messages)
    assert any("reasoning" in m for m in messages)

    rollouts = client.generate("What is 2+2?", n_samples=3)
    assert len(rollouts) == 3 and rollouts.logprobs_enabled and rollouts.echo_enabled
    assert rollouts.get_contents() == [r.content for r in rollouts]

    async def agen() -> FwRollouts:
        return await client.agenerate("What is 2+2?", n_samples=4, temperature=None, seed=None)

    more = asyncio.run(agen())
    assert [r.cached for r in more] == [True, True, True, False]
    bodies = [r.body for r in sim.requests if r.path.endswith("/completions") and r.body is not None]
    assert all(b["min_p"] == 0.05 and b["temperature"] == 0.7 for b in bodies)
    assert "top_k" not in bodies[0]
    client.close()

    with pytest.raises(ConfigurationError, match="top_a"):
        FireworksClient(model="qwen-15b", api_key="k", top_a=0.1)
    with pytest.raises(ConfigurationError, match="use_cache"):
        FireworksClient(model="qwen-15b", api_key="k", use_cache="redis")


def test_fireworks_client_defaults_follow_the_peer_variant(tmp_path: Path) -> None:
    client = FireworksClient(model="gpt-oss-20b", api_key="k", cache_dir=str(tmp_path), reasoning={"effort": "low"})
    settings = client._client.settings
    assert (settings.top_k, settings.logprobs, settings.echo, settings.max_retries) == (40, 5, True, 100)
    assert settings.chat_template_kwargs == {"reasoning_effort": "low"}
    assert repr(client) == "FireworksClient(model='gpt-oss-20b', temperature=0.7)"
