"""Bad input is refused before any request is sent, naming the argument, the value and what is allowed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient
from fw_rollouts import AsyncFireworks, ConfigurationError, FwRolloutsError, InvalidTypeError, ValidationError
from fw_rollouts.testing import FireworksSimulator

CALLS: list[tuple[str, dict[str, Any], type[FwRolloutsError], tuple[str, ...]]] = [
    ("logprobs 6", {"logprobs": 6}, ValidationError, ("logprobs", "6", "0 to 5")),
    ("logprobs -1", {"logprobs": -1}, ValidationError, ("logprobs", "-1", "0 to 5")),
    ("logprobs bool", {"logprobs": True}, InvalidTypeError, ("logprobs", "True", "integer")),
    ("top_logprobs 6", {"top_logprobs": 6}, ValidationError, ("top_logprobs", "6", "0 to 5")),
    ("n_samples 0", {"n_samples": 0}, ValidationError, ("n_samples", "0", ">= 1")),
    ("n_samples float", {"n_samples": 2.5}, InvalidTypeError, ("n_samples", "2.5", "integer")),
    ("temperature 2.5", {"temperature": 2.5}, ValidationError, ("temperature", "2.5", "2.0")),
    ("temperature str", {"temperature": "hot"}, InvalidTypeError, ("temperature", "'hot'", "number")),
    ("top_p 1.5", {"top_p": 1.5}, ValidationError, ("top_p", "1.5", "1.0")),
    ("min_p -0.1", {"min_p": -0.1}, ValidationError, ("min_p", "-0.1", "0.0")),
    ("top_k 101", {"top_k": 101}, ValidationError, ("top_k", "101", "0 to 100")),
    ("top_k float", {"top_k": 4.5}, InvalidTypeError, ("top_k", "4.5", "integer")),
    ("presence_penalty 3", {"presence_penalty": 3}, ValidationError, ("presence_penalty", "3", "-2.0")),
    ("frequency_penalty -3", {"frequency_penalty": -3}, ValidationError, ("frequency_penalty", "-3", "2.0")),
    ("repetition_penalty 2.5", {"repetition_penalty": 2.5}, ValidationError, ("repetition_penalty", "2.5")),
    ("five stops", {"stop": ["a", "b", "c", "d", "e"]}, ValidationError, ("stop", "at most 4")),
    ("empty stop", {"stop": [""]}, ValidationError, ("stop", "non-empty")),
    ("stop int", {"stop": 5}, InvalidTypeError, ("stop", "5", "string")),
    ("negative max_tokens", {"max_tokens": -1}, ValidationError, ("max_tokens", "-1", ">= 0")),
    ("seed negative", {"seed": -1}, ValidationError, ("seed", "-1", "non-negative")),
    ("seed str", {"seed": "1"}, InvalidTypeError, ("seed", "'1'", "integer")),
    ("empty prompt", {"prompt": ""}, ValidationError, ("prompt", "non-empty")),
    ("empty messages", {"prompt": []}, ValidationError, ("prompt", "non-empty")),
    ("bad role", {"prompt": [{"role": "robot", "content": "x"}]}, ValidationError, ("role", "'robot'", "user")),
    ("no content", {"prompt": [{"role": "user"}]}, InvalidTypeError, ("content", "None", "string")),
    ("message not a dict", {"prompt": ["hello"]}, InvalidTypeError, ("prompt[0]", "'hello'", "role")),
    ("prompt int", {"prompt": 42}, InvalidTypeError, ("prompt", "42", "string")),
    # Lone surrogates (text decoded with errors="surrogateescape") cannot be sent as UTF-8.
    ("lone surrogate", {"prompt": "caf\udce9 au lait"}, ValidationError,
     ("invalid prompt=", "lone surrogate '\\udce9' at position 3", "UTF-8")),
    ("lone surrogate raw", {"prompt": "\ud800", "raw": True}, ValidationError, ("prompt", "position 0")),
    ("lone surrogate uncached", {"prompt": "x\ud800", "use_cache": False}, ValidationError,
     ("prompt", "position 1")),
    ("lone surrogate in a message", {"prompt": [{"role": "system", "content": "ok"},
                                                {"role": "user", "content": "ab\udfff"}]},
     ValidationError, ("prompt[1]['content']", "position 2")),
    ("lone surrogate after <think>", {"prompt": "Q?<think>\ud83d"}, ValidationError, ("prompt", "position 9")),
    ("unknown kwarg", {"best_of": 3}, ValidationError, ("best_of", "rejects unknown", "temperature", "logprobs")),
    ("raw with messages", {"raw": True, "prompt": [{"role": "user", "content": "x"}]}, ValidationError,
     ("prompt", "raw=True")),
    ("misspelt kwarg", {"temprature": 0.5}, ValidationError, ("temprature", "did you mean 'temperature'")),
    ("logit_bias key", {"logit_bias": {"abc": 1}}, ValidationError, ("logit_bias", "token ids")),
    ("chat_template typo", {"chat_template": "llama3"}, ConfigurationError, ("chat_template", "llama3.1")),
    # The client's own configuration is fixed per client: passing it per call says how to change it.
    ("timeout per call", {"timeout": 5}, ValidationError, ("timeout", "with_options(timeout=")),
    ("api_key per call", {"api_key": "k"}, ValidationError, ("api_key", "with_options(api_key=")),
    ("cache_dir per call", {"cache_dir": "x"}, ValidationError, ("cache_dir", "with_options(cache_dir=")),
]  # fmt: skip

CONSTRUCTOR: list[tuple[str, dict[str, Any], type[FwRolloutsError], tuple[str, ...]]] = [
    ("timeout 0", {"timeout": 0}, ValidationError, ("timeout", "0", "> 0")),
    ("max_concurrency 0", {"max_concurrency": 0}, ValidationError, ("max_concurrency", "0", ">= 1")),
    ("max_retries -1", {"max_retries": -1}, ValidationError, ("max_retries", "-1", ">= 0")),
    ("base_url no scheme", {"base_url": "api.fireworks.ai/inference/v1"}, ConfigurationError,
     ("base_url", "http")),
    ("base_url ftp", {"base_url": "ftp://example.com"}, ConfigurationError, ("base_url", "http")),
    ("requests_per_minute 0", {"requests_per_minute": 0}, ValidationError, ("requests_per_minute", "> 0")),
    ("misspelt option", {"max_retires": 3}, ValidationError, ("max_retires", "did you mean 'max_retries'")),
    ("budget not a Budget", {"budget": 5}, InvalidTypeError, ("budget", "Budget")),
]  # fmt: skip


@pytest.mark.parametrize(("case", "options", "error", "mentions"), CONSTRUCTOR, ids=[c[0] for c in CONSTRUCTOR])
def test_bad_client_options_are_refused_at_construction_and_in_with_options(
    make_client: MakeClient,
    case: str,
    options: dict[str, Any],
    error: type[FwRolloutsError],
    mentions: tuple[str, ...],
) -> None:
    with pytest.raises(error) as info:
        make_client(**options)
    for fragment in mentions:
        assert fragment in str(info.value), f"{case}: {fragment!r} not in {info.value}"
    client = make_client()
    with pytest.raises(error):
        client.with_options(**options)


@pytest.mark.parametrize(("case", "call", "error", "mentions"), CALLS, ids=[c[0] for c in CALLS])
def test_bad_input_is_refused_before_sending(
    sim: FireworksSimulator,
    make_client: MakeClient,
    case: str,
    call: dict[str, Any],
    error: type[FwRolloutsError],
    mentions: tuple[str, ...],
) -> None:
    sim.reset()
    call = dict(call)
    prompt = call.pop("prompt", "What is 2+2?")
    n_samples = call.pop("n_samples", 1)

    async def main() -> None:
        async with make_client() as client:
            await client.generate(prompt, n_samples, **call)

    with pytest.raises(error) as info:
        asyncio.run(main())
    message = str(info.value)
    for fragment in mentions:
        assert fragment in message, f"{case}: {fragment!r} not in {message!r}"
    assert sim.requests == []


def test_bad_constructor_options_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="logprobs"):
        AsyncFireworks(model="qwen-15b", logprobs=9)
    with pytest.raises(ValidationError, match="frobnicate"):
        AsyncFireworks(model="qwen-15b", frobnicate=1)  # type: ignore[arg-type]  # refused statically too
    with pytest.raises(ConfigurationError, match="base_url"):
        AsyncFireworks(model="qwen-15b", base_url="localhost:8000")
    with pytest.raises(ValidationError, match="model"):
        AsyncFireworks(model="")


def test_missing_key_names_both_ways_to_give_one(
    sim: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.reset()
    monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)

    async def main() -> None:
        async with AsyncFireworks(model="qwen-15b", base_url=sim.base_url, cache_dir=str(tmp_path)) as client:
            await client.generate("x")

    with pytest.raises(ConfigurationError) as info:
        asyncio.run(main())
    assert "api_key" in str(info.value) and "FIREWORKS_API_KEY" in str(info.value)
    assert sim.requests == []
    monkeypatch.setenv("FIREWORKS_API_KEY", sim.api_key)
    asyncio.run(main())  # the environment variable is enough
    assert len(sim.requests) == 1
