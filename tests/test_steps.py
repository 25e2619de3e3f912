"""resample_steps over loopback HTTP: the exact prompts of every template family, one study per call, top-ups
that request only the missing samples, forced answers, importance end to end, and the views of the results."""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient, client_for, docs_block
from fw_rollouts import (
    AsyncFireworks,
    BadRequestError,
    ConfigurationError,
    Fireworks,
    InvalidTypeError,
    StepResampling,
    ValidationError,
    extract_answer,
    plot_importance,
    split_reasoning,
)
from fw_rollouts._next_token import forced_answer_prompt
from fw_rollouts.testing import Fault, FireworksSimulator
from fw_rollouts.testing._model import ANSWERS

QUESTION = "What is 6 times 7?"
# Paragraph breaks, and a short sentence said twice: the published prefix builder would turn the breaks into
# spaces and delete both "Wait, let me check." when removing the second.
REASONING = (
    "Six times seven is what we need.\n\nWait, let me check.\nSix sevens are forty two.\n\n"
    "Wait, let me check.\nYes, it is forty two. "
)
PREFIXES = [
    "",
    "Six times seven is what we need.",
    "Six times seven is what we need.\n\nWait, let me check.",
    "Six times seven is what we need.\n\nWait, let me check.\nSix sevens are forty two.",
    "Six times seven is what we need.\n\nWait, let me check.\nSix sevens are forty two.\n\nWait, let me check.",
]
CUE = "Therefore, the final answers is \\boxed{"
pytestmark = pytest.mark.anyio
DATE: dict[str, Any] = {"chat_template_kwargs": {"current_date": "2025-01-01"}}

R1_BASE = "<｜begin▁of▁sentence｜><｜User｜>What is 6 times 7?<｜Assistant｜><think>\n"
LLAMA_BASE = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 6 times 7?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
HARMONY_BASE = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: 2025-01-01\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
    "<|start|>user<|message|>What is 6 times 7?<|end|><|start|>assistant"
)
PUBLISHED = (
    "Solve this math problem step by step. You MUST put your final answer in \\boxed{}. "
    "Problem: What is 6 times 7? Solution: \n<think>\n"
)

# family -> (client options, call options, prompt, prompt before prefix, forced-answer prompt for a prefix)
FAMILIES: dict[str, tuple[dict[str, Any], dict[str, Any], str, Any, Any]] = {
    "think": (
        {"model": "qwen-15b"},
        {},
        QUESTION,
        lambda p: R1_BASE + p,
        lambda p: R1_BASE + p + "\n</think>\n\n" + CUE,
    ),
    "llama": (
        {"model": "llama-v3p1-8b"},
        {},
        QUESTION,
        lambda p: LLAMA_BASE + p,
        lambda p: LLAMA_BASE + p + ("\n\n" if p else "") + CUE,
    ),
    "harmony": (
        {"model": "gpt-oss-20b"},
        DATE,
        QUESTION,
        lambda p: HARMONY_BASE + "<|channel|>analysis<|message|>" + p,
        lambda p: HARMONY_BASE + "<|channel|>analysis<|message|>" + p
        + "<|end|><|start|>assistant<|channel|>final<|message|>" + CUE,
    ),
    "raw": (
        {"model": "qwen-15b"},
        {"raw": True},
        PUBLISHED,
        lambda p: PUBLISHED + p,
        lambda p: PUBLISHED + p + "\n</think>\n\n" + CUE,
    ),
}  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def answering() -> Iterator[FireworksSimulator]:
    """A simulator whose model writes boxed answers."""
    with FireworksSimulator(answers="boxed") as server:
        yield server


def _client(sim: FireworksSimulator, tmp_path: Path, **options: Any) -> AsyncFireworks:
    return client_for(sim, tmp_path, **{"max_tokens": 300, **options})


def _sent(sim: FireworksSimulator) -> list[dict[str, Any]]:
    return [r.body for r in sim.requests if r.body is not None and r.path.endswith("/completions")]


@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_every_family_sends_the_exact_prefixes(
    family: str, answering: FireworksSimulator, tmp_path: Path
) -> None:
    client_options, call, prompt, continued, forced = FAMILIES[family]
    async with _client(answering, tmp_path, **client_options) as client:
        result = await client.resample_steps(prompt, REASONING, 2, forced_answer=True, **call)
    assert result.format == family
    assert [s.prefix for s in result] == PREFIXES
    assert [s.chunk.text for s in result] == [c.text for c in split_reasoning(REASONING)]
    assert [s.rollouts.prompt_text for s in result] == [continued(p) for p in PREFIXES]
    assert [s.forced.prompt_text for s in result if s.forced is not None] == [forced(p) for p in PREFIXES]
    bodies = _sent(answering)
    sent = Counter((b["prompt"], b["max_tokens"]) for b in bodies)
    expected = Counter({(continued(p), 300): 2 for p in PREFIXES}) + Counter({(forced(p), 16): 2 for p in PREFIXES})
    assert sent == expected
    assert sorted(b["seed"] for b in bodies if b["prompt"] == continued(PREFIXES[3])) == [0, 1]
    async with _client(answering, tmp_path, **client_options) as client:  # the one-request forced answer agrees
        assert [forced_answer_prompt(client, prompt, p, **call) for p in PREFIXES] == [forced(p) for p in PREFIXES]


async def test_one_study_one_bar_and_requests_of_samples_per_request(
    answering: FireworksSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with _client(answering, tmp_path, samples_per_request=2) as client:
        result = await client.resample_steps(QUESTION, REASONING, 4, progress_bar=True)
    err = capsys.readouterr().err
    steps = len(result)
    assert steps == 5 and all(s.n == 4 for s in result)
    assert len(answering.requests) == steps * 4 // 2
    assert all(r.body is not None and r.body["n"] == 2 for r in answering.requests)
    totals = set(re.findall(r"\d+/(\d+)", err))
    assert totals == {str(steps * 4)}  # one bar over the whole study, none per step


async def test_a_larger_n_samples_tops_each_step_up(answering: FireworksSimulator, tmp_path: Path) -> None:
    async with _client(answering, tmp_path) as client:
        first = await client.resample_steps(QUESTION, REASONING, 2)
        assert len(answering.requests) == 5 * 2
        answering.reset()
        more = await client.resample_steps(QUESTION, REASONING, 5)
        assert len(answering.requests) == 5 * 3  # only seeds 2, 3 and 4 of each step
        assert sorted(b["seed"] for b in _sent(answering)) == sorted([2, 3, 4] * 5)
        answering.reset()
        again = await client.resample_steps(QUESTION, REASONING, 5)
    assert answering.requests == []
    for a, b, c in zip(first, more, again, strict=True):
        assert [r.seed for r in b.rollouts] == [0, 1, 2, 3, 4]
        assert [r.cached for r in b.rollouts] == [True, True, False, False, False]
        assert b.rollouts.get_texts()[:2] == a.rollouts.get_texts()
        assert c.answers == b.answers and c.answers[:2] == a.answers


@pytest.mark.parametrize("model", ["qwen-15b", "gpt-oss-20b"])
async def test_resumes_from_the_study_file(answering: FireworksSimulator, tmp_path: Path, model: str) -> None:
    output = tmp_path / "steps.jsonl"
    call = {"forced_answer": True, "output": output, **(DATE if model == "gpt-oss-20b" else {})}
    async with _client(answering, tmp_path, model=model, use_cache=False) as client:
        first = await client.resample_steps(QUESTION, REASONING, 2, **call)
        requests = len(answering.requests)
        again = await client.resample_steps(QUESTION, REASONING, 2, **call)
    assert requests == 5 * 2 * 2 and len(answering.requests) == requests  # the second run read the file
    assert all(r.cached for s in again for r in s.rollouts)
    assert [s.answers for s in again] == [s.answers for s in first]
    assert [s.forced_answers for s in again] == [s.forced_answers for s in first]
    assert [s.first_chunks for s in again] == [s.first_chunks for s in first]
    assert [s.rollouts.get_reasonings() for s in again] == [s.rollouts.get_reasonings() for s in first]


async def test_failed_samples_are_kept_apart_and_fetched_on_the_next_run(
    answering: FireworksSimulator, tmp_path: Path
) -> None:
    async with _client(answering, tmp_path, max_retries=0) as client:
        answering.faults.push(Fault.ok(), Fault.status(400))  # the study's second request fails: its step stops
        partial = await client.resample_steps(QUESTION, REASONING, 3, on_error="return")
        (short,) = [s for s in partial if s.n < 3]
        assert sum(s.n for s in partial) == 5 * 3 - (3 - short.n)
        assert short.rollouts.errors and len(short.answers) == len(short.first_chunks) == short.n
        answering.faults.push(Fault.status(400))
        with pytest.raises(BadRequestError) as info:
            await client.resample_steps(QUESTION, REASONING, 3)
        assert info.value.results is not None and len(info.value.results) == 5
        missing = sum(r.num_responses - len(r) for r in info.value.results)
        assert 0 < missing <= 3 - short.n  # the first run's missing samples, of which the fault stopped some
        answering.reset()
        whole = await client.resample_steps(QUESTION, REASONING, 3)
    assert len(answering.requests) == missing and all(s.n == 3 for s in whole)


async def test_forced_answers_are_read_from_the_cue_and_what_follows(
    answering: FireworksSimulator, tmp_path: Path
) -> None:
    async with _client(answering, tmp_path) as client:
        result = await client.resample_steps(QUESTION, REASONING, 6, forced_answer=True, forced_max_tokens=12)
        custom = await client.resample_steps(
            QUESTION,
            REASONING,
            3,
            forced_answer=True,
            answer_cue="So it is \\boxed{",
            answer=lambda text: text.removeprefix("So it is \\boxed{").removesuffix("}"),
        )
    normalised = {extract_answer("\\boxed{" + a + "}") for a in ANSWERS}
    for step in result:
        assert step.forced is not None and len(step.forced) == 6
        assert all(r.finish_reason == "stop" and r.full.endswith("}") for r in step.forced)
        assert step.forced_answers == tuple(extract_answer(CUE + r.full) for r in step.forced)
        assert set(step.forced_answers) <= normalised
        assert all(a in normalised for a in step.answers)  # full continuations end in a boxed answer too
    assert len({a for s in result for a in s.forced_answers}) > 1
    assert custom.answer_cue == "So it is \\boxed{"
    for step in custom:
        assert step.forced is not None and step.forced.prompt_text.endswith("\n</think>\n\nSo it is \\boxed{")
        assert step.forced_answers == tuple(r.full.removesuffix("}") for r in step.forced)
    assert all(b["max_tokens"] == 12 for b in _sent(answering) if b["prompt"].endswith(CUE))


def _accuracy(answers: tuple[str | None, ...], correct: str) -> float:
    answered = [a for a in answers if a]
    assert answered, "every step of these tests has answered samples"
    return sum(a == correct for a in answered) / len(answered)


def _kl(p: list[str | None], q: list[str | None], s: float = 1e-9) -> float:
    cp, cq = Counter(a for a in p if a), Counter(a for a in q if a)
    support = set(cp) | set(cq)
    tp, tq = sum(cp.values()) + s * len(support), sum(cq.values()) + s * len(support)
    return max(0.0, sum((cp[a] + s) / tp * math.log(((cp[a] + s) / tp) / ((cq[a] + s) / tq)) for a in support))


async def test_importance_end_to_end(answering: FireworksSimulator, tmp_path: Path) -> None:
    async with _client(answering, tmp_path) as client:
        result = await client.resample_steps(
            QUESTION, REASONING, 8, after=True, forced_answer=True, correct="7", temperature=1.0
        )
    assert len(answering.requests) == 5 * 8 * 2 + 8  # each "after" prefix but the last is the next step's own
    for step, following in zip(result.steps, result.steps[1:], strict=False):
        assert step.after_prefix == following.prefix and step.after is not None
        assert step.after.get_texts() == following.rollouts.get_texts()
    assert result[-1].after_prefix == REASONING.rstrip()

    acc = [_accuracy(s.answers, "7") for s in result] + [_accuracy(result[-1].after_answers, "7")]
    assert len(set(acc)) > 1  # the simulator's answers move with the prefix
    imp = result.importance()  # correct="7" from the call: metric "accuracy"
    assert imp.metric == "accuracy"
    expected = tuple(acc[i + 1] - acc[i] for i in range(5))
    assert imp.resampling == pytest.approx(expected)
    forced = [_accuracy(s.forced_answers, "7") for s in result]
    assert imp.forced == pytest.approx([*(forced[i + 1] - forced[i] for i in range(4)), 0.0])
    # Every resample different: the counterfactual compares all of step i with step i + 1 (the published sign).
    every = result.importance(similarity=lambda a, b: 0.0)
    assert every.counterfactual == pytest.approx(tuple(-x for x in expected))
    assert every.different_trajectories == (1.0,) * 5
    none = result.importance(similarity=lambda a, b: 1.0)
    assert none.counterfactual == (0.0,) * 5 and none.different_trajectories == (0.0,) * 5
    firsts = [[c.text for c in s.first_chunks if c is not None] for s in result]
    assert imp.overdeterminedness == pytest.approx(tuple(1 - len(set(f)) / len(f) for f in firsts))

    kl = result.importance(metric="kl")
    answers = [list(s.answers) for s in result] + [list(result[-1].after_answers)]
    assert kl.resampling == pytest.approx(tuple(_kl(answers[i], answers[i + 1]) for i in range(5)))
    assert result.answer_distributions() == [s.answer_distribution() for s in result]
    dist = result[0].answer_distribution()
    assert math.isclose(sum(dist.values()), 1.0) and set(dist) == set(a for a in result[0].answers if a)

    # Without a correct answer the default metric is KL, and accuracy asks for one.
    plain = result.with_correct(None)
    assert plain.importance().metric == "kl"
    with pytest.raises(ValidationError, match="correct"):
        plain.importance(metric="accuracy")


async def test_first_chunks_are_the_first_step_each_sample_wrote(answering: FireworksSimulator, tmp_path: Path) -> None:
    async with _client(answering, tmp_path, model="gpt-oss-20b") as client:
        result = await client.resample_steps(QUESTION, REASONING, 3, **DATE)
    for step in result:
        for response, first in zip(step.rollouts, step.first_chunks, strict=True):
            # Sent raw, read as harmony: the analysis channel is the reasoning, the final channel the content.
            assert "<|" not in response.reasoning and "<|" not in response.content
            assert response.content.rstrip().endswith("}")
            assert first is not None and response.reasoning[first.start : first.end] == first.text
            assert not response.reasoning[: first.start].strip()


def test_a_sample_is_taken_as_its_reasoning_and_the_sync_twin(answering: FireworksSimulator, tmp_path: Path) -> None:
    with Fireworks(
        "qwen-15b", base_url=answering.base_url, api_key=answering.api_key, cache_dir=str(tmp_path / "cache"),
        progress_bar=False, max_tokens=300,
    ) as client:  # fmt: skip
        sample = client.generate(QUESTION, 1)[0]
        result = client.resample_steps(QUESTION, sample, 2, rule="sentences")
    assert isinstance(result, StepResampling)
    assert result.reasoning == sample.reasoning and result.rule == "sentences"
    assert [c.text for c in result.chunks] == [c.text for c in split_reasoning(sample.reasoning, "sentences")]
    assert [s.rollouts.prompt_text for s in result] == [R1_BASE + s.prefix for s in result]
    assert all(s.n == 2 for s in result)


async def test_bad_arguments_fail_before_any_request(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async with make_client() as client:
        cases: list[tuple[type[Exception], str, dict[str, Any]]] = [
            (ValidationError, "rule", {"rule": "words"}),
            (InvalidTypeError, "reasoning", {"reasoning": 42}),
            (ValidationError, "reasoning", {"reasoning": "no sentence ends here"}),
            (ValidationError, "on_error", {"on_error": "ignore"}),
            (InvalidTypeError, "answer", {"answer": "boxed"}),
            (InvalidTypeError, "answer_cue", {"answer_cue": ""}),
            (ValidationError, "n_samples", {"n_samples": 0}),
            (ValidationError, "forced_max_tokens", {"forced_max_tokens": 0}),
            (InvalidTypeError, "after", {"after": "yes"}),
        ]
        for error, name, override in cases:
            call: dict[str, Any] = {"reasoning": REASONING, **override}
            reasoning = call.pop("reasoning")
            with pytest.raises(error, match=name):
                await client.resample_steps(QUESTION, reasoning, **call)
        with pytest.raises(ValidationError, match="prompt"):
            await client.resample_steps([{"role": "user", "content": QUESTION}], REASONING, raw=True)
    assert sim.requests == []


async def _small(sim: FireworksSimulator, tmp_path: Path, reasoning: str = REASONING) -> StepResampling:
    async with _client(sim, tmp_path) as client:
        return await client.resample_steps(QUESTION, reasoning, 3, forced_answer=True, correct="7")


async def test_to_pandas_one_row_per_step(answering: FireworksSimulator, tmp_path: Path) -> None:
    result = await _small(answering, tmp_path)
    frame = result.to_pandas()
    assert list(frame["step"]) == [0, 1, 2, 3, 4]
    assert list(frame["chunk"]) == [c.text for c in result.chunks]
    assert list(frame["n"]) == [3] * 5
    imp = result.importance()
    assert list(frame["counterfactual_importance"]) == pytest.approx(imp.counterfactual)
    assert list(frame["forced_importance"]) == pytest.approx(imp.forced)
    assert list(frame["accuracy"]) == pytest.approx([s.accuracy("7") for s in result])
    assert frame.to_dict("records") == result.rows()
    kl = result.to_pandas(metric="kl")
    assert set(kl["metric"]) == {"kl"}


async def test_missing_extras_name_what_to_install(
    answering: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = await _small(answering, tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # what `import pandas` sees when it is not installed
    with pytest.raises(ConfigurationError, match=re.escape("pip install 'fw-rollouts[pandas]'")):
        result.to_pandas()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ConfigurationError, match=re.escape("pip install 'fw-rollouts[plot]'")):
        plot_importance(result)


async def test_html_view_escapes_the_chunks(answering: FireworksSimulator, tmp_path: Path) -> None:
    reasoning = "First we <b>bold</b> & check it. Then we write <script>alert(1)</script> here. " + "x" * 300 + ". "
    result = await _small(answering, tmp_path, reasoning)
    view = result._repr_html_()
    assert "<script>" not in view and "<b>bold</b>" not in view
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in view and "&lt;b&gt;bold&lt;/b&gt; &amp; check" in view
    assert view.count("<tr>") == len(result) + 1  # a header row and one per step
    assert "x" * 300 not in view.split("title=")[0]  # long chunks are shortened in the cell
    assert "…" in view
    imp = result.importance()
    assert all(f"{abs(v):.3f}" in view for v in imp.counterfactual)


async def test_plot_importance_draws_a_bar_per_step(answering: FireworksSimulator, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = await _small(answering, tmp_path)
    ax = plot_importance(result, kind="forced")
    heights = [patch.get_height() for patch in ax.patches]
    imp = result.importance()
    assert imp.forced is not None and heights == pytest.approx(imp.forced)
    _fig, own = plt.subplots()
    assert plot_importance(imp, own) is own and len(own.patches) == len(result)
    plt.close("all")
    with pytest.raises(ValidationError, match="kind"):
        plot_importance(result, kind="attention")  # type: ignore[arg-type]


def test_the_worked_example_in_docs_runs_as_written_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/resampling.md's example, run twice in a fresh directory: the second run reads the study file back."""
    code = compile(docs_block("resampling.md"), "docs/resampling.md", "exec")
    monkeypatch.chdir(tmp_path)
    import matplotlib

    matplotlib.use("Agg")
    outputs = []
    for _ in range(2):
        exec(code, {"__name__": "__main__"})
        outputs.append(capsys.readouterr().out)
    import matplotlib.pyplot as plt

    plt.close("all")
    first, second = outputs
    assert first.startswith("110 requests\n") and second.startswith("0 requests\n")
    assert first.splitlines()[1:] == second.splitlines()[1:]  # the same samples, so the same figures
    assert sum(line.startswith("step ") and "accuracy" in line for line in first.splitlines()) == 5
    assert "counterfactual [" in first and "forced_accuracy" in first
    assert (tmp_path / "steps.jsonl").exists() and (tmp_path / "importance.png").stat().st_size > 1000
