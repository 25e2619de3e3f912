"""The next-token distribution from one request, and the forced answer's distribution after a cue (issue 10,
item 5), over loopback HTTP against the simulator; the arithmetic on hand-made samples."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from _helpers import MakeClient, completion_body, legacy_logprobs, post_completion
from fw_rollouts import Fireworks, FwResponse, TokenDistribution, ValidationError
from fw_rollouts._next_token import token_distribution
from fw_rollouts._parsing import ResponseSpec, parse_completion
from fw_rollouts._reasoning_formats import DEFAULT_ANSWER_CUE
from fw_rollouts.testing import FireworksSimulator

R1 = "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"


def _completions(sim: FireworksSimulator) -> list[dict[str, Any]]:
    return [r.body for r in sim.requests if r.path.endswith("/completions") and r.body is not None]


def _sample(tokens: list[str], lps: list[float], top: list[dict[str, float] | None]) -> FwResponse:
    body = completion_body("".join(tokens), legacy_logprobs(tokens, lps, top_logprobs=top))  # type: ignore[arg-type]
    (response,) = parse_completion(body, ResponseSpec(prompt="p", logprobs=True), [0])
    return response


# -- pure ------------------------------------------------------------------------------------------------------


def test_probabilities_residual_and_answers_of_a_hand_made_position() -> None:
    top = {" 4": math.log(0.5), "4": math.log(0.2), " 5": math.log(0.15), " ": math.log(0.05)}
    dist = token_distribution(_sample([" 4"], [math.log(0.5)], [top]))
    assert list(dist.probs) == [" 4", "4", " 5", " "]
    assert dist.probs[" 4"] == pytest.approx(0.5) and dist.probs[" "] == pytest.approx(0.05)
    assert dist.residual_mass == pytest.approx(0.1)
    assert dist.top == " 4"
    assert dist.answers() == pytest.approx({"4": 0.7, "5": 0.15})  # " " is no answer
    assert list(dist.answers()) == ["4", "5"]
    assert dist.answers(normalize=lambda t: t) == pytest.approx({" 4": 0.5, "4": 0.2, " 5": 0.15, " ": 0.05})


def test_the_chosen_token_is_added_when_the_alternatives_leave_it_out_and_mass_is_clipped() -> None:
    # A content-format reply may list alternatives without the chosen token; rounding may push the sum past 1.
    dist = token_distribution(_sample(["a"], [math.log(0.3)], [{"b": math.log(0.71)}]))
    assert list(dist.probs) == ["b", "a"]
    assert dist.residual_mass == 0.0


def test_no_generated_position_is_an_empty_distribution() -> None:
    body = completion_body("", legacy_logprobs([], []), finish_reason="stop")
    (response,) = parse_completion(body, ResponseSpec(prompt="p", logprobs=True), [0])
    dist = token_distribution(response)
    assert dist.probs == {} and dist.top is None and dist.residual_mass == 1.0 and dist.finish_reason == "stop"


# -- over HTTP -------------------------------------------------------------------------------------------------


def test_probabilities_are_the_exp_of_the_servers_top_logprobs(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    async def main() -> TokenDistribution:
        async with make_client() as client:
            return await client.next_token_distribution(R1, raw=True)

    dist = asyncio.run(main())
    (body,) = _completions(sim)
    assert body["prompt"] == R1 and body["max_tokens"] == 1 and body["logprobs"] == 5
    assert body["temperature"] == 0.0 and "echo" not in body
    # The same request posted straight to the server: its own top logprobs.
    reply = json.loads(post_completion(sim, body))
    (top,) = reply["choices"][0]["logprobs"]["top_logprobs"]
    assert dist.logprobs == top
    assert dist.probs == {t: math.exp(lp) for t, lp in sorted(top.items(), key=lambda kv: -kv[1])}
    assert list(dist.probs.values()) == sorted(dist.probs.values(), reverse=True)
    assert dist.residual_mass == pytest.approx(1 - sum(math.exp(lp) for lp in top.values()), abs=1e-12)
    assert 0 < dist.residual_mass < 1
    assert dist.prompt_text == R1 and dist.top == max(top, key=lambda t: top[t])


def test_top_logprobs_sets_the_alternatives_and_a_rerun_is_cached(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    async def main() -> tuple[TokenDistribution, TokenDistribution]:
        async with make_client() as client:
            first = await client.next_token_distribution("What is 2+2?", top_logprobs=3)
            again = await client.next_token_distribution("What is 2+2?", top_logprobs=3)
            return first, again

    first, again = asyncio.run(main())
    assert len(_completions(sim)) == 1
    assert len(first.probs) == 3 and first == dataclass_without_cached(again) and again.cached


def dataclass_without_cached(d: TokenDistribution) -> TokenDistribution:
    import dataclasses

    return dataclasses.replace(d, cached=False)


def test_forced_answer_distribution_closes_the_reasoning_and_appends_the_cue(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    prefix = "Two plus two.\n\nThat is 4."

    async def main() -> list[TokenDistribution]:
        async with make_client() as client:
            return [
                await client.forced_answer_distribution("What is 2+2?", prefix),
                await client.forced_answer_distribution(R1, prefix, raw=True, answer_cue="Answer: "),
            ]

    chat, raw = asyncio.run(main())
    assert chat.prompt_text == R1 + prefix + "\n</think>\n\n" + DEFAULT_ANSWER_CUE
    assert DEFAULT_ANSWER_CUE == "Therefore, the final answers is \\boxed{"
    assert raw.prompt_text == R1 + prefix + "\n</think>\n\nAnswer: "
    assert [b["prompt"] for b in _completions(sim)] == [chat.prompt_text, raw.prompt_text]


@pytest.mark.parametrize(
    ("model", "options", "prefix", "expected"),
    [
        (
            "llama-v3p1-8b",
            {},
            "Step one.",
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nStep one.\n\nCue",
        ),
        ("llama-v3p1-8b", {}, "", "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nCue"),
        (
            "gpt-oss-20b",
            {"chat_template_kwargs": {"current_date": "2025-01-01"}},
            "Step one.",
            "<|start|>user<|message|>Q?<|end|><|start|>assistant<|channel|>analysis<|message|>Step one."
            "<|end|><|start|>assistant<|channel|>final<|message|>Cue",
        ),
    ],
)
def test_the_cue_follows_each_template_family(
    make_client: MakeClient, sim: FireworksSimulator, model: str, options: dict[str, Any], prefix: str, expected: str
) -> None:
    async def main() -> TokenDistribution:
        async with make_client(model=model) as client:
            return await client.forced_answer_distribution("Q?", prefix, answer_cue="Cue", **options)

    dist = asyncio.run(main())
    assert dist.prompt_text.endswith(expected) and dist.probs
    assert [b["prompt"] for b in _completions(sim)] == [dist.prompt_text]


def test_many_prompts_run_as_one_study_with_the_same_results(make_client: MakeClient, sim: FireworksSimulator) -> None:
    prompts = ["What is 2+2?", "What is 3+3?", "Name a colour."]

    async def main() -> tuple[list[TokenDistribution], list[TokenDistribution], list[TokenDistribution]]:
        async with make_client() as client:
            many = await client.next_token_distributions(prompts)
            one = [await client.next_token_distribution(p) for p in prompts]  # cached: the same requests
            forced = await client.forced_answer_distributions([(p, "Hmm.") for p in prompts])
            return many, one, forced

    many, one, forced = asyncio.run(main())
    assert [dataclass_without_cached(d) for d in one] == many
    assert len(_completions(sim)) == 6  # three next-token requests, three forced-answer ones
    assert [d.prompt_text for d in forced] == [
        f"<｜begin▁of▁sentence｜><｜User｜>{p}<｜Assistant｜><think>\nHmm.\n</think>\n\n{DEFAULT_ANSWER_CUE}"
        for p in prompts
    ]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"top_logprobs": 0}, "top_logprobs"),
        ({"top_logprobs": 6}, "top_logprobs"),
        ({"top_logprobs": True}, "top_logprobs"),
        ({"max_tokens": 5}, "max_tokens"),
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    make_client: MakeClient, sim: FireworksSimulator, kwargs: dict[str, Any], argument: str
) -> None:
    async def main() -> None:
        async with make_client() as client:
            await client.next_token_distribution("What is 2+2?", **kwargs)

    with pytest.raises(ValidationError) as info:
        asyncio.run(main())
    assert info.value.argument == argument
    assert _completions(sim) == []


def test_forced_answer_distribution_refuses_a_bad_prefix(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async def main() -> None:
        async with make_client() as client:
            await client.forced_answer_distribution("Q?", ["not", "text"])  # type: ignore[arg-type]

    with pytest.raises(ValidationError) as info:
        asyncio.run(main())
    assert info.value.argument == "reasoning_prefix" and _completions(sim) == []


def test_the_sync_twin(sim: FireworksSimulator, tmp_path: Any) -> None:
    with Fireworks("qwen-15b", base_url=sim.base_url, api_key=sim.api_key, cache_dir=str(tmp_path)) as client:
        dist = client.forced_answer_distribution("What is 2+2?", "Hmm.")
    assert dist.prompt_text == R1 + "Hmm.\n</think>\n\n" + DEFAULT_ANSWER_CUE and len(dist.probs) == 5
