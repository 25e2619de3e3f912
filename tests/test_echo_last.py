"""``echo_last=N`` on generate: the prompt's last N tokens are echoed, the generated text and its logprobs
are read as with plain echo, and the tail's first position keeps its logprob (it has context)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw_rollouts import AsyncFireworks
from fw_rollouts.testing import FireworksSimulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


PROMPT = "Count the words in this sentence, then say how many there are, and why."


@pytest.mark.parametrize("bos", ["none", "count", "echo"])
@pytest.mark.parametrize("base", ["completion", "prompt"])
async def test_a_tail_echo_reads_as_plain_echo_does(tmp_path: Path, bos: str, base: str) -> None:
    with FireworksSimulator(bos=bos, text_offset_base=base) as sim:  # type: ignore[arg-type]
        async with AsyncFireworks(
            "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, raw=True, max_tokens=8,
            cache_dir=str(tmp_path / "c"), progress_bar=False,
        ) as client:  # fmt: skip
            plain = (await client.generate(PROMPT, seed=3, use_cache=False))[0]
            tail = (await client.generate(PROMPT, seed=3, echo_last=4, use_cache=False))[0]
            more = (await client.generate(PROMPT, seed=3, echo_last=500, use_cache=False))[0]
    assert tail.full == plain.full == more.full
    generated, expected = tail.get_generation_logprobs(), plain.get_generation_logprobs()
    assert generated is not None and expected is not None
    # Offsets differ by where the server counts them from; the tokens and their logprobs do not.
    assert (generated.tokens, generated.token_logprobs, generated.top_logprobs) == (
        expected.tokens,
        expected.token_logprobs,
        expected.top_logprobs,
    )
    echoed = plain.get_prompt_logprobs()
    assert echoed is not None and tail.logprobs is not None and more.logprobs is not None
    part = tail.get_prompt_logprobs()
    assert part is not None and len(part) == 4
    assert part.tokens == echoed.tokens[-4:]
    # The tail's first token follows the rest of the prompt: its logprob is the one plain echo gives it.
    assert part.token_logprobs == echoed.token_logprobs[-4:]
    assert part.token_logprobs[0] is not None
    # echo_last past the prompt's length is plain echo (the first position has no context again).
    assert more.get_prompt_logprobs() == echoed and more.logprobs.num_prompt_tokens == echoed.num_prompt_tokens


async def test_echo_last_is_part_of_the_cache_key(tmp_path: Path) -> None:
    with FireworksSimulator() as sim:
        async with AsyncFireworks(
            "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, raw=True, max_tokens=8,
            cache_dir=str(tmp_path / "c"), progress_bar=False,
        ) as client:  # fmt: skip
            a = (await client.generate(PROMPT, echo_last=4))[0]
            b = (await client.generate(PROMPT, echo_last=6))[0]
            again = (await client.generate(PROMPT, echo_last=4))[0]
            assert len(sim.requests) == 2
    assert a.get_prompt_logprobs() is not None and b.get_prompt_logprobs() is not None
    assert (len(a.get_prompt_logprobs()), len(b.get_prompt_logprobs())) == (4, 6)  # type: ignore[arg-type]
    assert again.cached and again.logprobs == a.logprobs
