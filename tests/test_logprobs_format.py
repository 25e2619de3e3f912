"""``logprobs_format="content"``: the OpenAI-style request (``logprobs: true`` + ``top_logprobs``), whose reply
carries Fireworks' ``sampling_logprob`` and token ids; the same tokens and logprobs as the legacy form."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw_rollouts import AsyncFireworks, ValidationError
from fw_rollouts.testing import FireworksSimulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_content_form_keeps_sampling_logprobs_beside_the_logprobs(tmp_path: Path) -> None:
    with FireworksSimulator() as sim:
        async with AsyncFireworks(
            "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, max_tokens=8, temperature=0.7,
            logprobs=3, cache_dir=str(tmp_path / "c"), progress_bar=False,
        ) as client:  # fmt: skip
            content = (await client.generate("hi", logprobs_format="content"))[0]
            legacy = (await client.generate("hi"))[0]
            again = (await client.generate("hi", logprobs_format="content"))[0]
            bodies = [r.body or {} for r in sim.requests]
    assert len(bodies) == 2  # the two forms are two cache entries; the third call was a hit
    assert (bodies[0]["logprobs"], bodies[0]["top_logprobs"]) == (True, 3)
    assert bodies[1]["logprobs"] == 3 and "top_logprobs" not in bodies[1]
    assert content.full == legacy.full
    c, lg = content.get_generation_logprobs(), legacy.get_generation_logprobs()
    assert c is not None and lg is not None
    assert (c.tokens, c.token_logprobs, c.top_logprobs) == (lg.tokens, lg.token_logprobs, lg.top_logprobs)
    assert lg.sampling_logprobs is None and lg.token_ids is not None
    # Under temperature 0.7 the sampling distribution differs from the model's: both are kept.
    assert c.sampling_logprobs is not None and len(c.sampling_logprobs) == len(c)
    assert c.sampling_logprobs != c.token_logprobs
    assert c.token_ids is not None and len(c.token_ids) == len(c)
    assert again.cached and again.logprobs == content.logprobs
    # The plain-dict form keeps them too (what a user json.dumps).
    assert content.logprobs is not None
    assert content.to_dict()["logprobs"]["sampling_logprobs"] == content.logprobs.sampling_logprobs
    assert again.get_generation_logprobs().sampling_logprobs == c.sampling_logprobs  # type: ignore[union-attr]


async def test_an_unknown_format_is_refused_before_any_request(tmp_path: Path) -> None:
    with FireworksSimulator() as sim:
        async with AsyncFireworks(
            "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, cache_dir=str(tmp_path / "c"), progress_bar=False
        ) as client:
            with pytest.raises(ValidationError, match=r"logprobs_format.*'legacy', 'content'"):
                await client.generate("hi", logprobs_format="json")
            with pytest.raises(ValidationError, match="logprobs_format"):
                await client.generate("hi", logprobs_format=None)
        assert sim.requests == []


async def test_top_k_is_what_was_asked_for_in_either_form(tmp_path: Path) -> None:
    # The legacy reply lists the chosen token as a third entry wherever it is not among the top 2 (often in an
    # echoed prompt, and at a high temperature); top_k still says 2, as the content form does.
    with FireworksSimulator() as sim:
        async with AsyncFireworks(
            "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, max_tokens=24, temperature=1.6, logprobs=2,
            echo=True, cache_dir=str(tmp_path / "c"), progress_bar=False,
        ) as client:  # fmt: skip
            legacy = await client.generate("What is 2+2? Think of a number.", n_samples=4)
            content = await client.generate("What is 2+2? Think of a number.", n_samples=4, logprobs_format="content")
    sizes = {len(top) for r in legacy for top in (r.logprobs.top_logprobs if r.logprobs else []) if top}
    assert sizes == {2, 3}  # the reply this is about: some positions carry the added third entry
    assert [r.logprobs.top_k if r.logprobs else None for r in [*legacy, *content]] == [2] * 8
    for r in legacy:
        assert r.logprobs is not None and r.logprobs.get_generation_logprobs().top_k == 2
