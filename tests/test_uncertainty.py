"""Uncertainty from logprobs (fw_rollouts._uncertainty and the Logprobs methods over it), on hand-computed cases."""

from __future__ import annotations

import asyncio
import math

import pytest

from _helpers import MakeClient
from fw_rollouts import FwRollouts, Logprobs, ValidationError, semantic_entropy
from fw_rollouts._echo import prompt_part
from fw_rollouts._uncertainty import (
    mean_logprob,
    rank,
    requested_alternatives,
    residual_mass,
    sum_logprob,
    surprisal,
    topk_entropy,
)

LN2 = math.log(2)
HALF, QUARTER, EIGHTH = math.log(0.5), math.log(0.25), math.log(0.125)


class TestPerToken:
    def test_topk_entropy_is_the_partial_sum_over_the_returned_alternatives(self) -> None:
        # -(1/2 ln 1/2 + 1/4 ln 1/4) = ln 2 / 2 + ln 2 / 2 = ln 2; the 1/4 left out is not counted.
        assert topk_entropy({"a": HALF, "b": QUARTER}) == pytest.approx(LN2, abs=1e-15)
        # -(1/2 ln 1/2 + 1/4 ln 1/4 + 1/8 ln 1/8) = ln2 (1/2 + 1/2 + 3/8)
        assert topk_entropy({"a": HALF, "b": QUARTER, "c": EIGHTH}) == pytest.approx(LN2 * 11 / 8, abs=1e-15)
        assert topk_entropy({"a": 0.0}) == 0.0

    def test_residual_mass_is_what_the_alternatives_leave_out(self) -> None:
        assert residual_mass({"a": HALF, "b": QUARTER}) == pytest.approx(0.25, abs=1e-15)
        assert residual_mass({"a": HALF, "b": QUARTER, "c": EIGHTH}) == pytest.approx(0.125, abs=1e-15)

    def test_float32_rounding_above_one_is_clipped_not_negative(self) -> None:
        # A near-certain token's logprob may come back a hair above 0 (see _columns.LOGPROB_TOLERANCE).
        assert residual_mass({"a": 6e-5}) == 0.0
        assert topk_entropy({"a": 6e-5}) == 0.0

    def test_no_alternatives_is_none_not_zero(self) -> None:
        for f in (topk_entropy, residual_mass):
            assert f(None) is None and f({}) is None

    def test_surprisal(self) -> None:
        assert surprisal(-2.5) == 2.5 and surprisal(None) is None and surprisal(0.0) == 0.0

    def test_rank_counts_the_more_likely_alternatives(self) -> None:
        top = {"a": -0.1, "b": -1.0, "c": -2.0}
        assert [rank(t, top) for t in "abc"] == [0, 1, 2]
        assert rank("z", top) is None and rank("a", None) is None
        assert rank("b", {"a": -1.0, "b": -1.0}) == 0  # a tie shares the better rank

    def test_rank_beyond_the_top_k_is_none(self) -> None:
        # The legacy format lists the chosen token even outside the top k: "x" was added to a top 2.
        top = {"a": -0.5, "b": -1.0, "x": -7.0}
        assert rank("x", top, k=2) is None
        assert rank("x", top, k=3) == 2 and rank("b", top, k=2) == 1

    def test_requested_alternatives_is_the_fewest_listed(self) -> None:
        five = {f"t{i}": -float(i) for i in range(5)}
        assert requested_alternatives([None, {**five, "x": -9.0}, five]) == 5
        assert requested_alternatives([None, {}]) is None

    def test_requested_alternatives_from_the_chosen_tokens(self) -> None:
        five = {f"t{i}": -float(i) for i in range(5)}
        four = {f"t{i}": -float(i) for i in range(4)}  # two tokens spelled alike share a key: one fewer listed
        # "x" was added as a sixth; "t1" is inside its five, so nothing was added there: five were asked for.
        assert requested_alternatives([None, {**five, "x": -9.0}, five, four], [" ", "x", "t1", "t0"]) == 5
        # The fewest-listed rule alone reads the one with a shared key: one too few.
        assert requested_alternatives([{**five, "x": -9.0}, five, four]) == 4
        # A token absent from its alternatives (the content format adds none) shows the count as well.
        assert requested_alternatives([four, {**five, "x": -9.0}], ["zz", "x"]) == 4
        # Every chosen token the least likely of its entries: nothing tells an added entry from the kth.
        assert requested_alternatives([{**five, "x": -9.0}, {**five, "y": -8.0}], ["x", "y"]) == 6
        assert requested_alternatives([five], ["t4"]) == 5
        assert requested_alternatives([None, {}], ["a", "b"]) is None


def echoed() -> Logprobs:
    """Two prompt positions (the first without a logprob), three generated ones; k = 2 requested."""
    return Logprobs(
        ["<s>", "Q", " a", " b", " c"],
        [None, -1.0, HALF, -3.0, QUARTER],
        [None, {"Q": -1.0, "R": -2.0}, {" a": HALF, " z": QUARTER}, {" y": -0.5, " w": -1.5, " b": -3.0},
         {" c": QUARTER, " d": QUARTER}],
        num_prompt_tokens=2, prompt_length=2, echo=True,
    )  # fmt: skip


class TestLogprobsMethods:
    def test_per_position_lists(self) -> None:
        lp = echoed()
        assert lp.surprisal() == [None, 1.0, -HALF, 3.0, -QUARTER]
        assert lp.topk_entropy()[0] is None and lp.topk_entropy()[2] == pytest.approx(LN2)
        assert lp.residual_mass()[2] == pytest.approx(0.25)
        assert lp.residual_mass()[4] == pytest.approx(0.5)
        # k read off the run (2); " b" was added beyond the top 2; " c" ties " d".
        assert lp.ranks() == [None, 0, 0, None, 0]
        assert lp.ranks(k=3) == [None, 0, 0, 2, 0]

    def test_sample_sums_count_the_generated_tokens_only(self) -> None:
        lp = echoed()
        assert sum_logprob(lp) == pytest.approx(HALF - 3.0 + QUARTER)
        assert mean_logprob(lp) == pytest.approx((HALF - 3.0 + QUARTER) / 3)
        plain = Logprobs(["x", "y"], [-1.0, -2.0])  # no echo: every position was generated
        assert sum_logprob(plain) == -3.0 and mean_logprob(plain) == -1.5
        assert math.isnan(mean_logprob(Logprobs()))

    def test_a_sample_sharing_its_prompt_reads_as_the_whole_run(self, make_client: MakeClient) -> None:
        async def main() -> FwRollouts:
            async with make_client(max_tokens=12, temperature=1.0) as client:
                return await client.generate("Share my prompt", 3, seed=1)

        rollouts = asyncio.run(main())
        shared = [r for r in rollouts if prompt_part(r) is not None]
        assert shared, "the samples of one prompt share its echoed part"
        for r in shared:
            lp = r.logprobs
            assert lp is not None
            whole = Logprobs(
                lp.tokens, lp.token_logprobs, lp.top_logprobs, lp.text_offset, lp.token_ids,
                num_prompt_tokens=lp.num_prompt_tokens, prompt_length=lp.prompt_length, echo=True,
            )  # fmt: skip
            for name in ("topk_entropy", "residual_mass", "surprisal", "ranks"):
                assert getattr(lp, name)() == getattr(whole, name)(), name
            assert len(lp.topk_entropy()) == len(lp) and lp.topk_entropy()[0] is None
            assert sum_logprob(lp) == lp.get_generation_logprobs().sum() != lp.sum()


class TestSemanticEntropy:
    def test_frequency_form(self) -> None:
        # jlko's docstring example: clusters [0, 1, 2, 1] -> p = [1/4, 2/4, 1/4]: 2 (1/4 ln 4) + 1/2 ln 2 = 1.5 ln 2.
        assert semantic_entropy([0, 1, 2, 1]) == pytest.approx(1.5 * LN2)
        assert semantic_entropy(["391", "392", "x", "392"]) == pytest.approx(1.5 * LN2)  # any hashable ids
        assert semantic_entropy(["a", "a", "a"]) == 0.0
        assert semantic_entropy(list(range(4))) == pytest.approx(math.log(4))

    def test_likelihood_weighted_form(self) -> None:
        # Masses 0.2 + 0.2 = 0.4 and 0.6: -(0.4 ln 0.4 + 0.6 ln 0.6).
        expected = -(0.4 * math.log(0.4) + 0.6 * math.log(0.6))
        lls = [math.log(0.2), math.log(0.2), math.log(0.6)]
        assert semantic_entropy([0, 0, 1], lls) == pytest.approx(expected)
        # Normalised over the samples: sequence log-likelihoods far below 0 give the same masses.
        assert semantic_entropy(["x", "x", "y"], [v - 300 for v in lls]) == pytest.approx(expected)
        # It differs from the frequency form, which sees 2/3 and 1/3.
        assert semantic_entropy([0, 0, 1]) == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))

    def test_bad_input_names_the_argument(self) -> None:
        with pytest.raises(ValidationError, match="cluster_ids"):
            semantic_entropy([])
        with pytest.raises(ValidationError, match="log_likelihoods"):
            semantic_entropy([0, 1], [-1.0])
        with pytest.raises(ValidationError, match="log_likelihoods"):
            semantic_entropy([0, 1], [-1.0, math.nan])
