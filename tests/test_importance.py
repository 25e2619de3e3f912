"""The published importance metrics on small hand-computed cases (the working is in the comments)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from _helpers import docs_block
from fw_rollouts import (
    InvalidTypeError,
    ValidationError,
    accuracy,
    answer_distribution,
    counterfactual_importance,
    different_trajectories_fraction,
    embedding_similarity,
    forced_answer_importance,
    kl_divergence,
    lexical_similarity,
    overdeterminedness,
    resampling_importance,
)

approx = pytest.approx


def exact(a: str, b: str) -> float:
    """A similarity that makes the hand arithmetic easy: 1 for the same text, else 0."""
    return 1.0 if a == b else 0.0


# --- distributions, KL, accuracy --------------------------------------------------------------------------------


def test_answer_distribution_leaves_out_unanswered_rollouts() -> None:
    # 3 answered of 5: "4" twice, "5" once.
    assert answer_distribution(["4", None, "4", "", "5"]) == {"4": 2 / 3, "5": 1 / 3}
    assert answer_distribution([None, ""]) == {}
    assert list(answer_distribution(["b", "a", "b"])) == ["b", "a"]


def test_kl_of_counts() -> None:
    # p = (2/4, 2/4), q = (3/4, 1/4), smoothing negligible here:
    # 0.5 ln(0.5 / 0.75) + 0.5 ln(0.5 / 0.25) = 0.5 (-0.405465) + 0.5 (0.693147) = 0.143841
    assert kl_divergence({"A": 2, "B": 2}, {"A": 3, "B": 1}) == approx(0.143841, abs=1e-6)
    assert kl_divergence({"A": 1, "B": 3}, {"B": 3, "A": 1}) == 0.0


def test_kl_with_an_answer_missing_on_one_side() -> None:
    # V = 2, s = 1e-9: p'(A) = (1 + s) / (1 + 2s) ~ 1, q'(A) = s / (1 + 2s) ~ 1e-9; the B term is ~1e-9 ln(1e-9).
    # KL ~ ln(1e9) = 9 ln 10 = 20.723266
    assert kl_divergence({"A": 1}, {"B": 1}) == approx(20.723266, abs=1e-5)
    # With 100 counts each: q'(A) = s / (100 + 2s) = 1e-11, KL ~ ln(1e11) = 25.328436. The published code smooths
    # counts, which is why counts and probabilities differ here.
    assert kl_divergence({"A": 100}, {"B": 100}) == approx(25.328436, abs=1e-5)
    assert kl_divergence({"A": 1.0}, {"B": 1.0}) == approx(20.723266, abs=1e-5)
    assert kl_divergence({"A": 1}, {"B": 1}, smoothing=0) == math.inf
    # smoothing = 1 (Laplace): p' = (2/3, 1/3), q' = (1/3, 2/3): 2/3 ln 2 + 1/3 ln(1/2) = 1/3 ln 2 = 0.231049
    assert kl_divergence({"A": 1}, {"B": 1}, smoothing=1) == approx(0.231049, abs=1e-6)


def test_kl_of_an_empty_side_is_zero() -> None:
    assert kl_divergence({}, {"A": 3}) == 0.0
    assert kl_divergence({"A": 3}, {"A": 0}) == 0.0


def test_kl_checks_its_input() -> None:
    with pytest.raises(ValidationError) as info:
        kl_divergence({"A": -1}, {"A": 1})
    assert info.value.argument == "p"
    with pytest.raises(ValidationError) as info:
        kl_divergence({"A": 1}, {"A": 1}, smoothing=-1e-9)
    assert info.value.argument == "smoothing"
    with pytest.raises(InvalidTypeError) as info:
        kl_divergence({"A": 1}, [("A", 1)])  # type: ignore[arg-type]
    assert info.value.argument == "q"


def test_accuracy_over_answered_rollouts_with_normalised_comparison() -> None:
    # Answered: "4", "4", "5" -> 2 of 3.
    assert accuracy(["4", None, "4", "5", ""], "4") == approx(2 / 3)
    # \dfrac{1}{2} and \frac12 are the same answer; 0.5 is not the same string.
    assert accuracy([r"\dfrac{1}{2}", r"\frac12", "0.5"], r"\frac{1}{2}") == approx(2 / 3)
    assert accuracy([None, ""], "4") is None
    assert accuracy([], "4") is None
    with pytest.raises(InvalidTypeError) as info:
        accuracy(["4"], None)  # type: ignore[arg-type]
    assert info.value.argument == "correct"
    with pytest.raises(InvalidTypeError) as info:
        accuracy("44", "4")
    assert info.value.argument == "answers"


# --- resampling and forced-answer importance --------------------------------------------------------------------

STEPS: list[list[str | None]] = [["4", "5", "5", "5"], ["4", "4", "5", None], ["4", "4", "4", "4"]]


def test_resampling_importance_accuracy() -> None:
    # acc0 = 1/4, acc1 = 2/3 (the None is left out), acc2 = 1.
    # importance0 = 2/3 - 1/4 = 5/12, importance1 = 1 - 2/3 = 1/3, the last step 0.
    assert resampling_importance(STEPS, correct="4") == approx([5 / 12, 1 / 3, 0.0])


def test_resampling_importance_kl() -> None:
    # Step 0 {4: 1, 5: 3} against step 1 {4: 2, 5: 1}: p = (1/4, 3/4), q = (2/3, 1/3):
    #   0.25 ln(0.375) + 0.75 ln(2.25) = 0.25 (-0.980829) + 0.75 (0.810930) = 0.362990
    # Step 1 {4: 2, 5: 1} against step 2 {4: 4}: q'(5) = s / (4 + 2s) = 2.5e-10, q'(4) ~ 1:
    #   2/3 ln(2/3) + 1/3 ln((1/3) / 2.5e-10) = 2/3 (-0.405465) + 1/3 (21.010948) = 6.733339
    assert resampling_importance(STEPS, metric="kl") == approx([0.362990, 6.733339, 0.0], abs=1e-5)


def test_a_step_without_answers_compares_as_empty() -> None:
    # Step 0 has rollouts but no answer: no evidence, importance 0 (the published accuracy path would use
    # accuracy 0 there and report 1 - 0 = 1).
    steps: list[list[str | None]] = [[None, None], ["4"], ["4"]]
    assert resampling_importance(steps, correct="4") == [0.0, 0.0, 0.0]
    assert resampling_importance(steps, metric="kl") == [0.0, 0.0, 0.0]
    assert resampling_importance([["4"]], correct="4") == [0.0]
    assert resampling_importance([], correct="4") == []


def test_forced_answer_importance() -> None:
    forced: list[list[str | None]] = [["5", "5"], ["4", "5"], ["4", "4"]]
    # Accuracies 0, 1/2, 1: importances 1/2, 1/2, 0.
    assert forced_answer_importance(forced, correct="4") == approx([0.5, 0.5, 0.0])
    # Step 0 {5: 2} against {4: 1, 5: 1}: p'(5) ~ 1, so KL ~ ln(1 / 0.5) = 0.693147.
    # Step 1 {4: 1, 5: 1} against {4: 2}: q'(5) = s / (2 + 2s) = 5e-10:
    #   0.5 ln(0.5) + 0.5 ln(0.5 / 5e-10) = 0.5 (-0.693147) + 0.5 ln(1e9) = -0.346574 + 10.361633 = 10.015059
    assert forced_answer_importance(forced, metric="kl") == approx([0.693147, 10.015059, 0.0], abs=1e-5)


def test_metric_arguments_are_checked() -> None:
    with pytest.raises(ValidationError) as info:
        resampling_importance(STEPS, correct="4", metric="acc")  # type: ignore[arg-type]
    assert info.value.argument == "metric"
    with pytest.raises(ValidationError) as info:
        resampling_importance(STEPS)
    assert info.value.argument == "correct"
    with pytest.raises(InvalidTypeError) as info:
        forced_answer_importance(["4", "5"], correct="4")
    assert info.value.argument == "forced_answers"


# --- counterfactual importance, different trajectories, overdeterminedness -------------------------------------

CHUNKS = ["S0", "S1", "S2"]
FIRST: list[list[str]] = [["S0", "X", "Y", "S0"], ["S1", "S1", "Z"], ["W", "S2"]]
ANSWERS: list[list[str | None]] = [["4", "5", "5", "4"], ["4", "4", "5"], ["4", "4"]]


def test_counterfactual_importance_accuracy() -> None:
    # Step 0: the different rollouts (X, Y) answered 5, 5 -> accuracy 0; step 1, all: 4, 4, 5 -> 2/3.
    #   0 - 2/3 = -2/3 (the published sign: different minus kept).
    # Step 1: the different rollout (Z) answered 5 -> 0; step 2: 4, 4 -> 1. 0 - 1 = -1. The last step 0.
    scores = counterfactual_importance(CHUNKS, FIRST, ANSWERS, similarity=exact, correct="4")
    assert scores == approx([-2 / 3, -1.0, 0.0])


def test_counterfactual_importance_kl() -> None:
    # Step 0: {5: 2} against step 1 {4: 2, 5: 1}: p'(5) ~ 1, q(5) = 1/3: KL ~ ln 3 = 1.098612.
    # Step 1: {5: 1} against step 2 {4: 2}: p'(5) ~ 1, q'(5) = s / (2 + 2s) = 5e-10: ln(2e9) = 21.416413.
    scores = counterfactual_importance(CHUNKS, FIRST, ANSWERS, similarity=exact, metric="kl")
    assert scores == approx([1.098612, 21.416413, 0.0], abs=1e-5)
    # Pooled as the published KL pools: step 0 compares {5: 2} with step 1 plus its similar rollouts (4, 4):
    # {4: 4, 5: 1}, q(5) = 1/5: KL ~ ln 5 = 1.609438.
    pooled = counterfactual_importance(CHUNKS, FIRST, ANSWERS, similarity=exact, metric="kl", pool_similar=True)
    assert pooled[0] == approx(1.609438, abs=1e-5)


def test_counterfactual_importance_without_different_rollouts_is_zero() -> None:
    first = [["S0", "S0"], ["S1"]]
    answers: list[list[str | None]] = [["5", "5"], ["4"]]
    assert counterfactual_importance(["S0", "S1"], first, answers, similarity=exact, correct="4") == [0.0, 0.0]
    # Different rollouts that gave no answer are an empty side too.
    answers = [[None, None], ["4"]]
    assert counterfactual_importance(["S0", "S1"], [["X", "Y"], ["S1"]], answers, similarity=exact, correct="4") == [
        0.0,
        0.0,
    ]


def test_threshold_decides_what_is_different() -> None:
    # lexical: "x is four" vs "x is 4" shares 2 of 3 words: cosine 2/3. Different below 0.8, similar below 0.5.
    chunks = ["x is four", "next step here"]
    first = [["x is 4", "x is 4"], ["next step here"]]
    answers: list[list[str | None]] = [["5", "5"], ["4"]]
    assert counterfactual_importance(chunks, first, answers, correct="4") == approx([-1.0, 0.0])
    assert counterfactual_importance(chunks, first, answers, correct="4", threshold=0.5) == [0.0, 0.0]
    assert different_trajectories_fraction(chunks, first) == [1.0, 0.0]
    assert different_trajectories_fraction(chunks, first, threshold=0.5) == [0.0, 0.0]


def test_different_trajectories_fraction_every_step() -> None:
    # Step 0: X, Y of 4 differ -> 1/2; step 1: Z of 3 -> 1/3; step 2: W of 2 -> 1/2 (the last step counts too).
    assert different_trajectories_fraction(CHUNKS, FIRST, similarity=exact) == approx([0.5, 1 / 3, 0.5])
    assert different_trajectories_fraction(["S0"], [[]], similarity=exact) == [0.0]


def test_overdeterminedness() -> None:
    # Step 0: 3 unique of 4 -> 1 - 3/4 = 1/4; step 1: 2 of 3 -> 1/3; step 2: 2 of 2 -> 0.
    assert overdeterminedness(FIRST) == approx([0.25, 1 / 3, 0.0])
    assert overdeterminedness([[]]) == [0.0]
    # Exact strings: a different case is a different chunk.
    assert overdeterminedness([["Wait.", "wait."]]) == [0.0]


def test_lengths_thresholds_and_types_are_checked() -> None:
    with pytest.raises(ValidationError) as info:
        counterfactual_importance(CHUNKS, FIRST[:2], ANSWERS, correct="4")
    assert info.value.argument == "first_chunks"
    with pytest.raises(ValidationError) as info:
        counterfactual_importance(CHUNKS, FIRST, ANSWERS[:2], correct="4")
    assert info.value.argument == "step_answers"
    with pytest.raises(ValidationError) as info:
        counterfactual_importance(CHUNKS, FIRST, [["4"], ["4", "4", "5"], ["4", "4"]], correct="4")
    assert info.value.argument == "step_answers"
    for threshold in (-0.1, 1.5, math.nan):
        with pytest.raises(ValidationError) as info:
            different_trajectories_fraction(CHUNKS, FIRST, threshold=threshold)
        assert info.value.argument == "threshold"
    with pytest.raises(ValidationError) as info:
        counterfactual_importance(CHUNKS, FIRST, ANSWERS, metric="kl2")  # type: ignore[arg-type]
    assert info.value.argument == "metric"
    with pytest.raises(InvalidTypeError) as info:
        different_trajectories_fraction(CHUNKS, FIRST, similarity="cosine")  # type: ignore[arg-type]
    assert info.value.argument == "similarity"
    with pytest.raises(InvalidTypeError) as info:
        overdeterminedness([["a", 3]])  # type: ignore[list-item]
    assert info.value.argument == "first_chunks"


# --- similarities -----------------------------------------------------------------------------------------------


def test_lexical_similarity() -> None:
    # {the, cat, sat} . {the, cat, ran} = 2; norms sqrt(3) sqrt(3) = 3 -> 2/3.
    assert lexical_similarity("The cat sat.", "the cat ran") == approx(2 / 3)
    # {a: 2, b: 1} . {a: 1, b: 1} = 3; norms sqrt(5) sqrt(2) -> 3 / sqrt(10) = 0.948683.
    assert lexical_similarity("a a b", "a b") == approx(0.948683, abs=1e-6)
    assert lexical_similarity("Wait.", "wait") == 1.0
    assert lexical_similarity("same text", "same text") == 1.0
    assert lexical_similarity("", "") == 1.0
    assert lexical_similarity("...", "?!") == 1.0
    assert lexical_similarity("...", "x") == 0.0
    assert lexical_similarity("one two", "three four") == 0.0
    # 4 shared words of 5: exactly 4/5, so not below the threshold 0.8 (two square roots would give 0.79999...).
    assert lexical_similarity("That is 340 plus 51.", "That is 340 plus 41.") == 0.8


class Embedder:
    """A user's embedding function: fixed vectors per text, recording what it was asked to embed."""

    def __init__(self, vectors: Mapping[str, tuple[float, ...]]) -> None:
        self.vectors = vectors
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        self.calls.append(list(texts))
        return [self.vectors[t] for t in texts]


def test_embedding_similarity_is_a_memoised_cosine() -> None:
    embed = Embedder({"a": (1.0, 0.0), "b": (1.0, 1.0), "c": (-1.0, 0.0), "z": (0.0, 0.0)})
    similarity = embedding_similarity(embed)
    # (1, 0) . (1, 1) = 1; norms 1 and sqrt(2) -> 1 / sqrt(2) = 0.707107.
    assert similarity("a", "b") == approx(0.707107, abs=1e-6)
    assert similarity("b", "a") == approx(0.707107, abs=1e-6)
    assert similarity("a", "c") == approx(-1.0)
    assert similarity("a", "z") == 0.0
    assert embed.calls == [["a", "b"], ["c"], ["z"]]


def test_the_metrics_embed_every_text_of_a_call_in_one_batch() -> None:
    vectors = {"S0": (1.0, 0.0), "S1": (0.0, 1.0), "T0": (1.0, 0.1), "T1": (1.0, 0.0)}
    embed = Embedder(vectors)
    similarity = embedding_similarity(embed)
    first = [["T0", "T1"], ["T1"]]
    answers: list[list[str | None]] = [["5", "4"], ["4"]]
    # Step 0: S0 . T0 = 1 / sqrt(1.01) = 0.995 and S0 . T1 = 1: both similar; step 1: S1 . T1 = 0, different.
    assert different_trajectories_fraction(["S0", "S1"], first, similarity=similarity) == [0.0, 1.0]
    assert counterfactual_importance(["S0", "S1"], first, answers, similarity=similarity, correct="4") == [0.0, 0.0]
    assert embed.calls == [["S0", "S1", "T0", "T1"]]


def test_an_embedder_must_give_one_vector_per_text() -> None:
    similarity = embedding_similarity(lambda texts: [(1.0,)])
    with pytest.raises(ValidationError) as info:
        similarity("a", "b")
    assert info.value.argument == "embed"
    with pytest.raises(InvalidTypeError) as info:
        embedding_similarity("all-MiniLM-L6-v2")  # type: ignore[arg-type]
    assert info.value.argument == "embed"


# --- the docs -----------------------------------------------------------------------------------------------------


def test_the_worked_example_in_docs_prints_what_its_comments_say() -> None:
    """docs/research-metrics.md's example runs as written; each print is followed by its output as comments."""
    import contextlib
    import io
    import re

    code = docs_block("research-metrics.md")
    expected = []
    after_print = False
    for line in code.splitlines():
        stripped = line.strip()
        if after_print and stripped.startswith("# "):
            expected.append(re.sub(r"\s+<- .*$", "", stripped[2:]))
            continue
        after_print = "print(" in stripped
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/research-metrics.md", "exec"), {"__name__": "example"})
    assert out.getvalue().splitlines() == expected
    assert len(expected) == 9
