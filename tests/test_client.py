"""End-to-end tests of the async core over real loopback HTTP against the simulated server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from _virtual_time import VirtualTime
from fw_rollouts import (
    AsyncFireworks,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    FwRollouts,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from fw_rollouts._cache_key import CacheKeyer
from fw_rollouts._record import encode_record
from fw_rollouts._store import DiskStore
from fw_rollouts.testing import Fault, FireworksSimulator

R1_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
R1_MODEL = "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"


def make(sim: FireworksSimulator, tmp_path: Path, clock: VirtualTime | None = None, **options: Any) -> AsyncFireworks:
    """A client of ``sim`` on virtual time (retry waits are recorded in ``clock.sleeps``, never waited)."""
    options.setdefault("model", "qwen-15b")
    options.setdefault("max_tokens", 24)
    options.setdefault("progress_bar", False)
    return AsyncFireworks(
        base_url=sim.base_url,
        api_key=sim.api_key,
        cache_dir=str(tmp_path / "cache"),
        clock=clock if clock is not None else VirtualTime(),
        **options,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def completions(sim: FireworksSimulator) -> list[Any]:
    return [r for r in sim.requests if r.path.endswith("/completions")]


def test_generate_five_samples_with_logprobs_and_echo(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> FwRollouts:
        async with make(sim, tmp_path, temperature=0.7, logprobs=5, echo=True) as client:
            return await client.generate("What is 2+2?", n_samples=5)

    rollouts = run(main())
    assert isinstance(rollouts, FwRollouts)
    assert len(rollouts) == 5 and rollouts.num_responses == 5
    assert [r.seed for r in rollouts] == [0, 1, 2, 3, 4]
    assert rollouts.model == R1_MODEL and rollouts.prompt_text == R1_PROMPT
    bodies = sorted((r.body for r in completions(sim)), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [0, 1, 2, 3, 4]
    # The prompt's logprobs are paid for once: one request echoes, the others do not.
    assert sorted(b["echo"] for b in bodies) == [False, False, False, False, True]
    for body in bodies:
        assert body["model"] == R1_MODEL
        assert body["prompt"] == R1_PROMPT
        assert body["logprobs"] == 5
        assert body["temperature"] == 0.7 and body["max_tokens"] == 24
        assert set(body) <= {
            "model", "prompt", "max_tokens", "temperature", "top_p", "presence_penalty",
            "frequency_penalty", "logprobs", "echo", "seed",
        }  # fmt: skip
    texts = set()
    for r in rollouts:
        assert R1_PROMPT not in r.full and not r.full.startswith("<｜")
        texts.add(r.full)
        prompt_lp = r.get_prompt_logprobs()
        gen_lp = r.get_generation_logprobs()
        assert prompt_lp is not None and gen_lp is not None
        assert "".join(prompt_lp.tokens) == R1_PROMPT
        assert prompt_lp.token_logprobs[0] is None
        assert all(v is not None and v <= 0 for v in prompt_lp.token_logprobs[1:])
        assert "".join(gen_lp.tokens) == r.full
        assert all(v is not None and v <= 0 for v in gen_lp.token_logprobs)
        assert all(top is not None and 1 <= len(top) <= 6 for top in gen_lp.top_logprobs)
        assert r.logprobs is not None and len(r.logprobs) == len(prompt_lp) + len(gen_lp)
        # The R1 prompt opens a thought: text before </think> is reasoning.
        if r.completed_reasoning:
            assert r.full == r.reasoning + "</think>" + r.content
        else:
            assert r.reasoning == r.full and r.content == ""
    assert len(texts) > 1, "different seeds should give different samples"


def test_cache_repeat_sends_nothing_and_extends_only_missing(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> tuple[FwRollouts, FwRollouts, FwRollouts]:
        async with make(sim, tmp_path) as client:
            first = await client.generate("Tell me a story", n_samples=5)
            again = await client.generate("Tell me a story", n_samples=5)
            more = await client.generate("Tell me a story", n_samples=10)
            return first, again, more

    first, again, more = run(main())
    assert len(completions(sim)) == 10  # 5, then 0, then only the 5 missing
    assert [r.full for r in again] == [r.full for r in first]
    assert all(r.cached for r in again)
    assert [r.cached for r in more] == [True] * 5 + [False] * 5
    assert sorted(r.body["seed"] for r in completions(sim)[5:]) == [5, 6, 7, 8, 9]
    assert again[0].logprobs == first[0].logprobs


def test_cache_key_covers_parameters_and_use_cache_false_bypasses(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> None:
        async with make(sim, tmp_path) as client:
            await client.generate("Hello", n_samples=2)
            await client.generate("Hello", n_samples=2, temperature=0.3)
            await client.generate("Hello", n_samples=2, stop=["\n"])
            await client.generate("Hello", n_samples=2, logprobs=2)
            await client.generate("Hello", n_samples=2, use_cache=False)
            await client.generate("Hello", n_samples=2, seed=1)  # seeds 1, 2: only 2 is new

    run(main())
    assert len(completions(sim)) == 2 * 5 + 1


def test_entry_without_requested_logprobs_is_refetched(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> FwRollouts:
        async with make(sim, tmp_path) as client:
            first = await client.generate("Score me", n_samples=1)
            # Overwrite the entry with a copy lacking logprobs, as an older cache might hold.
            settings = client.settings
            keyer = CacheKeyer(settings.resolved_base_url, settings.key_body(first.prompt_text))
            stripped = first[0]
            stripped.logprobs = None
            async with DiskStore(tmp_path / "cache") as store:
                await store.set_many([(keyer(0), encode_record(stripped, keyer(0)))])
            return await client.generate("Score me", n_samples=1)

    second = run(main())
    assert len(completions(sim)) == 2
    assert second[0].logprobs is not None and not second[0].cached


def test_failed_samples_are_not_cached(sim: FireworksSimulator, tmp_path: Path) -> None:
    sim.faults.push(Fault.status(400, message="bad thing"))

    async def main() -> None:
        async with make(sim, tmp_path) as client:
            with pytest.raises(BadRequestError) as info:
                await client.generate("Cache no errors", n_samples=1)
            assert info.value.status_code == 400 and "bad thing" in str(info.value)
            again = await client.generate("Cache no errors", n_samples=1)
            assert not again[0].cached

    run(main())
    assert len(completions(sim)) == 2


def test_retries_transient_errors_honouring_retry_after(sim: FireworksSimulator, tmp_path: Path) -> None:
    sim.faults.push(Fault.status(429, retry_after="3"), Fault.status(503), Fault.reset())
    clock = VirtualTime()
    client = make(sim, tmp_path, clock, use_cache=False)

    async def main() -> FwRollouts:
        async with client:
            return await client.generate("Retry me", n_samples=1)

    rollouts = run(main())
    assert len(rollouts) == 1
    assert len(completions(sim)) == 4
    waits = clock.sleeps
    assert waits and waits[0] >= 3.0, "Retry-After is a floor for the first wait"


def test_no_retry_on_client_errors(sim: FireworksSimulator, tmp_path: Path) -> None:
    for status, error in ((401, AuthenticationError), (404, NotFoundError), (422, BadRequestError)):
        sim.reset()
        sim.faults.push(Fault.status(status))

        async def main() -> None:
            async with make(sim, tmp_path, use_cache=False) as client:
                await client.generate("No retry", n_samples=1)

        with pytest.raises(error) as info:
            run(main())
        assert info.value.attempts == 1
        assert len(completions(sim)) == 1


def test_exhausted_retries_raise_our_error_with_attempts(sim: FireworksSimulator, tmp_path: Path) -> None:
    sim.faults.push(*[Fault.status(429)] * 3)

    async def main() -> None:
        async with make(sim, tmp_path, use_cache=False, max_retries=2) as client:
            await client.generate("Give up", n_samples=1)

    with pytest.raises(RateLimitError) as info:
        run(main())
    assert info.value.attempts == 3 and info.value.status_code == 429
    assert "after 3 attempts" in str(info.value)


def test_partial_failure_keeps_successes(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> None:
        async with make(sim, tmp_path, max_retries=0, max_concurrency=1) as client:
            sim.faults.push(Fault.ok(), Fault.status(500), Fault.ok())
            with pytest.raises(ServerError) as info:
                await client.generate("Partial", n_samples=3)
            error = info.value
            assert error.rollouts is not None and [r.seed for r in error.rollouts] == [0, 2]
            assert list(error.errors) == [1]
            sim.reset()
            again = await client.generate("Partial", n_samples=3)
            assert [r.cached for r in again] == [True, False, True]
            assert [r.body["seed"] for r in completions(sim)] == [1]

    run(main())


def test_overrides_unknown_options_and_missing_key_fail_before_sending(
    sim: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)

    async def main() -> None:
        async with make(sim, tmp_path) as client:
            with pytest.raises(ValidationError, match="best_of") as info:
                await client.generate("x", best_of=2)
            assert "temperature" in str(info.value)  # the valid options are listed
            with pytest.raises(ValidationError, match="temperature"):
                await client.generate("x", temperature=3.0)
            with pytest.raises(ValidationError, match="n_samples"):
                await client.generate("x", n_samples=0)
        no_key = AsyncFireworks(model="qwen-15b", base_url=sim.base_url, cache_dir=str(tmp_path / "c2"))
        with pytest.raises(ConfigurationError, match=r"api_key.*FIREWORKS_API_KEY"):
            await no_key.generate("x")
        await no_key.aclose()

    run(main())
    assert completions(sim) == []


def test_unknown_model_needs_raw_or_template(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> None:
        async with make(sim, tmp_path, model="my-org/mystery-model") as client:
            with pytest.raises(ConfigurationError) as info:
                await client.generate("x")
            assert "raw=True" in str(info.value) and "chat_template=" in str(info.value)
            r = await client.generate("Once upon a time", raw=True)
            assert r.prompt_text == "Once upon a time"
            t = await client.generate("hi", chat_template="{{ bos_token }}Q: {{ messages[0]['content'] }}\nA:",
                                      chat_template_kwargs={"bos_token": "<s>"})  # fmt: skip
            assert t.prompt_text == "<s>Q: hi\nA:"

    run(main())
    bodies = [r.body for r in completions(sim)]
    assert [b["model"] for b in bodies] == ["accounts/fireworks/models/mystery-model"] * 2
    assert bodies[0]["prompt"] == "Once upon a time"


def test_thinking_injection_continues_the_reasoning(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> FwRollouts:
        async with make(sim, tmp_path, max_tokens=64) as client:
            return await client.generate("What is 10*5? <think>The user wants 10 times 5. That equals", n_samples=2)

    rollouts = run(main())
    expected = (
        "<｜begin▁of▁sentence｜><｜User｜>What is 10*5?<｜Assistant｜><think>\nThe user wants 10 times 5. That equals"
    )
    assert rollouts.prompt_text == expected
    assert completions(sim)[0].body["prompt"] == expected
    for r in rollouts:
        assert not r.full.startswith("The user wants")  # generated text only
        assert r.completed_reasoning is not None


def test_logprobs_off_sends_neither_logprobs_nor_echo(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> FwRollouts:
        async with make(sim, tmp_path, logprobs=0, echo=True) as client:
            return await client.generate("No logprobs", n_samples=1)

    rollouts = run(main())
    body = completions(sim)[0].body
    assert "logprobs" not in body and "echo" not in body
    assert rollouts[0].logprobs is None and rollouts[0].get_generation_logprobs() is None
    assert not rollouts.logprobs_enabled


@pytest.mark.parametrize("bos", ["none", "count", "echo"])
@pytest.mark.parametrize("echo_text", [True, False])
def test_echo_split_is_exact_for_every_server_reading(tmp_path: Path, bos: str, echo_text: bool) -> None:
    with FireworksSimulator(bos=bos, echo_text=echo_text) as server:  # type: ignore[arg-type]

        async def main() -> FwRollouts:
            async with make(server, tmp_path, model="llama-v3p1-8b") as client:
                return await client.generate("Ünïcode prompt: naïve café 🤔", n_samples=2)

        rollouts = run(main())
    for r in rollouts:
        assert "Ünïcode" not in r.full
        prompt_lp = r.get_prompt_logprobs()
        assert prompt_lp is not None
        joined = "".join(prompt_lp.tokens)
        assert joined.endswith(rollouts.prompt_text)
        assert len(joined) - len(rollouts.prompt_text) <= 20  # at most a BOS token ahead of the prompt
        assert prompt_lp.token_logprobs[0] is None
        gen = r.get_generation_logprobs()
        assert gen is not None and "".join(gen.tokens) == r.full


@pytest.mark.parametrize("stop_included", [False, True])
def test_stop_sequences_never_end_the_text(tmp_path: Path, stop_included: bool) -> None:
    with FireworksSimulator(stop_included=stop_included) as server:

        async def main() -> FwRollouts:
            async with make(server, tmp_path, model="llama-v3p1-8b", max_tokens=200, stop=[" the", "."]) as client:
                return await client.generate("Write a long sentence.", n_samples=4)

        rollouts = run(main())
    stopped = [r for r in rollouts if r.finish_reason == "stop"]
    assert stopped
    for r in stopped:
        assert not r.full.endswith(" the") and not r.full.endswith(".")


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    with FireworksSimulator(latency=0.2) as server:

        async def main() -> float:
            async with make(server, tmp_path, max_concurrency=2, use_cache=False) as client:
                start = time.perf_counter()
                await client.generate("Slow", n_samples=6)
                return time.perf_counter() - start

        elapsed = run(main())
    assert elapsed >= 0.6  # 6 requests, 2 at a time, 0.2 s each


def test_one_client_survives_several_asyncio_runs(sim: FireworksSimulator, tmp_path: Path) -> None:
    client = make(sim, tmp_path, requests_per_minute=6000, use_cache=False)
    for _ in range(3):
        assert len(run(client.generate("Again and again", n_samples=2))) == 2
    run(client.aclose())
    assert len(completions(sim)) == 6


def test_progress_bar_shows_for_several_samples(
    sim: FireworksSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def main() -> None:
        async with make(sim, tmp_path, progress_bar=True, use_cache=False) as client:
            await client.generate("Bar", n_samples=3)
            await client.generate("Bar", n_samples=1)

    run(main())
    err = capsys.readouterr().err
    assert "3/3" in err or "0/3" in err


def test_results_serialise_and_key_never_leaks(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> FwRollouts:
        client = AsyncFireworks(
            model="qwen-15b", base_url=sim.base_url, api_key=sim.api_key, cache_dir=str(tmp_path / "c"),
            progress_bar=False, max_tokens=8,
        )  # fmt: skip
        assert sim.api_key not in repr(client) and sim.api_key not in repr(client.settings)
        async with client:
            return await client.generate("Serialise", n_samples=2)

    rollouts = run(main())
    dumped = json.dumps(rollouts.to_dict())
    assert sim.api_key not in dumped
    for path in (tmp_path / "c").rglob("*"):
        if path.is_file():
            assert sim.api_key.encode() not in path.read_bytes()
    assert rollouts.get_texts() == [r.full for r in rollouts]
    assert rollouts.get_total_tokens() == sum(r.usage.total_tokens for r in rollouts)
    assert sum(rollouts.get_finish_reasons().values()) == 2


def test_other_servers_get_the_model_name_as_given_when_they_reject_the_fireworks_id(tmp_path: Path) -> None:
    # A vLLM-style server that only knows its own model name (org/name), not Fireworks ids.
    with FireworksSimulator(known_models=["Qwen/Qwen2.5-0.5B-Instruct"]) as server:

        async def main() -> tuple[FwRollouts, FwRollouts]:
            async with make(server, tmp_path, model="Qwen/Qwen2.5-0.5B-Instruct", raw=True) as client:
                first = await client.generate("Once upon a time", n_samples=3)
                second = await client.generate("Once upon a time", n_samples=2, use_cache=False)
                return first, second

        first, second = run(main())
        models = [r.body["model"] for r in completions(server)]
    assert len(first) == 3 and len(second) == 2
    assert models.count("accounts/fireworks/models/Qwen2.5-0.5B-Instruct") <= 3  # tried once per first-wave sample
    assert models[-2:] == ["Qwen/Qwen2.5-0.5B-Instruct"] * 2  # remembered afterwards


def test_a_model_unknown_under_both_names_raises_not_found_at_once(tmp_path: Path) -> None:
    with FireworksSimulator(known_models=["something-else"]) as server:

        async def main() -> None:
            async with make(server, tmp_path, model="org/missing", raw=True) as client:
                await client.generate("x", n_samples=4)

        with pytest.raises(NotFoundError) as info:
            run(main())
    assert info.value.status_code == 404 and info.value.attempts == 1


def test_samples_per_request_uses_n_and_caches_each_choice(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> tuple[FwRollouts, FwRollouts, FwRollouts]:
        async with make(sim, tmp_path, samples_per_request=128, max_tokens=4) as client:
            first = await client.generate("Many at once", n_samples=1000)
            again = await client.generate("Many at once", n_samples=1000)
            more = await client.generate("Many at once", n_samples=1100)
            return first, again, more

    first, again, more = run(main())
    bodies = [r.body for r in completions(sim)]
    assert len(bodies) == 8 + 0 + 1  # ceil(1000/128); nothing; only the block at 1024 is new
    assert all(b["n"] == 128 for b in bodies)
    assert sorted(b["seed"] for b in bodies[:8]) == [0, 128, 256, 384, 512, 640, 768, 896]
    assert [r.seed for r in first] == list(range(1000))
    assert [r.index for r in first[:130]] == [*range(128), 0, 1]
    assert len({r.full for r in first[:128]}) > 40  # the choices of one request differ from each other
    assert all(r.cached for r in again) and [r.full for r in again] == [r.full for r in first]
    assert [r.cached for r in more] == [True] * 1024 + [False] * 76  # 1000-1023 came with the block at 896
    for r in first[:5]:
        assert r.logprobs is not None and r.usage.completion_tokens == len(r.get_generation_logprobs() or [])


def test_samples_per_request_is_reproducible_and_separate_from_single_requests(
    sim: FireworksSimulator, tmp_path: Path
) -> None:
    async def main() -> tuple[list[str], list[str], list[str]]:
        async with make(sim, tmp_path, max_tokens=6, use_cache=False) as client:
            a = await client.generate("Reproducible", n_samples=10, samples_per_request=4)
            b = await client.generate("Reproducible", n_samples=10, samples_per_request=4)
            single = await client.generate("Reproducible", n_samples=10)
            return a.get_texts(), b.get_texts(), single.get_texts()

    a, b, single = run(main())
    assert single != a  # a request for n=4 is not four single requests
    assert a == b
    assert len(completions(sim)) == 3 + 3 + 10
    assert [r.body.get("n") for r in completions(sim)[:3]] == [4, 4, 4]
    assert "n" not in completions(sim)[-1].body


def test_samples_per_request_is_bounded_by_the_service_limit(sim: FireworksSimulator, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="samples_per_request"):
        make(sim, tmp_path, samples_per_request=129)
