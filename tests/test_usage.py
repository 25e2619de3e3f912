"""Usage and cost arithmetic: totals from samples, prices per model, and the dry-run estimate, by hand."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from _helpers import MakeClient
from fw_rollouts import FwResponse, FwRollouts, InvalidTypeError, Usage, ValidationError
from fw_rollouts._usage import (
    Budgets,
    ItemEstimate,
    Prices,
    PriceTable,
    UsageTotals,
    estimate,
    price_table,
)
from fw_rollouts.testing import FireworksSimulator


def fetched(seed: int, index: int, prompt: int, generated: int, cached: int | None = None, rid: str = "") -> FwResponse:
    return FwResponse(full="x", seed=seed, index=index, prompt="p", response_id=rid,
                      usage=Usage(prompt, generated, prompt + generated, cached))  # fmt: skip


# -- totals ---------------------------------------------------------------------------------------------------------


def test_totals_add_field_by_field() -> None:
    a = UsageTotals(1, 2, 3, 40, 10, 50)
    b = UsageTotals(requests=4, samples=5, prompt_tokens=6, generated_tokens=7)
    assert a + b == UsageTotals(5, 7, 3, 46, 10, 57)
    assert a + UsageTotals() == a and sum([a, b], UsageTotals()) == a + b
    assert (a.uncached_prompt_tokens, a.total_tokens) == (30, 90)
    assert a.to_dict() == {"requests": 1, "samples": 2, "cached_samples": 3, "prompt_tokens": 40,
                           "cached_prompt_tokens": 10, "generated_tokens": 50}  # fmt: skip
    with pytest.raises(ValidationError) as info:
        UsageTotals(prompt_tokens=-1)
    assert info.value.argument == "prompt_tokens"
    with pytest.raises(InvalidTypeError):
        UsageTotals(requests=1.5)  # type: ignore[arg-type]


def test_the_prompt_counts_once_per_request_and_cache_hits_apart() -> None:
    samples = [
        # One request of 3 choices (samples_per_request=3): prompt 100 (20 cached) once, 7 + 9 + 11 generated.
        fetched(10, 0, 100, 7, 20, rid="a"), fetched(11, 1, 100, 9, 20, rid="a"), fetched(12, 2, 100, 11, 20, rid="a"),
        # Two requests of one choice, no response id: told apart by prompt and request seed (seed - index).
        fetched(13, 0, 100, 5), fetched(14, 0, 100, 6, 100),
        # A cache hit: counted apart, no tokens.
        FwResponse(full="y", seed=15, cached=True, usage=Usage(100, 50, 150, None)),
    ]  # fmt: skip
    totals = UsageTotals.of_samples(samples)
    assert totals == UsageTotals(requests=3, samples=5, cached_samples=1, prompt_tokens=300,
                                 cached_prompt_tokens=120, generated_tokens=7 + 9 + 11 + 5 + 6)  # fmt: skip
    assert UsageTotals.of_samples(samples, requests=4).requests == 4  # the caller's count (a retry) wins
    # Without response ids the choices of one request still share its request seed.
    split = [fetched(20, 0, 10, 1), fetched(21, 1, 10, 2), fetched(22, 0, 10, 3)]
    assert UsageTotals.of_samples(split) == UsageTotals(2, 3, 0, 20, 0, 6)
    assert UsageTotals.of_samples([]) == UsageTotals()


def test_totals_of_real_samples_match_the_requests_sent(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async def main() -> tuple[FwRollouts, FwRollouts]:
        async with make_client(max_tokens=8, samples_per_request=3) as client:
            first = await client.generate("Once upon a time", 6, seed=0)
            again = await client.generate("Once upon a time", 7, seed=0)  # 6 hits, one new request of 3
            return first, again

    first, again = asyncio.run(main())
    assert len(sim.requests) == 3
    prompt = first[0].usage.prompt_tokens
    totals = UsageTotals.of_samples(first)
    assert totals.requests == 2 and totals.samples == 6 and totals.prompt_tokens == 2 * prompt
    assert totals.generated_tokens == sum(len(r.logprobs or ()) - (r.logprobs.num_prompt_tokens if r.logprobs else 0)
                                          for r in first)  # fmt: skip
    top_up = UsageTotals.of_samples(again)
    assert (top_up.requests, top_up.samples, top_up.cached_samples, top_up.prompt_tokens) == (1, 1, 6, prompt)


# -- prices ---------------------------------------------------------------------------------------------------------


def test_cost_by_hand() -> None:
    totals = UsageTotals(requests=3, prompt_tokens=2_000_000, cached_prompt_tokens=500_000, generated_tokens=250_000)
    # 1.5M uncached at $0.90, 0.5M cached at $0.45, 0.25M generated at $2.00 = 1.35 + 0.225 + 0.5
    assert Prices(prompt=0.9, generated=2.0, cached_prompt=0.45).cost(totals) == pytest.approx(2.075)
    # No cached price: cached prompt tokens cost the prompt price: 2M at $0.90 + 0.5
    assert Prices(prompt=0.9, generated=2.0).cost(totals) == pytest.approx(2.3)
    assert Prices(0, 0).cost(totals) == 0.0


def test_a_price_table_looks_models_up_then_falls_back_to_its_default() -> None:
    small, big, other = Prices(0.1, 0.1), Prices(0.9, 0.9, 0.45), Prices(1.0, 3.0)
    table = PriceTable({"deepseek-r1-distill-qwen-1p5b": small, "accounts/fireworks/models/big": big}, default=other)
    million = UsageTotals(prompt_tokens=1_000_000, generated_tokens=1_000_000)
    assert table.cost(million, "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b") == pytest.approx(0.2)
    assert table.cost(million, "accounts/fireworks/models/big") == pytest.approx(1.8)
    assert table.cost(million, "unlisted") == pytest.approx(4.0)
    without_default = PriceTable({"big": big})
    assert without_default.get("small") is None
    with pytest.raises(ValidationError) as info:
        without_default.cost(million, "small")
    assert info.value.argument == "model" and "big" in str(info.value) and "default" in str(info.value)
    assert price_table(None) is None and price_table(table) is table
    assert price_table({"big": big}) == without_default and price_table(other) == PriceTable(default=other)


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: Prices(prompt=-1, generated=0), "prompt"),
        (lambda: Prices(prompt=0, generated=math.inf), "generated"),
        (lambda: Prices(prompt=0, generated=0, cached_prompt=math.nan), "cached_prompt"),
        (lambda: Prices(prompt="0.9", generated=0), "prompt"),  # type: ignore[arg-type]
        (lambda: PriceTable({"m": (0.9, 0.9)}), "prices['m']"),  # type: ignore[dict-item]
        (lambda: PriceTable({"": Prices(0, 0)}), "prices"),
        (lambda: price_table([Prices(0, 0)]), "prices"),
        (lambda: Budgets(requests_per_minute=0), "requests_per_minute"),
        (lambda: Budgets(tokens_per_minute=-5), "tokens_per_minute"),
        (lambda: Budgets(generated_tokens_per_minute=True), "generated_tokens_per_minute"),
        (lambda: estimate([(10, 2, 8, 1, 3)]), "items[0].cached"),
        (lambda: estimate([(10, 2, 8), (10, 2, 8, 0)]), "items[1].samples_per_request"),
        (lambda: estimate([(10, 2, 0)]), "items[0].max_tokens"),
        (lambda: estimate([(-1, 2, 8)]), "items[0].prompt_tokens"),
        (lambda: estimate([(10, 6, 8, 3, 0, 1)]), "items[0].requests"),
        (lambda: estimate(["prompt"]), "items[0]"),  # type: ignore[list-item]
        (lambda: estimate([(10, 2, 8)], prices={"a": Prices(1, 1)}, model="b"), "model"),
        (lambda: estimate([(10, 2, 8)], budgets={"requests_per_minute": 5}), "budgets"),  # type: ignore[arg-type]
    ],
)
def test_bad_values_name_their_argument(build: Any, argument: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert info.value.argument == argument


# -- the estimate ---------------------------------------------------------------------------------------------------


def test_an_estimate_by_hand() -> None:
    items = [
        ItemEstimate(prompt_tokens=100, n_samples=10, max_tokens=50),  # 10 requests of 1
        ItemEstimate(prompt_tokens=400, n_samples=7, max_tokens=20, samples_per_request=3),  # 3 requests of 3
        ItemEstimate(prompt_tokens=50, n_samples=4, max_tokens=None, cached=4),  # all cached: nothing to send
    ]
    plan = estimate(items, model="m", prices=Prices(prompt=1.0, generated=10.0))
    assert (plan.requests, plan.samples, plan.cached_samples) == (13, 17, 4)
    assert plan.prompt_tokens == 10 * 100 + 3 * 400  # once per request
    assert plan.generated_tokens == 10 * 50 + 9 * 20  # every choice asked for, the 2 extra of the last request too
    assert plan.dollars == pytest.approx((2_200 * 1.0 + 680 * 10.0) / 1e6)
    assert plan.minutes is None and plan.binding is None and plan.minutes_by_budget == {}
    assert plan.as_totals() == UsageTotals(13, 17, 4, 2_200, 0, 680) and plan.total_tokens == 2_880


def test_the_binding_budget_sets_the_minutes() -> None:
    items = [(100, 10, 50), (400, 7, 20, 3)]  # as above: 19 choices, prompt per choice 1000 + 3600, generated 680
    budgets = Budgets(requests_per_minute=60, prompt_tokens_per_minute=2_300, generated_tokens_per_minute=1_000,
                      tokens_per_minute=10_000)  # fmt: skip
    plan = estimate(items, budgets=budgets)
    assert plan.minutes_by_budget == pytest.approx({
        "requests_per_minute": 19 / 60, "prompt_tokens_per_minute": 4_600 / 2_300,
        "generated_tokens_per_minute": 680 / 1_000, "tokens_per_minute": 5_280 / 10_000,
    })  # fmt: skip
    assert plan.minutes == pytest.approx(2.0) and plan.binding == "prompt_tokens_per_minute"
    only_requests = estimate(items, budgets=Budgets(requests_per_minute=6))
    assert only_requests.minutes == pytest.approx(19 / 6) and only_requests.binding == "requests_per_minute"
    total = estimate(items, budgets=Budgets(generated_tokens_per_minute=1_000, tokens_per_minute=1_000))
    assert total.binding == "tokens_per_minute" and total.minutes == pytest.approx(5.28)
    unlimited = estimate(items, budgets=Budgets())
    assert unlimited.minutes is None and unlimited.binding is None
    nothing = estimate([(100, 3, 8, 1, 3)], budgets=Budgets(requests_per_minute=10))
    assert (nothing.requests, nothing.minutes, nothing.binding) == (0, 0.0, None)


def test_requests_of_a_top_up() -> None:
    # 10 samples, 4 per request, 5 cached: at most min(5 missing, ceil(10 / 4) = 3) requests, unless told.
    assert estimate([(10, 10, 8, 4, 5)]).requests == 3
    assert estimate([(10, 10, 8, 4, 5)]).generated_tokens == 3 * 4 * 8
    told = estimate([ItemEstimate(10, 10, 8, samples_per_request=4, cached=5, requests=2)])
    assert (told.requests, told.prompt_tokens, told.generated_tokens) == (2, 20, 2 * 4 * 8)
    assert estimate([(10, 10, 8, 1, 9)]).requests == 1
