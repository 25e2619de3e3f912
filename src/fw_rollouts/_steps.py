"""Resampling a chain of thought from every step (Thought Anchors): one study, one result per step.

:func:`resample_steps` splits a reasoning text into chunks (:func:`~fw_rollouts.split_reasoning`), and for
each chunk ``i`` continues the model's reasoning from the exact text before it (and, with ``after=True``,
through it), ``n_samples`` times; ``forced_answer=True`` adds short rollouts that close the reasoning there
and append an answer cue. Every request of every step goes out as one ``generate_many`` study: one budget,
one progress bar, cached per sample, so a re-run with a larger ``n_samples`` requests only the missing
samples of each step. The prompts are built per template family by :mod:`._reasoning_formats` and sent raw.

The results are values (:class:`StepResult`, :class:`StepResampling`); the metrics are the plain functions
of :mod:`._importance`, applied by :meth:`StepResampling.importance`.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from . import _html
from ._answers import AnswerFunction, answer_function
from ._chunks import Chunk, SplitRule, first_chunk, prefix_before, prefix_through, split_reasoning
from ._exceptions import InvalidTypeError, ValidationError
from ._importance import (
    DEFAULT_SIMILARITY_THRESHOLD,
    Metric,
    Similarity,
    accuracy,
    answer_distribution,
    counterfactual_importance,
    different_trajectories_fraction,
    forced_answer_importance,
    overdeterminedness,
    resampling_importance,
)
from ._models import FwResponse, FwRollouts
from ._optional import optional_module
from ._reasoning_formats import DEFAULT_ANSWER_CUE, ReasoningFormat, format_for
from ._validators import on_error as check_on_error
from ._validators import positive_integer

if TYPE_CHECKING:
    from ._client import AsyncFireworks, Prompt

__all__ = [
    "DEFAULT_FORCED_MAX_TOKENS",
    "StepImportance",
    "StepResampling",
    "StepResult",
    "plot_importance",
    "resample_steps",
]

DEFAULT_FORCED_MAX_TOKENS = 16
"""Generated tokens of a forced-answer rollout: enough for a short answer and its closing brace."""


# Options that only decide how a prompt is rendered: the prompts are rendered here and sent raw.
_RENDER_OPTIONS = ("chat_template", "chat_template_kwargs")
_HTML_CHUNK_CHARS = 120
_BAR_UP, _BAR_DOWN = "rgb(70,120,190)", "rgb(235,87,70)"  # the house view's blue and red (fw_rollouts._html)


@dataclass(frozen=True, slots=True)
class StepResult:
    """The resamples of one reasoning step: what was removed, the exact prefix, and what the model did next."""

    index: int
    """The step's position (the chunk's index)."""
    chunk: Chunk
    """The removed chunk; its offsets are into :attr:`StepResampling.reasoning`."""
    prefix: str
    """The reasoning the model continued from, exactly as sent: the text before :attr:`chunk`."""
    rollouts: FwRollouts
    """The samples continued from :attr:`prefix` (in seed order)."""
    first_chunks: tuple[Chunk | None, ...]
    """Per sample, the first chunk of the reasoning it generated (offsets into that sample's reasoning)."""
    answers: tuple[str | None, ...]
    """Per sample, the answer read from its answer text (None: no answer found)."""
    forced: FwRollouts | None = None
    """With ``forced_answer=True``: the forced-answer samples, which close the reasoning after :attr:`prefix`."""
    forced_answers: tuple[str | None, ...] = ()
    """Per forced sample, the answer read from the cue and what followed it."""
    after: FwRollouts | None = None
    """With ``after=True``: the samples continued from the text through :attr:`chunk`."""
    after_answers: tuple[str | None, ...] = ()
    """Per :attr:`after` sample, its answer."""
    after_first_chunks: tuple[Chunk | None, ...] = ()
    """Per :attr:`after` sample, the first chunk it wrote after :attr:`chunk`."""
    after_prefix: str | None = None
    """With ``after=True``: the text through :attr:`chunk`, exactly as sent."""

    @property
    def n(self) -> int:
        """How many samples came back for this step."""
        return len(self.rollouts)

    def accuracy(self, correct: str, *, forced: bool = False) -> float | None:
        """The share of answered samples (or forced samples) whose answer is ``correct`` (compared normalised);
        None when none answered."""
        return accuracy(self.forced_answers if forced else self.answers, correct)

    def answer_distribution(self, *, forced: bool = False) -> dict[str, float]:
        """The share of each answer among the answered samples (or forced samples)."""
        return answer_distribution(self.forced_answers if forced else self.answers)

    def __repr__(self) -> str:
        text = self.chunk.text if len(self.chunk.text) <= 40 else self.chunk.text[:37] + "..."
        forced = "" if self.forced is None else f", forced={len(self.forced)}"
        after = "" if self.after is None else f", after={len(self.after)}"
        return f"StepResult(index={self.index}, chunk={text!r}, n={self.n}{forced}{after})"


@dataclass(frozen=True, slots=True)
class StepImportance:
    """The published Thought Anchors metrics, one value per step (see :meth:`StepResampling.importance`)."""

    metric: str
    """``"accuracy"`` (differences of the share correct) or ``"kl"`` (KL divergence of answer distributions)."""
    resampling: tuple[float, ...]
    """Resampling importance: the step's effect on the answers, all resamples at step ``i`` against ``i + 1``."""
    counterfactual: tuple[float, ...]
    """Counterfactual importance: step ``i``'s resamples whose first chunk differs from the removed one against
    all of step ``i + 1``. With accuracy it has the published sign, different minus kept: negative when
    keeping the chunk helps (the opposite of :attr:`resampling`)."""
    forced: tuple[float, ...] | None
    """Forced-answer importance (None without forced-answer rollouts)."""
    different_trajectories: tuple[float, ...]
    """The share of resamples at each step whose first chunk differs from the removed one."""
    overdeterminedness: tuple[float, ...]
    """1 - distinct first chunks / resamples, per step (exact strings)."""

    def __len__(self) -> int:
        return len(self.resampling)


@dataclass(frozen=True)
class StepResampling(Sequence[StepResult]):
    """The result of :meth:`AsyncFireworks.resample_steps`: one :class:`StepResult` per chunk, in order.

    ``correct`` (the right answer, when known) is the default of the methods that need one; without it
    the metrics compare answer distributions (``metric="kl"``).
    """

    reasoning: str
    """The reasoning text that was split (a response's ``.reasoning`` when a response was given)."""
    chunks: tuple[Chunk, ...]
    """Its chunks, offsets into :attr:`reasoning`."""
    steps: tuple[StepResult, ...]
    """One result per chunk."""
    prompt_text: str
    """The rendered prompt the reasoning continues (for the raw format, the prompt as given)."""
    format: str
    """The reasoning format the prompts were built with: ``"think"``, ``"llama"``, ``"harmony"`` or ``"raw"``."""
    rule: SplitRule = "thought-anchors"
    """The chunking rule (also applied to each sample's reasoning for its first chunk)."""
    answer_cue: str | None = None
    """The forced-answer cue (None without forced-answer rollouts)."""
    correct: str | None = None
    """The right answer, if given: the default of ``correct=`` below."""

    # -- Sequence -----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[StepResult]:
        return iter(self.steps)

    @overload
    def __getitem__(self, index: int) -> StepResult: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[StepResult]: ...

    def __getitem__(self, index: int | slice) -> StepResult | Sequence[StepResult]:
        return self.steps[index]

    # -- analysis -----------------------------------------------------------------------------------------

    def with_correct(self, correct: str | None) -> StepResampling:
        """The same results with ``correct`` as the right answer."""
        return dataclasses.replace(self, correct=correct)

    def answer_distributions(self, *, forced: bool = False) -> list[dict[str, float]]:
        """Per step, the share of each answer among its samples (or forced samples)."""
        return [step.answer_distribution(forced=forced) for step in self.steps]

    def _metric(self, metric: Metric | None, correct: str | None) -> tuple[Metric, str | None]:
        correct = self.correct if correct is None else correct
        if metric is None:
            metric = "accuracy" if correct is not None else "kl"
        if metric not in ("accuracy", "kl"):
            raise ValidationError("metric", metric, "'accuracy' or 'kl'")
        if metric == "accuracy" and correct is None:
            raise ValidationError("correct", correct, "the right answer (a string) for metric='accuracy'")
        return metric, correct

    def importance(
        self,
        correct: str | None = None,
        metric: Metric | None = None,
        similarity: Similarity | None = None,
        threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    ) -> StepImportance:
        """The Thought Anchors metrics of every step (the functions of :mod:`fw_rollouts._importance`).

        ``metric="accuracy"`` compares the share of correct answers (``correct``, default :attr:`correct`);
        ``"kl"`` the answer distributions. The default is ``"accuracy"`` when a correct answer is known, else
        ``"kl"``. ``similarity(a, b) -> float`` decides whether a resample's first chunk is "the same" as the
        removed one (at least ``threshold``); the default is a dependency-free lexical cosine.

        Step ``i``'s effect compares its resamples with step ``i + 1``'s, which kept chunk ``i``. The last step
        has no next one: with ``after=True`` its ``after`` samples (which kept every chunk) take that place,
        otherwise its resampling and counterfactual importance are 0.0. Samples that wrote no reasoning (no
        first chunk) are left out of the counterfactual importance, the different-trajectories fraction and
        the overdeterminedness.
        """
        metric, correct = self._metric(metric, correct)
        n = len(self.steps)
        removed = [c.text for c in self.chunks]
        answers = [list(step.answers) for step in self.steps]
        pairs = [_with_first_chunks(step.first_chunks, step.answers) for step in self.steps]
        firsts = [texts for texts, _ in pairs]
        kept_answers = [answered for _, answered in pairs]
        last = self.steps[-1]
        if last.after is not None:
            # The rollouts that kept every chunk stand in for a step n; its own score is not reported.
            answers.append(list(last.after_answers))
            after_texts, after_answered = _with_first_chunks(last.after_first_chunks, last.after_answers)
            removed_cf, firsts_cf, answers_cf = [*removed, ""], [*firsts, after_texts], [*kept_answers, after_answered]
        else:
            removed_cf, firsts_cf, answers_cf = removed, firsts, kept_answers
        forced = None
        if self.answer_cue is not None:
            forced = forced_answer_importance(
                [list(step.forced_answers) for step in self.steps], correct=correct, metric=metric
            )
        counterfactual = counterfactual_importance(
            removed_cf,
            firsts_cf,
            answers_cf,
            similarity=similarity,
            threshold=threshold,
            correct=correct,
            metric=metric,
        )
        return StepImportance(
            metric=metric,
            resampling=_first(resampling_importance(answers, correct=correct, metric=metric), n),
            counterfactual=_first(counterfactual, n),
            forced=None if forced is None else _first(forced, n),
            different_trajectories=_first(
                different_trajectories_fraction(removed, firsts, similarity=similarity, threshold=threshold), n
            ),
            overdeterminedness=_first(overdeterminedness(firsts), n),
        )

    def rows(
        self,
        correct: str | None = None,
        metric: Metric | None = None,
        similarity: Similarity | None = None,
        threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    ) -> list[dict[str, Any]]:
        """One plain dict per step (the rows of :meth:`to_pandas`)."""
        metric, correct = self._metric(metric, correct)
        imp = self.importance(correct, metric, similarity, threshold)
        out = []
        for i, step in enumerate(self.steps):
            dist = step.answer_distribution()
            top = max(dist.items(), key=lambda kv: kv[1]) if dist else (None, math.nan)
            row: dict[str, Any] = {
                "step": step.index,
                "chunk": step.chunk.text,
                "start": step.chunk.start,
                "end": step.chunk.end,
                "n": step.n,
                "accuracy": _nan(step.accuracy(correct)) if correct is not None else math.nan,
                "top_answer": top[0],
                "top_share": top[1],
                "answers": dist,
                "resampling_importance": imp.resampling[i],
                "counterfactual_importance": imp.counterfactual[i],
                "forced_importance": imp.forced[i] if imp.forced is not None else math.nan,
                "forced_accuracy": (
                    _nan(step.accuracy(correct, forced=True))
                    if correct is not None and step.forced is not None
                    else math.nan
                ),
                "different_trajectories": imp.different_trajectories[i],
                "overdeterminedness": imp.overdeterminedness[i],
                "metric": metric,
            }
            out.append(row)
        return out

    def to_pandas(
        self,
        correct: str | None = None,
        metric: Metric | None = None,
        similarity: Similarity | None = None,
        threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    ) -> Any:
        """One row per step as a pandas DataFrame (``pip install 'fw-rollouts[pandas]'``).

        Columns: step, chunk, start, end, n, accuracy (NaN without a correct answer), top_answer, top_share,
        answers (the distribution), resampling_importance, counterfactual_importance, forced_importance,
        forced_accuracy, different_trajectories, overdeterminedness, metric.
        """
        pandas = optional_module("pandas", needed_by="StepResampling.to_pandas", extra="pandas")
        return pandas.DataFrame(self.rows(correct, metric, similarity, threshold))

    def _repr_html_(self) -> str:
        """A table in the house view (:mod:`fw_rollouts._html`): step, chunk (escaped, shortened, whole on
        hover), samples, accuracy (or the top answer), forced accuracy, and the counterfactual importance as a
        bar (blue for a positive value, red for a negative one, scaled to the largest)."""
        metric, correct = self._metric(None, None)
        imp = self.importance(correct, metric)
        scale = max((abs(v) for v in imp.counterfactual), default=0.0) or 1.0
        forced = self.answer_cue is not None and correct is not None
        facts = [("steps", str(len(self.steps))), ("format", self.format), ("metric", metric)]
        facts += [("correct", correct)] if correct is not None else []
        facts += [("samples", str(sum(step.n for step in self.steps)))]
        columns = ["step", "chunk", "n", "accuracy" if correct is not None else "top answer"]
        columns += ["forced accuracy"] if forced else []
        columns += [f"counterfactual importance ({metric})"]
        rows = []
        for i, step in enumerate(self.steps):
            cells = [
                _td(str(step.index), right=True),
                _td(_html.visible(_html.truncate(step.chunk.text, _HTML_CHUNK_CHARS), breaks=False),
                    title=step.chunk.text),
                _td(str(step.n), right=True),
            ]  # fmt: skip
            if correct is not None:
                cells.append(_td(_html.format_number(step.accuracy(correct), 2), right=True))
            else:
                dist = step.answer_distribution()
                answer, share = max(dist.items(), key=lambda kv: kv[1]) if dist else ("", math.nan)
                top = f"{html.escape(answer)} ({_html.format_number(share, 2)})" if dist else "–"
                cells.append(_td(top, right=True))
            if forced:
                assert correct is not None
                cells.append(_td(_html.format_number(step.accuracy(correct, forced=True), 2), right=True))
            value = imp.counterfactual[i]
            width = round(80 * abs(value) / scale)
            colour = _BAR_UP if value >= 0 else _BAR_DOWN
            bar = (
                f'<span style="display:inline-block;width:{width}px;height:9px;margin-right:6px;'
                f'background:{colour}"></span>{"+" if value > 0 else ""}{_html.format_number(value)}'
            )
            cells.append(_td(bar, nowrap=True))
            rows.append("<tr>" + "".join(cells) + "</tr>")
        head = "".join(
            f'<th style="text-align:left;padding:3px 8px;border-bottom:1px solid #d0d7de;white-space:nowrap">'
            f"{html.escape(c)}</th>"
            for c in columns
        )
        table = (
            f'<table style="border-collapse:collapse;font-family:{_html.SANS};font-size:12px">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
        return _html.panel(_html.header("StepResampling", facts) + table)

    def __repr__(self) -> str:
        n = sum(step.n for step in self.steps)
        return (
            f"StepResampling(steps={len(self.steps)}, samples={n}, format={self.format!r}, "
            f"forced={self.answer_cue is not None}, correct={self.correct!r})"
        )


def _first(values: Sequence[float], n: int) -> tuple[float, ...]:
    """The first ``n`` values (one per step; a stand-in step after the last is dropped)."""
    return tuple(float(v) for v in values[:n])


def _with_first_chunks(
    first_chunks: Sequence[Chunk | None], answers: Sequence[str | None]
) -> tuple[list[str], list[str | None]]:
    """The first chunks' texts and the answers of the samples that wrote a first chunk."""
    kept = [(c.text, a) for c, a in zip(first_chunks, answers, strict=True) if c is not None]
    return [t for t, _ in kept], [a for _, a in kept]


def _td(body: str, *, right: bool = False, nowrap: bool = False, title: str | None = None) -> str:
    """A cell of ``body`` (HTML, escaped by the caller) in the style of :func:`fw_rollouts._html.table`."""
    style = f"padding:3px 8px;border-bottom:1px solid #eaeef2;text-align:{'right' if right else 'left'}"
    style += ";white-space:nowrap" if nowrap else ""
    hover = "" if title is None else f' title="{html.escape(title, quote=True)}"'
    return f'<td style="{style}"{hover}>{body}</td>'


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def plot_importance(
    steps: StepResampling | StepImportance,
    ax: Any = None,
    *,
    kind: Literal["counterfactual", "resampling", "forced"] = "counterfactual",
    correct: str | None = None,
    metric: Metric | None = None,
) -> Any:
    """A bar per step of ``kind`` importance (matplotlib, ``pip install 'fw-rollouts[plot]'``); returns the axes.

    ``steps`` is a :class:`StepResampling` (its importance is computed with ``correct`` and ``metric``) or a
    :class:`StepImportance`. ``ax`` draws into existing axes; by default a new figure is made.
    """
    if kind not in ("counterfactual", "resampling", "forced"):
        raise ValidationError("kind", kind, "'counterfactual', 'resampling' or 'forced'")
    if isinstance(steps, StepResampling):
        imp = steps.importance(correct, metric)
        labels = [c.text for c in steps.chunks]
    elif isinstance(steps, StepImportance):
        imp = steps
        labels = [str(i) for i in range(len(steps))]
    else:
        raise InvalidTypeError("steps", steps, "a StepResampling (from resample_steps) or a StepImportance")
    values = imp.forced if kind == "forced" else getattr(imp, kind)
    if values is None:
        raise ValidationError("kind", kind, "a kind the results have ('forced' needs forced_answer=True)")
    if ax is None:
        pyplot = optional_module("matplotlib.pyplot", needed_by="plot_importance", extra="plot")
        width = max(4.0, 0.5 * len(values) + 2)
        _figure, ax = pyplot.subplots(figsize=(width, 3.5), layout="constrained")
    else:
        optional_module("matplotlib", needed_by="plot_importance", extra="plot")
    xs = list(range(len(values)))
    ax.bar(xs, values, color=["#3b7dd8" if v >= 0 else "#d8573b" for v in values])
    ax.axhline(0.0, color="#888888", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("importance")
    ax.set_title(f"{kind} importance ({imp.metric})", fontsize=10)
    ax.set_xticks(xs)
    if isinstance(steps, StepResampling):
        shown = [f"{i}: {t if len(t) <= 28 else t[:27] + '…'}" for i, t in zip(xs, labels, strict=True)]
        ax.set_xticklabels(shown, rotation=30, ha="right", fontsize=8)
    return ax


# -- the study ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    """One distinct prompt of the study, and where its samples go."""

    prompt: str
    forced: bool


class _Plan:
    """The study's items, each distinct prompt once (a step's ``after`` prefix is often the next step's own)."""

    def __init__(self, forced_max_tokens: int) -> None:
        self.requests: list[_Request] = []
        self._index: dict[_Request, int] = {}
        self._forced_max_tokens = forced_max_tokens

    def add(self, prompt: str, *, forced: bool = False) -> int:
        request = _Request(prompt, forced)
        if request not in self._index:
            self._index[request] = len(self.requests)
            self.requests.append(request)
        return self._index[request]

    def items(self) -> list[dict[str, Any]]:
        return [
            {"prompt": r.prompt, "max_tokens": self._forced_max_tokens} if r.forced else {"prompt": r.prompt}
            for r in self.requests
        ]


def _reasoning_of(reasoning: Any) -> str:
    if isinstance(reasoning, FwResponse):
        return reasoning.reasoning or reasoning.content
    if isinstance(reasoning, str):
        return reasoning
    raise InvalidTypeError("reasoning", reasoning, "the reasoning text (a str) or a sample (FwResponse)")


def _reasoning_start(text: str) -> int:
    """Where the reasoning starts in ``text``: after a ``<think>`` tag and the whitespace after it, else 0."""
    opening = text.find("<think>")
    if opening == -1:
        return 0
    rest = text[opening + len("<think>") :]
    return len(text) - len(rest.lstrip())


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidTypeError(name, value, "True or False")
    return value


async def resample_steps(
    client: AsyncFireworks,
    prompt: Prompt,
    reasoning: str | FwResponse,
    n_samples: int = 10,
    *,
    rule: SplitRule = "thought-anchors",
    after: bool = False,
    forced_answer: bool = False,
    answer_cue: str | None = None,
    answer: AnswerFunction | None = None,
    forced_max_tokens: int = DEFAULT_FORCED_MAX_TOKENS,
    correct: str | None = None,
    seed: int | None = None,
    raw: bool | None = None,
    progress_bar: bool | None = None,
    output: str | os.PathLike[str] | None = None,
    on_error: Literal["raise", "return"] = "raise",
    **sampling: Any,
) -> StepResampling:
    """:meth:`AsyncFireworks.resample_steps` (see there)."""
    text = _reasoning_of(reasoning)
    after = _check_bool("after", after)
    forced_answer = _check_bool("forced_answer", forced_answer)
    read_answer = answer_function(answer)
    if answer_cue is not None and (not isinstance(answer_cue, str) or not answer_cue):
        raise InvalidTypeError("answer_cue", answer_cue, "a non-empty string, or None (the published cue)")
    cue = DEFAULT_ANSWER_CUE if answer_cue is None else answer_cue
    forced_max_tokens = positive_integer("forced_max_tokens", forced_max_tokens)
    n_samples = positive_integer("n_samples", n_samples)
    check_on_error(on_error)
    if correct is not None and not isinstance(correct, str):
        raise InvalidTypeError("correct", correct, "the right answer as a string, or None")
    chunks = split_reasoning(text, rule)
    if not chunks:
        raise ValidationError(
            "reasoning", text, f"a reasoning text with at least one chunk under rule={rule!r} (it has none)"
        )

    fmt = format_for(client.template_for(raw=raw, **sampling))
    base = client.render(prompt, raw=raw, **sampling)
    start = _reasoning_start(text)
    plan = _Plan(forced_max_tokens)
    layout = []
    for chunk in chunks:
        prefix = prefix_before(text, chunk)[start:] if chunk.start >= start else ""
        continued = fmt.continue_reasoning(base, prefix)
        main = plan.add(continued)
        forced = plan.add(fmt.force_answer(continued, prefix, cue), forced=True) if forced_answer else None
        through = prefix_through(text, chunk)[start:] if after else None
        later = plan.add(fmt.continue_reasoning(base, through)) if through is not None else None
        layout.append((chunk, prefix, main, forced, through, later))

    options = {k: v for k, v in sampling.items() if k not in _RENDER_OPTIONS}
    results = await client.generate_many(
        plan.items(),
        n_samples,
        seed=seed,
        raw=True,
        progress_bar=progress_bar,
        on_error=on_error,
        output=output,
        **options,
    )
    samples = [_resplit(r, fmt) for r in results]
    steps = []
    for chunk, prefix, main, forced, through, later in layout:
        rollouts = samples[main]
        steps.append(
            StepResult(
                index=chunk.index,
                chunk=chunk,
                prefix=prefix,
                rollouts=rollouts,
                first_chunks=tuple(first_chunk(fmt.reasoning_text(r), rule) for r in rollouts),
                answers=tuple(read_answer(fmt.answer_text(r)) for r in rollouts),
                forced=samples[forced] if forced is not None else None,
                forced_answers=(
                    tuple(read_answer(cue + r.full) for r in samples[forced]) if forced is not None else ()
                ),
                after=samples[later] if later is not None else None,
                after_answers=(
                    tuple(read_answer(fmt.answer_text(r)) for r in samples[later]) if later is not None else ()
                ),
                after_first_chunks=(
                    tuple(first_chunk(fmt.reasoning_text(r), rule) for r in samples[later]) if later is not None else ()
                ),
                after_prefix=through,
            )
        )
    return StepResampling(
        reasoning=text,
        chunks=tuple(chunks),
        steps=tuple(steps),
        prompt_text=base,
        format=fmt.name,
        rule=rule,
        answer_cue=cue if forced_answer else None,
        correct=correct,
    )


def _resplit(rollouts: FwRollouts, fmt: ReasoningFormat) -> FwRollouts:
    """``rollouts`` with each sample read as ``fmt`` writes it (the prompts went out raw)."""
    responses = [fmt.sample(r, rollouts.prompt_text) for r in rollouts.responses]
    if all(a is b for a, b in zip(responses, rollouts.responses, strict=True)):
        return rollouts
    return dataclasses.replace(rollouts, responses=responses)
