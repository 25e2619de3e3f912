"""The simulator's opt-in answers (``FireworksSimulator(answers="boxed")``): boxed answers whose distribution
the finished sentences of the prefix decide, deterministic, and scored by echo as they were generated."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

import pytest

from _helpers import post_completion
from fw_rollouts.testing import FireworksSimulator, tokenize
from fw_rollouts.testing._model import ANSWERS, Prompt, Sampling, answer_distribution, generate, walk_prompt

R1_MODEL = "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"
R1_HEAD = "<｜begin▁of▁sentence｜><｜User｜>What is 6 times 7?<｜Assistant｜><think>\n"
CUE = "\n</think>\n\nTherefore, the final answers is \\boxed{"
HEADS = {
    R1_MODEL: R1_HEAD,
    "accounts/fireworks/models/llama-v3p1-8b-instruct": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 6 times 7?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "accounts/fireworks/models/gpt-oss-20b": "<|start|>user<|message|>What is 6 times 7?<|end|><|start|>assistant",
}
SENTENCES = ["Okay. ", "Let me think. ", "Six times seven is forty two. ", "Wait. ", "Let me check again. "]
BOXED_AT_END = re.compile(r" \\boxed\{(" + "|".join(re.escape(a) for a in ANSWERS) + r")\}$")


def _prompt(model: str, text: str, *, answers: bool = True) -> Prompt:
    texts, ids = tokenize(text)
    return walk_prompt(model, texts, ids, text, False, answers=answers)


def test_off_by_default_no_answer_is_written() -> None:
    """Without the switch the model writes word soup, never a box, even right after ``\\boxed{``."""
    for seed in range(10):
        for text in (R1_HEAD, R1_HEAD + "Okay." + CUE):
            g = generate(_prompt(R1_MODEL, text, answers=False), seed_key=seed, sampling=Sampling(1.0, 0, 1.0, 0.0),
                         max_tokens=400)  # fmt: skip
            assert "boxed" not in g.text
    assert answer_distribution(_prompt(R1_MODEL, R1_HEAD + CUE, answers=False).end_state) is None


@pytest.mark.parametrize("model", sorted(HEADS))
def test_every_answer_segment_ends_in_a_boxed_answer(model: str) -> None:
    for seed in range(12):
        g = generate(_prompt(model, HEADS[model]), seed_key=seed, sampling=Sampling(1.0, 0, 1.0, 0.0), max_tokens=600)
        assert g.finish_reason == "stop", g.text
        assert BOXED_AT_END.search(g.text), g.text
        if model == R1_MODEL:  # only the answer after </think> is boxed, not the reasoning
            reasoning, sep, _answer = g.text.partition("</think>")
            assert sep and "boxed" not in reasoning


def test_after_the_cue_comes_one_answer_and_its_brace() -> None:
    p = _prompt(R1_MODEL, R1_HEAD + "Okay. Let me think." + CUE)
    dist = answer_distribution(p.end_state)
    assert dist is not None and set(dist) == set(ANSWERS) and math.isclose(sum(dist.values()), 1.0, abs_tol=1e-5)
    counts: Counter[str] = Counter()
    for seed in range(400):
        g = generate(p, seed_key=seed, sampling=Sampling(1.0, 0, 1.0, 0.0), max_tokens=16)
        assert g.finish_reason == "stop" and g.text.endswith("}")
        counts[g.text[:-1]] += 1
    assert set(counts) <= set(ANSWERS)
    for answer, p_answer in dist.items():  # the draws follow the distribution (4 standard deviations)
        assert abs(counts[answer] / 400 - p_answer) <= 4 * math.sqrt(p_answer * (1 - p_answer) / 400) + 0.01
    greedy = generate(p, seed_key=1, sampling=Sampling(0.0, 0, 1.0, 0.0), max_tokens=16)
    assert greedy.text == max(dist, key=dist.__getitem__) + "}"


def test_the_distribution_is_decided_by_the_finished_sentences_before_the_box() -> None:
    dists = []
    for i in range(len(SENTENCES) + 1):
        reasoning = "".join(SENTENCES[:i]).rstrip()
        d = answer_distribution(_prompt(R1_MODEL, R1_HEAD + reasoning + CUE).end_state)
        assert d is not None
        assert d == answer_distribution(_prompt(R1_MODEL, R1_HEAD + reasoning + CUE).end_state)  # deterministic
        dists.append(d)
    assert len({tuple(sorted(d.items())) for d in dists}) == len(dists)  # each sentence moves it
    # An unfinished sentence adds nothing; the words after the last full stop do not count until it ends.
    unfinished = answer_distribution(_prompt(R1_MODEL, R1_HEAD + "Okay. Let me" + CUE).end_state)
    assert unfinished == dists[1]


def test_echo_scores_the_answer_as_generated() -> None:
    """Scoring prompt+completion gives every generated token its sampled logprob, the box and answer included."""
    for model, head in HEADS.items():
        p = _prompt(model, head)
        for seed in range(6):
            g = generate(p, seed_key=seed, sampling=Sampling(1.0, 0, 1.0, 0.0), max_tokens=600)
            assert "\\boxed{" in g.text
            scored = _prompt(model, head + g.text)
            tail = scored.steps[len(p.steps) :]
            assert [s.text for s in tail] == [s.text for s in g.steps]
            assert [s.lp for s in tail] == [s.lp for s in g.steps]


def test_over_http_with_the_switch_on() -> None:
    body: dict[str, Any] = {
        "model": R1_MODEL,
        "prompt": R1_HEAD + "Okay." + CUE,
        "max_tokens": 16,
        "temperature": 1.0,
        "n": 32,
        "seed": 3,
    }
    with FireworksSimulator(answers="boxed") as sim:
        reply = json.loads(post_completion(sim, body))
        again = json.loads(post_completion(sim, body))
    texts = [c["text"] for c in reply["choices"]]
    assert texts == [c["text"] for c in again["choices"]]
    assert all(t.endswith("}") and t[:-1] in ANSWERS for t in texts)
    assert len(set(texts)) > 1
    with FireworksSimulator() as sim:
        plain = json.loads(post_completion(sim, body))
    assert not any(c["text"].endswith("}") and c["text"][:-1] in ANSWERS for c in plain["choices"])
    with pytest.raises(ValueError, match="answers"):
        FireworksSimulator(answers="latex")  # type: ignore[arg-type]
