"""Usage and cost arithmetic: running totals, a price table, and the dry-run estimate of a study (pure, no I/O).

How tokens are counted, so that an estimate and the totals of the run it estimates compare:

- A request's ``usage`` counts its prompt once, however many choices it asks for; each sample's
  :class:`~fw_rollouts.Usage` repeats that prompt count and carries its own generated count
  (``_parsing._choice_usage``). :meth:`UsageTotals.of_samples` therefore counts the prompt (and
  its cached part) once per request, and the generated tokens once per sample.
- A sample served from the local cache cost nothing this time: it is counted apart
  (``cached_samples``), its tokens not at all.
- The service's rate limits count otherwise: a request with ``n`` choices counts as ``n``
  requests, and its prompt once per choice (as the client's ``Limiter`` charges it). The
  estimate's minutes follow that count; its token figures follow ``usage``'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, NamedTuple

from ._exceptions import InvalidTypeError, ValidationError
from ._models import FwResponse
from ._ratelimit import _DEFAULT_MAX_TOKENS

__all__ = [
    "BUDGETS",
    "Budgets",
    "ItemEstimate",
    "PriceTable",
    "Prices",
    "StudyEstimate",
    "UsageTotals",
    "estimate",
    "price_table",
]

_MILLION: Final = 1_000_000
BUDGETS: Final = ("requests_per_minute", "prompt_tokens_per_minute", "generated_tokens_per_minute",
                  "tokens_per_minute")  # fmt: skip
"""The budgets an estimate knows, in the order a tie between them is reported."""


def _count(argument: str, value: Any, *, least: int = 0) -> int:
    if type(value) is not int:
        raise InvalidTypeError(argument, value, f"an integer of at least {least}")
    if value < least:
        raise ValidationError(argument, value, f"an integer of at least {least}")
    return value


def _rate(argument: str, value: Any, what: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(argument, value, what)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValidationError(argument, value, what)
    return float(value)


# -- running totals -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """What a call, an item or a client spent: requests and samples, and the tokens ``usage`` reported.

    Add two with ``+``. Build one from samples with :meth:`of_samples`.
    """

    requests: int = 0
    """Requests sent (as the caller counted them: retries included if it counts them)."""
    samples: int = 0
    """Samples fetched from the service."""
    cached_samples: int = 0
    """Samples served from the local cache (no request, no tokens)."""
    prompt_tokens: int = 0
    """Prompt tokens of the requests, counted once per request (the cached part included)."""
    cached_prompt_tokens: int = 0
    """The part of ``prompt_tokens`` the service served from its prompt cache."""
    generated_tokens: int = 0
    """Tokens generated, over every sample fetched."""

    def __post_init__(self) -> None:
        for field in fields(self):
            _count(field.name, getattr(self, field.name))

    def __add__(self, other: UsageTotals) -> UsageTotals:
        if not isinstance(other, UsageTotals):
            return NotImplemented
        return UsageTotals(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def uncached_prompt_tokens(self) -> int:
        """Prompt tokens the service did not have in its prompt cache."""
        return self.prompt_tokens - self.cached_prompt_tokens

    @property
    def total_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return self.prompt_tokens + self.generated_tokens

    def to_dict(self) -> dict[str, int]:
        """Plain-dict form."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def of_samples(cls, samples: Iterable[FwResponse], *, requests: int | None = None) -> UsageTotals:
        """The totals of ``samples`` (any iterable: an ``FwRollouts``, a list, a stream).

        Samples with ``cached`` set count in ``cached_samples`` only. The others count their
        generated tokens each, and the prompt (and cached prompt) tokens once per request: the
        choices of one request share its ``response_id`` (or, without one, its prompt and request
        seed, ``seed - index``). ``requests`` is what the caller counted; None counts the distinct
        requests the samples came from.
        """
        fetched = cached = prompt = cached_prompt = generated = 0
        seen: set[object] = set()
        for sample in samples:
            if sample.cached:
                cached += 1
                continue
            fetched += 1
            usage = sample.usage
            generated += usage.completion_tokens
            key: object = sample.response_id or (sample.prompt, (sample.seed or 0) - sample.index)
            if key not in seen:
                seen.add(key)
                prompt += usage.prompt_tokens
                cached_prompt += usage.cached_tokens or 0
        sent = len(seen) if requests is None else _count("requests", requests)
        return cls(sent, fetched, cached, prompt, min(cached_prompt, prompt), generated)


# -- prices ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prices:
    """Dollars per million tokens for one model: prompt, generated, and cached prompt (None: as prompt)."""

    prompt: float
    """$ per million prompt tokens not served from the service's prompt cache."""
    generated: float
    """$ per million generated tokens."""
    cached_prompt: float | None = None
    """$ per million prompt tokens served from the prompt cache (None: the ``prompt`` price)."""

    def __post_init__(self) -> None:
        what = "dollars per million tokens: a finite number of at least 0"
        object.__setattr__(self, "prompt", _rate("prompt", self.prompt, what, positive=False))
        object.__setattr__(self, "generated", _rate("generated", self.generated, what, positive=False))
        if self.cached_prompt is not None:
            cached = _rate("cached_prompt", self.cached_prompt, what + " (or None: the prompt price)", positive=False)
            object.__setattr__(self, "cached_prompt", cached)

    def cost(self, totals: UsageTotals) -> float:
        """The dollars ``totals`` cost at these prices."""
        cached_price = self.prompt if self.cached_prompt is None else self.cached_prompt
        return (
            totals.uncached_prompt_tokens * self.prompt
            + totals.cached_prompt_tokens * cached_price
            + totals.generated_tokens * self.generated
        ) / _MILLION


class PriceTable:
    """Prices per model, with an optional default for models it does not list.

    A model is looked up by its exact name, then by its last path segment (so an entry for
    ``"deepseek-r1-distill-qwen-1p5b"`` prices ``"accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"``),
    then falls back to ``default``.
    """

    __slots__ = ("_default", "_prices")

    def __init__(self, prices: Mapping[str, Prices] | None = None, *, default: Prices | None = None) -> None:
        table = dict(prices or {})
        for model, entry in table.items():
            if not isinstance(model, str) or not model:
                raise InvalidTypeError("prices", model, "a mapping of model names (non-empty strings) to Prices")
            if not isinstance(entry, Prices):
                raise InvalidTypeError(f"prices[{model!r}]", entry, "a Prices(prompt=, generated=, cached_prompt=)")
        if default is not None and not isinstance(default, Prices):
            raise InvalidTypeError("default", default, "a Prices(prompt=, generated=, cached_prompt=), or None")
        self._prices = table
        self._default = default

    def get(self, model: str) -> Prices | None:
        """The prices of ``model`` (None if neither listed nor covered by a default)."""
        found = self._prices.get(model)
        if found is None:
            found = self._prices.get(model.rsplit("/", 1)[-1])
        return self._default if found is None else found

    def cost(self, totals: UsageTotals, model: str) -> float:
        """The dollars ``totals`` cost on ``model``; ValidationError naming ``model`` if it has no price."""
        prices = self.get(model)
        if prices is None:
            listed = ", ".join(sorted(self._prices)) or "none"
            raise ValidationError("model", model, f"a model of the price table (listed: {listed}), or set a default")
        return prices.cost(totals)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PriceTable):
            return NotImplemented
        return (self._prices, self._default) == (other._prices, other._default)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PriceTable({self._prices!r}, default={self._default!r})"


def price_table(value: Any, argument: str = "prices") -> PriceTable | None:
    """``value`` as a :class:`PriceTable`: one already, a mapping model -> :class:`Prices`, one
    :class:`Prices` for every model, or None (no prices). Anything else: an error naming ``argument``."""
    if value is None or isinstance(value, PriceTable):
        return value
    if isinstance(value, Prices):
        return PriceTable(default=value)
    if isinstance(value, Mapping):
        return PriceTable(value)
    raise InvalidTypeError(argument, value, "a PriceTable, a mapping of model names to Prices, a Prices, or None")


# -- the dry run ----------------------------------------------------------------------------------------------------


class ItemEstimate(NamedTuple):
    """What the estimate needs of one item of a study."""

    prompt_tokens: int
    """The prompt's tokens (an estimate is fine)."""
    n_samples: int
    """Samples wanted."""
    max_tokens: int | None
    """The most a sample may generate (None: the completions endpoint's default, 16)."""
    samples_per_request: int = 1
    """Choices per request (``n``)."""
    cached: int = 0
    """Samples already in the local cache (not requested)."""
    requests: int | None = None
    """Requests the missing samples take, when the caller knows (``Plan.requests``); None: an upper bound,
    each missing sample in a request of its own but never more than the item's ``ceil(n_samples / k)``."""


@dataclass(frozen=True, slots=True)
class Budgets:
    """Rate limits to estimate under, each per minute (None: unlimited)."""

    requests_per_minute: float | None = None
    """Requests per minute, a request of ``n`` choices counting ``n`` (as Fireworks counts them)."""
    prompt_tokens_per_minute: float | None = None
    """Prompt tokens per minute, the prompt counted once per choice."""
    generated_tokens_per_minute: float | None = None
    """Generated tokens per minute (``max_tokens`` per choice reserved)."""
    tokens_per_minute: float | None = None
    """Prompt plus generated tokens per minute."""

    def __post_init__(self) -> None:
        for name in BUDGETS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(
                    self, name, _rate(name, value, "a positive number per minute, or None", positive=True)
                )


@dataclass(frozen=True, slots=True)
class StudyEstimate:
    """A study's cost before anything is sent: requests, tokens (an upper bound), dollars and minutes."""

    requests: int
    """Requests to send."""
    samples: int
    """Samples to fetch (wanted and not in the local cache)."""
    cached_samples: int
    """Samples the local cache already holds."""
    prompt_tokens: int
    """Prompt tokens sent, once per request (as ``usage`` reports them)."""
    generated_tokens: int
    """The most the requests can generate: ``max_tokens`` per choice, every choice asked for."""
    dollars: float | None
    """What that costs at the price table's prices (None without prices). Counts no prompt as cached."""
    minutes: float | None
    """How long the budgets let it take at least (None: no budget set); the largest of ``minutes_by_budget``."""
    binding: str | None
    """The budget that sets ``minutes`` (a name of :data:`BUDGETS`; None without budgets or work)."""
    minutes_by_budget: Mapping[str, float]
    """Minutes under each budget that is set, alone."""

    @property
    def total_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return self.prompt_tokens + self.generated_tokens

    def as_totals(self) -> UsageTotals:
        """The estimate as :class:`UsageTotals` (what a run within it would at most report)."""
        return UsageTotals(self.requests, self.samples, self.cached_samples, self.prompt_tokens, 0,
                           self.generated_tokens)  # fmt: skip


def _item(number: int, item: Any) -> tuple[int, int, int, int, int, int]:
    """``(prompt tokens, samples to fetch, cached, requests, choices per request, max tokens)`` of one item."""
    where = f"items[{number}]"
    if not isinstance(item, ItemEstimate):
        if not isinstance(item, tuple):
            raise InvalidTypeError(where, item, "an ItemEstimate (prompt_tokens, n_samples, max_tokens, ...)")
        item = ItemEstimate(*item)
    prompt = _count(f"{where}.prompt_tokens", item.prompt_tokens)
    n = _count(f"{where}.n_samples", item.n_samples)
    max_tokens = _DEFAULT_MAX_TOKENS
    if item.max_tokens is not None:
        max_tokens = _count(f"{where}.max_tokens", item.max_tokens, least=1)
    k = _count(f"{where}.samples_per_request", item.samples_per_request, least=1)
    cached = _count(f"{where}.cached", item.cached)
    if cached > n:
        raise ValidationError(f"{where}.cached", cached, f"at most n_samples ({n})")
    missing = n - cached
    if item.requests is None:
        requests = min(missing, -(-n // k))
    else:
        requests = _count(f"{where}.requests", item.requests)
        if requests * k < missing or (missing == 0 and requests):
            raise ValidationError(f"{where}.requests", requests, f"enough requests of {k} for {missing} samples")
    return prompt, missing, cached, requests, k, max_tokens


def estimate(
    items: Iterable[ItemEstimate | tuple[Any, ...]],
    *,
    model: str = "",
    prices: PriceTable | Mapping[str, Prices] | Prices | None = None,
    budgets: Budgets | None = None,
) -> StudyEstimate:
    """Requests, tokens (an upper bound), dollars and minutes of a study, from each item's
    :class:`ItemEstimate` (or a tuple of its fields), before anything is sent.

    ``prices`` prices ``model`` (ValidationError naming ``model`` if the table has no price for
    it); ``budgets`` gives the minutes: each budget's need divided by its rate, the largest
    binding (see the module docstring for how each counts).
    """
    table = price_table(prices)
    if budgets is not None and not isinstance(budgets, Budgets):
        raise InvalidTypeError("budgets", budgets, "a Budgets(...), or None")
    requests = samples = cached = prompt = generated = 0
    choices = choice_prompt = 0  # as the rate limits count: per choice
    for number, item in enumerate(items):
        item_prompt, missing, item_cached, item_requests, k, max_tokens = _item(number, item)
        requests += item_requests
        samples += missing
        cached += item_cached
        prompt += item_requests * item_prompt
        generated += item_requests * k * max_tokens
        choices += item_requests * k
        choice_prompt += item_requests * k * item_prompt
    dollars = None
    if table is not None:
        dollars = table.cost(UsageTotals(requests, samples, cached, prompt, 0, generated), model)
    needs = {
        "requests_per_minute": choices,
        "prompt_tokens_per_minute": choice_prompt,
        "generated_tokens_per_minute": generated,
        "tokens_per_minute": choice_prompt + generated,
    }
    by_budget: dict[str, float] = {}
    if budgets is not None:
        for name in BUDGETS:
            rate = getattr(budgets, name)
            if rate is not None:
                by_budget[name] = needs[name] / rate
    minutes = binding = None
    if by_budget:
        minutes = max(by_budget.values())
        if minutes > 0:
            binding = next(name for name in BUDGETS if by_budget.get(name) == minutes)
    return StudyEstimate(requests, samples, cached, prompt, generated, dollars, minutes, binding, by_budget)
