"""The async core: :class:`AsyncFireworks`, composing the pipeline of one ``generate`` call.

arguments -> validated :class:`Settings` -> prompt rendered with the chat template ->
cache lookup (store) -> budget -> retrying request (transport) -> parsed samples ->
cache write -> results.

The client's configuration (key, URL, timeout, retries, limits, cache) is fixed when it is
made; ``with_options`` makes a sibling that shares whatever did not change. The services a
call uses (``_services``: store, budget, transport, clock) are seams: each can be passed to
the constructor, and each has today's implementation as its default. Fetching the missing
samples is ``_run``'s job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from . import _forks, _next_token
from ._answers import AnswerFunction
from ._budget import Budget, Spent
from ._cache_key import CacheKeyer
from ._chunks import SplitRule
from ._claims import POLL_FIRST, POLL_MAX, Claims
from ._clock import Clock
from ._echo import PromptPart, with_prompt
from ._exceptions import ConfigurationError, FwRolloutsError, InvalidTypeError, ValidationError
from ._forks import Fork
from ._lookup import CacheHits, cached_hits
from ._models import FwResponse, FwRollouts
from ._next_token import TokenDistribution
from ._options import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    OPTIONS,
    check_known,
)
from ._parsing import ResponseSpec
from ._plan import Plan
from ._progress import StudyProgress
from ._prompts import MODEL_ALIASES, RenderedPrompt, id_prompt, model_hint, render_prompt
from ._redact import redactor, remember_secret, scrub_error
from ._run import EchoOnce, Job, SampleRun, Target
from ._scoring import Score, score, score_many
from ._services import SEAMS, Services
from ._settings import Settings
from ._shards import check_shard, shard_header, shard_of
from ._steps import DEFAULT_FORCED_MAX_TOKENS, StepResampling, resample_steps
from ._store import SampleStore
from ._study import Collected, Streamed, StudyItem, coerce_items, is_single_prompt
from ._study_file import StudyWriter, read_samples, study_format
from ._templates import ChatTemplate, template_for_model
from ._transport import Transport
from ._usage import Budgets, ItemEstimate, Prices, PriceTable, StudyEstimate, UsageTotals, estimate, price_table
from ._validators import on_error as check_on_error
from ._validators import positive_integer
from ._verify import DEFAULT_TOLERANCE, LogprobsReport, verify_logprobs
from ._writeback import WriteBehind

if TYPE_CHECKING:
    from typing_extensions import Never

__all__ = ["AsyncFireworks", "Prompt", "SampleStream"]

log = logging.getLogger("fw_rollouts")

Prompt = str | Sequence[Mapping[str, Any]]

AFFINITY_HEADER = "x-session-affinity"
"""The header that sends samples of one prompt to one replica, which then serves them from its prompt cache."""

_LOOKUP_CHUNK = 64
"""Items whose cache lookups go to the store together."""

_PARTS_KEPT = 256
"""Prompt parts a study keeps at once, for later items of the same prompt."""


def _take_part(response: FwResponse) -> object | None:
    return PromptPart.of(response)


def _attach_part(response: FwResponse, part: object) -> FwResponse:
    assert isinstance(part, PromptPart)
    return with_prompt(response, part)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One item of a call or study, validated and rendered: everything but the cache lookup."""

    index: int
    prompt: Prompt
    settings: Settings
    rendered: RenderedPrompt
    spec: ResponseSpec
    plan: Plan
    seeds: tuple[int, ...]
    keyer: CacheKeyer | None
    affinity: str | None
    prompt_id: str | None
    """The prompt's identity (its prompt-part cache key) when its echo is paid once, else None."""

    def cache_key(self, seed: int) -> str:
        assert self.keyer is not None
        return self.plan.key(self.keyer, seed)


class AsyncFireworks:
    """Async client that samples completions with logprobs from Fireworks (or any
    OpenAI-compatible completions server via ``base_url``).

    Sampling options (``temperature`` ... ``prompt_cache_key``) and the call toggles (``raw``,
    ``chat_template``, ``use_cache``, ``progress_bar``, ...) set defaults that each
    :meth:`generate` call may override. The client's own configuration (``api_key``,
    ``base_url``, ``timeout``, ``max_retries``, ``max_concurrency``, the rate limits and
    ``cache_dir``) is fixed: :meth:`with_options` returns a sibling client with some of it
    changed. ``cache``, ``budget``, ``transport`` and ``clock`` replace the services the
    client uses (a :class:`SampleStore`, :class:`Budget`, :class:`Transport`, :class:`Clock`);
    ``cache="redis://host:port/db"`` makes a :class:`RedisStore` the client owns (closed with it).
    ``budget="redis://host:6379/0"`` shares the client's limits with every process using the same Redis
    (a :class:`RedisBudget` made and closed by the client).

    Use it as ``async with AsyncFireworks(...) as client:`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        /,
        model: str,
        *,
        temperature: float | None = 0.7,
        top_p: float | None = 0.95,
        max_tokens: int | None = 4096,
        top_k: int | None = None,
        min_p: float | None = None,
        presence_penalty: float | None = 0.0,
        frequency_penalty: float | None = 0.0,
        repetition_penalty: float | None = None,
        stop: str | Sequence[str] | None = (),
        logprobs: int | None = 5,
        logprobs_format: str = "legacy",
        echo: bool = True,
        echo_last: int | None = None,
        samples_per_request: int = 1,
        top_logprobs: int | None = None,
        typical_p: float | None = None,
        logit_bias: Mapping[int | str, float] | None = None,
        ignore_eos: bool | None = None,
        context_length_exceeded_behavior: str | None = None,
        mirostat_target: float | None = None,
        mirostat_lr: float | None = None,
        response_format: Mapping[str, Any] | None = None,
        user: str | None = None,
        service_tier: str | None = None,
        prompt_cache_key: str | None = None,
        raw: bool = False,
        chat_template: str | ChatTemplate | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        use_cache: bool = True,
        progress_bar: bool = True,
        echo_once: bool = True,
        session_affinity: bool = True,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        prompt_tokens_per_minute: float | None = None,
        generated_tokens_per_minute: float | None = None,
        cache_dir: str = DEFAULT_CACHE_DIR,
        cache: SampleStore | str | None = None,
        budget: Budget | str | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        **unknown: Never,
    ) -> None:
        given = locals()
        # A misspelt option gets the table's "did you mean"; type checkers refuse it already (Never).
        check_known(unknown, extra=SEAMS)
        # Every option goes through the table (tests hold this signature to it, names and defaults).
        settings = Settings.create(**{option.name: given[option.name] for option in OPTIONS})
        services = Services.build(settings, cache=cache, budget=budget, transport=transport, clock=clock)
        self._init(settings, services)

    def _init(self, settings: Settings, services: Services) -> None:
        remember_secret(settings.api_key)  # for the log filter, which sees records, not clients
        self._settings = settings
        self._services = services
        self._closed = False
        self._usage = UsageTotals()

    # -- public API ----------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The client's validated settings (the defaults of every call)."""
        return self._settings

    @property
    def model(self) -> str:
        """The resolved model id."""
        return self._settings.model

    @property
    def usage(self) -> UsageTotals:
        """Running totals of every call this client made: requests sent (retries included), samples
        fetched and served from the local cache (counted apart), prompt, cached-prompt and generated tokens."""
        return self._usage

    def cost(self, prices: PriceTable | Mapping[str, Prices] | Prices) -> float:
        """Dollars of :attr:`usage` at ``prices`` (per million tokens; see :class:`PriceTable`)."""
        table = price_table(prices)
        if table is None:
            raise ValidationError("prices", prices, "a PriceTable, a mapping of model to Prices, or Prices")
        return table.cost(self._usage, self._settings.model)

    async def estimate(
        self,
        items: Sequence[Any],
        /,
        n_samples: int = 1,
        *,
        seed: int | None = None,
        prices: PriceTable | Mapping[str, Prices] | Prices | None = None,
        **sampling: Any,
    ) -> StudyEstimate:
        """What :meth:`generate_many` of the same arguments would cost, before anything is sent (a dry run).

        Requests, prompt tokens (estimated at four characters per token), generated tokens (an
        upper bound: ``max_tokens`` per sample), dollars at ``prices`` and minutes under the
        client's rate limits (the one that binds is named). Samples already in the cache are
        counted apart and cost nothing; the cache is read, nothing is written or sent.
        """
        self._check_open()
        call = _call_options(sampling, raw=None, use_cache=None, progress_bar=None)
        prepared = self._prepare(
            coerce_items(items), call, n_samples=check_n_samples(n_samples), seed=check_seed(seed), where="items"
        )
        store = self._services.store.get() if any(p.keyer is not None for p in prepared) else None
        estimates = []
        for p in prepared:
            cached = 0
            if store is not None and p.keyer is not None:
                keys = [p.cache_key(s) for s in p.seeds]
                hits = await cached_hits(store, keys, p.seeds, p.rendered.text, p.spec, prompt_key=p.prompt_id)
                cached = len(hits.samples)
                missing = [s for s in p.seeds if s not in hits.samples]
            else:
                missing = list(p.seeds)
            estimates.append(
                ItemEstimate(
                    prompt_tokens=p.rendered.token_estimate(),
                    n_samples=len(p.seeds),
                    max_tokens=p.settings.max_tokens,
                    samples_per_request=p.settings.samples_per_request,
                    cached=cached,
                    requests=len(p.plan.requests(missing)),
                )
            )
        s = self._settings
        budgets = Budgets(
            requests_per_minute=s.requests_per_minute,
            prompt_tokens_per_minute=s.prompt_tokens_per_minute,
            generated_tokens_per_minute=s.generated_tokens_per_minute,
            tokens_per_minute=s.tokens_per_minute,
        )
        return estimate(estimates, model=s.model, prices=prices, budgets=budgets)

    def with_options(
        self,
        *,
        cache: SampleStore | str | None = None,
        budget: Budget | str | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> AsyncFireworks:
        """A sibling client with ``options`` changed (any option, the client's own included).

        It shares with this client every service its changes leave valid: the connection
        pool unless ``api_key``, ``base_url``, ``max_concurrency``, ``connect_timeout`` or
        ``max_response_bytes`` change, the rate budget
        unless the limits change, the cache unless ``cache_dir`` changes. Closing the sibling
        closes only what it made; closing this client closes what they share.
        """
        self._check_open()
        settings = self._settings.replace(**options)
        changed = frozenset(name for name in options if getattr(settings, name) != getattr(self._settings, name))
        services = Services.build(
            settings,
            cache=cache,
            budget=budget,
            transport=transport,
            clock=clock,
            parent=self._services,
            changed=changed,
        )
        sibling = AsyncFireworks.__new__(AsyncFireworks)
        sibling._init(settings, services)
        return sibling

    def render(self, prompt: Prompt, /, *, raw: bool | None = None, **options: Any) -> str:
        """The exact prompt string a :meth:`generate` call with these arguments would send.

        A string is one user message (or, with ``<think>`` in it, a message and the start of
        the model's thought), a list of messages is a conversation, and ``raw=True`` sends a
        string verbatim; ``options`` are the call's overrides (``chat_template=...`` among
        them). Nothing is sent. The research methods build their prompts on this string.
        """
        self._check_open()
        settings = self._settings.for_call(_call_options(options, raw=raw, use_cache=None, progress_bar=None))
        return self._render(prompt, settings).text

    def template_for(self, *, raw: bool | None = None, **options: Any) -> ChatTemplate | None:
        """The chat template a call with these options renders with (None for ``raw=True``)."""
        self._check_open()
        settings = self._settings.for_call(_call_options(options, raw=raw, use_cache=None, progress_bar=None))
        if settings.raw:
            return None
        template = self._template(settings)
        if template is None:
            self._render("x", settings)  # raises the error naming the model and what to pass
        return template

    async def generate(
        self,
        /,
        prompt: Prompt,
        n_samples: int = 1,
        *,
        seed: int | None = None,
        raw: bool | None = None,
        use_cache: bool | None = None,
        progress_bar: bool | None = None,
        **sampling: Any,
    ) -> FwRollouts:
        """Sample ``n_samples`` completions of ``prompt``; sample ``i`` uses seed ``seed + i``.

        ``prompt`` is a string (one user message) or a list of chat messages, rendered
        with the model's chat template; ``raw=True`` sends a string verbatim. Samples
        already in the cache are not requested again. ``sampling`` overrides the client's
        sampling options for this call (``temperature=0.2``, ``max_tokens=64``, ...); the
        client's own configuration cannot change per call (see :meth:`with_options`).

        Raises :class:`FwRolloutsError` subclasses, all before any request for bad
        arguments. If some samples fail for good, an error of the first failed sample's
        class is raised after the others finish, with ``error.rollouts`` holding every
        sample that succeeded (they are cached, so a re-run requests only the missing ones)
        and ``error.errors`` each failure by seed.
        """
        self._check_open()
        call = _call_options(sampling, raw=raw, use_cache=use_cache, progress_bar=progress_bar)
        item = StudyItem(prompt=prompt, n_samples=check_n_samples(n_samples), seed=check_seed(seed))
        (prepared,) = self._prepare([item], call, n_samples=1, seed=0, where=None)
        settings = prepared.settings
        collected = Collected(
            1, StudyProgress(len(prepared.seeds), enabled=settings.progress_bar and len(prepared.seeds) > 1)
        )
        fatal = await self._run_study([prepared], collected)
        rollouts = rollouts_of(
            prepared, collected.results[0], settings, self._services.store if settings.use_cache else None
        )
        errors = collected.errors.get(0, {})
        fatal = fatal or collected.stopped.get(0)
        if errors or fatal is not None:
            # The transport scrubs what it builds; this catches what any layer (or a custom transport)
            # let through, in every field of the error and of each per-seed error it carries.
            raise scrub_error(_failure(errors, fatal, rollouts), redactor(settings.api_key))
        return rollouts

    async def generate_many(
        self,
        items: Sequence[Any],
        /,
        n_samples: int = 1,
        *,
        seed: int | None = None,
        raw: bool | None = None,
        use_cache: bool | None = None,
        progress_bar: bool | None = None,
        on_error: Literal["raise", "return"] = "raise",
        output: str | os.PathLike[str] | None = None,
        shard: tuple[int, int] | None = None,
        **sampling: Any,
    ) -> list[FwRollouts]:
        """Sample every item of a study under one budget and one bar: one :class:`FwRollouts` per item, in order.

        ``items`` are prompts (strings or chat message lists), mappings with a ``prompt`` (or
        ``messages``) and optional ``n_samples``, ``seed``, ``affinity`` and sampling overrides
        (``{"prompt": p, "n_samples": 50, "temperature": 1.0}``), or :class:`StudyItem` s. An
        item's own values override the call's (``n_samples``, ``seed``, ``sampling``), which
        override the client's. Requests of all items are interleaved, so none waits for
        another to finish. Every item is validated before any request is sent.

        A failed item does not lose the others. With ``on_error="raise"`` (the default), once
        every item is done, an error of the first failed item's class is raised whose
        ``error.results`` holds every item's :class:`FwRollouts` (the complete ones and what
        the failed ones got; each one's ``errors`` maps its failed seeds to their errors).
        With ``on_error="return"`` that list is returned instead. Samples that arrived are
        cached either way, so a re-run requests only what is missing.

        ``output`` also writes every sample to a study file as it arrives: JSON Lines for a
        ``.jsonl`` path, Parquet for a ``.parquet`` one (a directory of parts; needs the
        ``fw-rollouts[parquet]`` extra). Re-run with the same ``output`` after an interruption:
        the samples already in the file are read back from it, not requested again (with or
        without the cache), and the rest are appended. :func:`load_study` reads the file back.

        ``shard=(i, N)`` runs shard ``i`` of ``N`` only, for independent processes (a Slurm array, a
        process pool) that share nothing: the items are split by a stable hash of what each sends
        (see :meth:`shard_indices`), and the call returns the :class:`FwRollouts` of its own items, in
        item order (each sample's ``item`` is its index in ``items``). Its ``output`` is that shard's
        study file, resumed like any other; :func:`merge_studies` combines the shards' files into the
        one the whole study writes, and :func:`merge_caches` their caches.
        """
        self._check_open()
        check_on_error(on_error)
        parts = check_shard(shard)
        call = _call_options(sampling, raw=raw, use_cache=use_cache, progress_bar=progress_bar)
        everything = self._prepare(
            coerce_items(items), call, n_samples=check_n_samples(n_samples), seed=check_seed(seed), where="items"
        )
        prepared = everything if parts is None else _in_shard(everything, parts)
        total = sum(len(p.seeds) for p in prepared)
        shown = self._settings.for_call(call).progress_bar if call else self._settings.progress_bar
        fmt = study_format(output) if output is not None else None  # a bad path or a missing extra: before anything
        writer = None
        todo = prepared
        if output is not None:
            header = study_header(everything)
            if parts is not None:
                header = shard_header(header, parts, [p.index for p in prepared])
            writer = await StudyWriter.open(output, header=header, format=fmt)
        try:
            collected = Collected(len(everything), StudyProgress(total, enabled=shown and total > 1), writer)
            if writer is not None and writer.done:
                # Resuming: what the file holds is read back from it, and only the rest is looked up or fetched.
                await _read_back(output, collected)  # type: ignore[arg-type]
                done = writer.done
                todo = [
                    dataclasses.replace(p, seeds=tuple(s for s in p.seeds if (p.index, s) not in done))
                    for p in prepared
                ]
                todo = [p for p in todo if p.seeds]
            fatal = await self._run_study(todo, collected) if todo else None
            if not todo:  # all read back from the file: no run, so its bar and counts end here
                collected.progress.close()  # type: ignore[attr-defined]
                self._usage = self._usage + collected.totals(Spent(0, 0, 0, 0), 0)
        finally:
            if writer is not None:
                await writer.aclose()
        results, failed = _outcomes(prepared, collected, fatal, self._services.store)
        if failed and on_error == "raise":
            error = study_failure(failed, results)
            raise scrub_error(error, redactor(self._settings.api_key))
        return results

    def iter_generate(
        self,
        prompt_or_items: Any,
        /,
        n_samples: int = 1,
        *,
        seed: int | None = None,
        raw: bool | None = None,
        use_cache: bool | None = None,
        progress_bar: bool | None = None,
        shard: tuple[int, int] | None = None,
        **sampling: Any,
    ) -> SampleStream:
        """Each sample of a prompt or of a study's items as it finishes: ``async for r in client.iter_generate(...)``.

        Takes what :meth:`generate` takes (one prompt) or what :meth:`generate_many` takes
        (items), with the same caching and limits. Each :class:`FwResponse` knows its
        ``item`` (index into the items; 0 for one prompt) and its ``seed``. Cache hits come
        first, then samples in the order they arrive. Nothing is kept: memory stays flat
        however many samples pass through, and a consumer slower than the service holds the
        requests back. Breaking out of the loop or cancelling it stops in-flight requests
        (at once inside ``async with client.iter_generate(...) as stream:``, else when the
        loop lets the iterator go); what finished is cached. Arguments are checked, and
        errors raised, at the first iteration, before any request. If samples failed, an
        error of the first failed one's class is raised after the last sample. ``shard=(i, N)``
        yields the samples of shard ``i``'s items only (see :meth:`generate_many`).
        """
        self._check_open()
        parts = check_shard(shard)
        call = _call_options(sampling, raw=raw, use_cache=use_cache, progress_bar=progress_bar)
        single = is_single_prompt(prompt_or_items)
        items = (
            [StudyItem(prompt=prompt_or_items)] if single else coerce_items(prompt_or_items, argument="prompt_or_items")
        )
        prepared = self._prepare(
            items,
            call,
            n_samples=check_n_samples(n_samples),
            seed=check_seed(seed),
            where=None if single else "prompt_or_items",
        )
        return SampleStream(self, prepared if parts is None else _in_shard(prepared, parts), call)

    def shard_indices(
        self,
        items: Sequence[Any],
        /,
        n_samples: int = 1,
        *,
        shard: tuple[int, int],
        seed: int | None = None,
        raw: bool | None = None,
        **sampling: Any,
    ) -> list[int]:
        """The indices in ``items`` of the items :meth:`generate_many` with ``shard=(i, N)`` runs, in order.

        Takes :meth:`generate_many`'s arguments (the split depends on what each item sends). An item's
        shard is the SHA-256 of its output-shaping request body (the prompt as sent, the model, the
        options that shape the output) and its first seed, modulo ``N``: the same on every machine,
        process and Python version, whatever the item's place in the list or its ``n_samples``.
        Identical items are in one shard. Nothing is sent.
        """
        self._check_open()
        parts = check_shard(shard)
        if parts is None:
            raise InvalidTypeError("shard", shard, "a tuple (i, N) of integers, N >= 1 and 0 <= i < N")
        call = _call_options(sampling, raw=raw, use_cache=None, progress_bar=None)
        prepared = self._prepare(
            coerce_items(items), call, n_samples=check_n_samples(n_samples), seed=check_seed(seed), where="items"
        )
        return [p.index for p in _in_shard(prepared, parts)]

    async def resample_steps(
        self,
        /,
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
        """Resample the model's reasoning from every step (Thought Anchors): one :class:`StepResult` per chunk.

        ``reasoning`` (a text, or a sample whose ``.reasoning`` is taken) is split by ``rule`` (see
        :func:`split_reasoning`). For each chunk the model continues its reasoning from the exact text before
        the chunk, ``n_samples`` times; ``after=True`` also continues from the text through it. ``prompt`` is
        what :meth:`generate` takes: it is rendered with the model's template and the reasoning placed where
        the model writes it: after ``<think>`` (R1 distills), as the assistant's own reply (Llama 3.1), in the
        analysis channel (gpt-oss); with ``raw=True`` the prompt string must end where the reasoning goes.

        ``forced_answer=True`` adds, per step, ``n_samples`` rollouts of at most ``forced_max_tokens`` tokens
        that close the reasoning after the prefix and append ``answer_cue`` (default: the published
        ``"Therefore, the final answers is \\boxed{"``); their answer is read from the cue and what follows.
        Answers are read by ``answer(text) -> str | None`` (default :func:`extract_answer`: the last
        ``\\boxed{}``, normalised) from a sample's text after its reasoning. ``correct`` is the right answer,
        if known, for accuracy and importance.

        Every request of every step is one study (:meth:`generate_many`): one budget, one progress bar, every
        sample cached, so a re-run with a larger ``n_samples`` requests only what each step is missing, and
        ``output`` writes the study file. ``sampling`` are the call's sampling options (``temperature=0.6``,
        ``max_tokens=...``); ``on_error`` is :meth:`generate_many`'s.
        """
        return await resample_steps(
            self,
            prompt,
            reasoning,
            n_samples,
            rule=rule,
            after=after,
            forced_answer=forced_answer,
            answer_cue=answer_cue,
            answer=answer,
            forced_max_tokens=forced_max_tokens,
            correct=correct,
            seed=seed,
            raw=raw,
            progress_bar=progress_bar,
            output=output,
            on_error=on_error,
            **sampling,
        )

    async def next_token_distribution(
        self, /, prompt: Prompt, *, raw: bool | None = None, top_logprobs: int = 5, **options: Any
    ) -> TokenDistribution:
        """The next token's distribution after ``prompt``: its top ``top_logprobs`` alternatives, from one request.

        One greedy request of one token (``max_tokens=1``, ``logprobs=top_logprobs``, no echo), cached like
        any other. The result holds the alternatives as probabilities, most likely first, and the
        ``residual_mass`` they leave (what the server did not show). ``prompt`` and ``raw`` are as for
        :meth:`generate`; ``options`` are the call's other options (``chat_template=...``).
        """
        return await _next_token.next_token_distribution(self, prompt, raw=raw, top_logprobs=top_logprobs, **options)

    async def next_token_distributions(
        self, /, prompts: Sequence[Prompt], *, raw: bool | None = None, top_logprobs: int = 5, **options: Any
    ) -> list[TokenDistribution]:
        """:meth:`next_token_distribution` of every prompt, as one study (one budget, one bar), in order."""
        return await _next_token.next_token_distributions(
            self, prompts, raw=raw, top_logprobs=top_logprobs, **options
        )

    async def forced_answer_distribution(
        self,
        /,
        prompt: Prompt,
        reasoning_prefix: str,
        *,
        answer_cue: str | None = None,
        raw: bool | None = None,
        top_logprobs: int = 5,
        **options: Any,
    ) -> TokenDistribution:
        """The forced answer's first-token distribution after ``reasoning_prefix``, from one request.

        Closes the reasoning after ``reasoning_prefix`` for the template's family and appends ``answer_cue``
        (default the published ``"Therefore, the final answers is \\boxed{"``), then reads the next token's
        top alternatives (:meth:`next_token_distribution`). A cheap alternative to sampling forced
        answers, for answers that differ in their FIRST token: a multi-token answer ("12" may be "1", "2")
        shows as its first token only. :meth:`TokenDistribution.answers` merges tokens that are one answer.
        """
        return await _next_token.forced_answer_distribution(
            self, prompt, reasoning_prefix, answer_cue=answer_cue, raw=raw, top_logprobs=top_logprobs, **options
        )

    async def forced_answer_distributions(
        self,
        /,
        items: Sequence[tuple[Prompt, str]],
        *,
        answer_cue: str | None = None,
        raw: bool | None = None,
        top_logprobs: int = 5,
        **options: Any,
    ) -> list[TokenDistribution]:
        """:meth:`forced_answer_distribution` of every ``(prompt, reasoning_prefix)`` pair, as one study, in order."""
        return await _next_token.forced_answer_distributions(
            self, items, answer_cue=answer_cue, raw=raw, top_logprobs=top_logprobs, **options
        )

    async def fork(
        self,
        /,
        response: FwResponse,
        position: int,
        token: str,
        n_samples: int,
        *,
        token_ids: bool | None = None,
        answer: Callable[[str], str | None] | None = None,
        seed: int | None = None,
        **sampling: Any,
    ) -> Fork:
        """Continue ``n_samples`` from ``response``'s prefix up to ``position``, with ``token`` there.

        As token ids where the sample carries them (``token_ids=None``): the base's echoed prompt ids, its
        generated ids before ``position``, ``token``'s id (:func:`fork_prompt_ids`), so nothing is
        re-tokenised; that needs the whole prompt echoed (``echo=True``) and, for an alternative, Fireworks'
        content logprobs format (``logprobs_format="content"``). ``token_ids=True`` requires ids (a
        ValidationError names what is missing), ``False`` sends text: exactly ``response.prompt +
        response.full[:offset] + token`` (``offset`` where the position starts), which the server
        re-tokenises, and which refuses a byte-piece token or a position inside a multi-byte character (see
        :func:`fork_prompt`). ``Fork.sent_as`` says which. Sent raw, echo off unless ``echo=True`` (ids: always
        off); ``sampling`` overrides the client's options. Each continuation's answer is ``answer(text)`` over
        its whole generated text (the base's text up to the fork, ``token``, the continuation; default: the
        last ``\\boxed{}``), collected in ``Fork.outcomes``. ``token`` may be any text (sent as text); one not
        among the server's alternatives there warns.
        """
        return await _forks.fork(
            self, response, position, token, n_samples, token_ids=token_ids, answer=answer, seed=seed, **sampling
        )

    async def forks(
        self,
        /,
        response: FwResponse,
        *,
        n_samples: int,
        threshold: float = 0.05,
        positions: Sequence[int] | None = None,
        include_chosen: bool = False,
        token_ids: bool | None = None,
        answer: Callable[[str], str | None] | None = None,
        seed: int | None = None,
        on_error: Literal["raise", "return"] = "raise",
        output: str | os.PathLike[str] | None = None,
        **sampling: Any,
    ) -> list[Fork]:
        """Every fork of ``response`` (Forking Paths), run as one study: one budget, one bar, cached, resumable.

        The forks are those of :func:`fork_points` (alternatives above ``threshold``; only at ``positions``
        when given), each as :meth:`fork` builds it, ``n_samples`` each; ``include_chosen=True`` also continues
        from the chosen token at each of those positions, the base's own path. All are sent one way: as token
        ids when the sample carries every id they need (``token_ids=None``; ``True`` requires it, ``False``
        sends text). They run as one :meth:`generate_many` call (``on_error`` and ``output`` as there), and
        come back in position order, most likely alternative first. Sent as text, forks that text cannot hold
        (byte pieces) are skipped with a warning.
        """
        return await _forks.forks(
            self,
            response,
            n_samples=n_samples,
            threshold=threshold,
            positions=positions,
            include_chosen=include_chosen,
            token_ids=token_ids,
            answer=answer,
            seed=seed,
            on_error=on_error,
            output=output,
            **sampling,
        )

    async def verify_logprobs(
        self,
        /,
        prompt: Prompt | None = None,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        raw: bool | None = None,
        **options: Any,
    ) -> LogprobsReport:
        """Probe the server with four short requests and report whether its logprobs are sane.

        Checks that generated positions carry well-formed logprobs and alternatives, that echo returns
        one position per prompt token, that temperature 0 picks the top alternative, that a generated
        token's logprob matches the echoed logprob of the same text within ``tolerance`` (nats), and
        that the same request twice gives the same logprobs. ``report.ok`` is True only when every
        check passed; ``print(report)`` shows each finding. ``prompt`` (a default is provided),
        ``raw`` and ``options`` are as in :meth:`generate`; nothing is read from or written to the
        cache. See ``docs/verify.md``.
        """
        return await verify_logprobs(self, prompt, tolerance=tolerance, raw=raw, **options)

    async def score(
        self,
        /,
        prompt: Prompt,
        continuation: str,
        suffix: str = "",
        *,
        raw: bool | None = None,
        use_cache: bool | None = None,
        max_tokens: int | None = None,
        **options: Any,
    ) -> Score:
        """The log-probability of ``continuation`` after ``prompt``: a :class:`Score` (tokens, logprobs, sums, greedy).

        ``prompt`` takes what :meth:`generate` takes (a string or chat messages, ``raw=True`` for a
        string sent verbatim); the text sent is :meth:`render`'s prompt + ``continuation`` +
        ``suffix``. With a ``suffix``, ``score(prefix, span, suffix)`` scores a span in the middle
        of a text exactly: the whole text is sent, only the span's tokens are counted. One request,
        echo at temperature 0, cached like every sample; ``max_tokens`` None sends the fewest
        generated tokens the server accepts (0, or 1 where 0 is refused; they are dropped), 0 or 1
        as given. Logprobs use the client's number of alternatives, at least 1. A token that
        straddles a boundary is scored as part of the span (``Score.boundary_inside_token`` says so).
        """
        return await score(
            self, prompt, continuation, suffix, raw=raw, use_cache=use_cache, max_tokens=max_tokens, **options
        )

    @overload
    async def score_many(
        self,
        pairs: Sequence[Any],
        /,
        *,
        raw: bool | None = ...,
        use_cache: bool | None = ...,
        progress_bar: bool | None = ...,
        on_error: Literal["raise"] = ...,
        max_tokens: int | None = ...,
        **options: Any,
    ) -> list[Score]: ...

    @overload
    async def score_many(
        self,
        pairs: Sequence[Any],
        /,
        *,
        raw: bool | None = ...,
        use_cache: bool | None = ...,
        progress_bar: bool | None = ...,
        on_error: Literal["return"],
        max_tokens: int | None = ...,
        **options: Any,
    ) -> list[Score | FwRolloutsError]: ...

    async def score_many(
        self,
        pairs: Sequence[Any],
        /,
        *,
        raw: bool | None = None,
        use_cache: bool | None = None,
        progress_bar: bool | None = None,
        on_error: Literal["raise", "return"] = "raise",
        max_tokens: int | None = None,
        **options: Any,
    ) -> list[Score] | list[Score | FwRolloutsError]:
        """A :class:`Score` per pair, in order, all in one study (one budget, one progress bar, cached).

        ``pairs`` holds ``(prompt, continuation)`` tuples, ``(prefix, span, suffix)`` triples, or
        mappings ``{"prompt": ..., "continuation": ..., "suffix": ..., **options}`` (``prefix`` and
        ``span`` may stand for ``prompt`` and ``continuation``; other keys override options for that
        pair). Each is what :meth:`score` takes; every pair is checked before any request. A pair that
        fails does not lose the others: ``on_error="raise"`` raises the first failure after all are
        done, ``on_error="return"`` puts each failure's error in its place in the list.
        """
        return await score_many(
            self, pairs, raw=raw, use_cache=use_cache, progress_bar=progress_bar, on_error=on_error,
            max_tokens=max_tokens, **options,
        )  # fmt: skip

    async def aclose(self) -> None:
        """Close connections (on the current loop) and the cache. The client cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        await self._services.aclose()

    async def __aenter__(self) -> AsyncFireworks:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self._settings
        return (
            f"AsyncFireworks(model={s.model!r}, base_url={s.resolved_base_url!r}, logprobs={s.logprobs}, "
            f"echo={s.echo}, use_cache={s.use_cache})"
        )

    # -- pipeline ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError("this client is closed")

    def _render(self, prompt: Prompt, settings: Settings) -> RenderedPrompt:
        template = None
        if not settings.raw:
            template = self._template(settings)
            if template is None:
                hint = model_hint(settings.model_as_given)
                raise ConfigurationError(
                    f"no chat template is known for model {settings.model!r}"
                    + (f" ({hint})" if hint else "")
                    + ". Pass raw=True to send a string prompt verbatim, or chat_template='...' with the model's "
                    "chat template as a Jinja string (or a built-in name: deepseek-r1-distill, llama3.1, "
                    "llama3.1-hf, harmony)"
                )
        return render_prompt(prompt, template=template, raw=settings.raw)

    def _template(self, settings: Settings) -> ChatTemplate | None:
        kwargs = settings.chat_template_kwargs or {}
        templates = self._services.templates
        try:
            key: Any = (settings.model, settings.chat_template, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:
            return template_for_model(settings.model, settings.chat_template, kwargs)
        if key not in templates:
            templates[key] = template_for_model(settings.model, settings.chat_template, kwargs)
        return templates[key]

    def _prepare(
        self, items: Sequence[StudyItem], call: Mapping[str, Any], *, n_samples: int, seed: int, where: str | None
    ) -> list[_Prepared]:
        """Validate and render every item, before anything is looked up or sent."""
        base = self._settings.for_call(call)
        prepared = []
        for index, item in enumerate(items):
            name = f"{where}[{index}]" if where is not None else None
            try:
                settings = base.for_call(item.options, where=name or "generate") if item.options else base
                n = n_samples if item.n_samples is None else check_n_samples(item.n_samples)
                first = seed if item.seed is None else check_seed(item.seed)
                if item.prompt_ids is not None:
                    assert isinstance(item.prompt, str)  # coerce_items: the ids' text
                    if settings.echo:
                        # The echo split finds the prompt by its text, which ids need not spell: ids go without.
                        settings = settings.for_call({"echo": False})
                    rendered = id_prompt(item.prompt_ids, item.prompt, raw=settings.raw)
                else:
                    rendered = self._render(item.prompt, settings)
            except FwRolloutsError as exc:
                if name is None:
                    raise
                raise exc._evolve(message=f"{name}: {exc.message}") from None
            seeds = tuple(range(first, first + n))
            spec = ResponseSpec(
                prompt=rendered.text,
                echo=settings.wants_echo,
                logprobs=settings.wants_logprobs,
                stop=settings.stop,
                split_reasoning=rendered.split_reasoning,
                echo_last=settings.echo_last if settings.wants_echo else None,
            )
            keyer = prompt_id = affinity = None
            # A partial echo (echo_last) is no prompt part to share: each request echoes its own.
            once = spec.echo and settings.echo_once and settings.echo_last is None
            if settings.use_cache or once:
                keyer = CacheKeyer(settings.resolved_base_url, settings.key_body(rendered.sent))
                prompt_id = keyer.prompt_key() if once else None
                keyer = keyer if settings.use_cache else None
            if settings.session_affinity:
                # One key per distinct prompt (or the item's own, for items that share a prefix): a hash,
                # so that no prompt text goes into a header.
                affinity = item.affinity or hashlib.sha256(rendered.identity()).hexdigest()[:32]
            prepared.append(
                _Prepared(
                    index=index,
                    prompt=item.prompt,
                    settings=settings,
                    rendered=rendered,
                    spec=spec,
                    plan=Plan(first, settings.samples_per_request),
                    seeds=seeds,
                    keyer=keyer,
                    affinity=affinity,
                    prompt_id=prompt_id,
                )
            )
        return prepared

    async def _run_study(self, prepared: Sequence[_Prepared], events: Collected | Streamed) -> FwRolloutsError | None:
        """Look up and fetch the samples of every prepared item, reporting each to ``events``; the error
        that ended the whole study early, if one did."""
        services = self._services
        cached = [p for p in prepared if p.keyer is not None]
        store = services.store.get() if cached else None
        writer = WriteBehind(store, clock=services.clock.now) if store is not None else None

        # The prompt parts of the study's recent prompts (items with the same prompt share one; a bounded
        # number, so a stream of a million distinct prompts does not keep them all).
        parts: dict[str, PromptPart] = {}

        def known(p: _Prepared) -> PromptPart | None:
            return parts.get(p.prompt_id) if p.prompt_id is not None else None

        def learned(prompt_id: str) -> Callable[[object], None]:
            def keep(part: object) -> None:
                assert isinstance(part, PromptPart)
                if len(parts) >= _PARTS_KEPT:
                    parts.pop(next(iter(parts)))
                parts[prompt_id] = part
                if writer is not None:
                    writer.add(prompt_id, part)  # before the samples that need it: the writer keeps the order

            return keep

        async def lookup(p: _Prepared, seeds: Sequence[int] | None = None) -> CacheHits:
            if store is None or p.keyer is None:
                return CacheHits({}, known(p), True)
            seeds = p.seeds if seeds is None else seeds
            keys = [p.cache_key(s) for s in seeds]
            return await cached_hits(store, keys, seeds, p.rendered.text, p.spec, prompt_key=p.prompt_id, part=known(p))

        # Samples another worker sharing the store is fetching (see _claims): awaited after the other items.
        claims = Claims.of(store)
        waiting: list[tuple[_Prepared, tuple[int, ...], float]] = []  # (item, seeds, since when)

        async def served(
            p: _Prepared, hits: CacheHits, seeds: Sequence[int]
        ) -> tuple[tuple[int, ...], EchoOnce | None]:
            """Report the hits of ``seeds``; the seeds still missing and how their echo is paid."""
            found = {s: hits.samples[s] for s in seeds if s in hits.samples}
            echo_once = None
            if p.prompt_id is not None:
                part = known(p) or hits.part
                if part is not None and not hits.part_stored and writer is not None:
                    writer.add(p.prompt_id, part)  # the part came from an old record: store it apart
                if part is not None:
                    parts.setdefault(p.prompt_id, part)
                echo_once = EchoOnce(part=part, take=_take_part, attach=_attach_part, keep=learned(p.prompt_id))
            for response in found.values():
                response.item = p.index  # a fresh object, the call's own
            await events.hits(p.index, found)
            return tuple(s for s in seeds if s not in found), echo_once

        async def claimed(wanted: list[tuple[_Prepared, tuple[int, ...]]]) -> list[tuple[int, ...]]:
            """The seeds of each (item, seeds) this run may fetch now: all of them without claims."""
            if claims is None:
                return [seeds for _, seeds in wanted]
            keys = [p.cache_key(s) for p, seeds in wanted if p.keyer is not None for s in seeds]
            mine = iter(await claims.claim(keys))
            return [tuple(s for s in seeds if next(mine)) if p.keyer is not None else seeds for p, seeds in wanted]

        def job(p: _Prepared, missing: tuple[int, ...], echo_once: EchoOnce | None) -> Job:
            settings = p.settings
            return Job(
                item=p.index,
                body=settings.body(p.rendered.sent),
                spec=p.spec,
                plan=p.plan,
                seeds=missing,
                prompt_tokens=p.rendered.token_estimate(),  # until the server tells us
                max_tokens=settings.max_tokens,
                headers={AFFINITY_HEADER: p.affinity} if p.affinity is not None else {},
                cache_key=p.cache_key if p.keyer is not None and writer is not None else None,
                echo_once=echo_once,
            )

        async def jobs() -> AsyncIterator[Job]:
            key_checked = services.transport_given
            last: Job | None = None
            for start in range(0, len(prepared), _LOOKUP_CHUNK):
                chunk = prepared[start : start + _LOOKUP_CHUNK]
                # The lookups of a chunk of items at once: the store's thread takes them one after
                # another without a round trip to the event loop between them.
                found_all = await asyncio.gather(*(lookup(p) for p in chunk))
                todo = [(p, *await served(p, hits, p.seeds)) for p, hits in zip(chunk, found_all, strict=True)]
                todo = [(p, missing, echo_once) for p, missing, echo_once in todo if missing]
                mine_all = await claimed([(p, missing) for p, missing, _ in todo])
                for (p, missing, echo_once), mine in zip(todo, mine_all, strict=True):
                    if len(mine) < len(missing):
                        waiting.append((p, tuple(s for s in missing if s not in mine), services.clock.now()))
                    if not mine:
                        continue
                    if not key_checked:
                        p.settings.require_api_key()  # before any request: the clear error, not a 401
                        key_checked = True
                    last = job(p, mine, echo_once)
                    yield last
            delay = POLL_FIRST
            while waiting:
                if last is not None:
                    yield dataclasses.replace(last, seeds=())  # the feed hands out what it took before this wait
                await services.clock.sleep(delay)
                delay = min(POLL_MAX, delay * 2)
                awaited, waiting[:] = list(waiting), []
                found_all = await asyncio.gather(*(lookup(p, seeds) for p, seeds, _ in awaited))
                still = []
                for (p, seeds, since), hits in zip(awaited, found_all, strict=True):
                    missing, echo_once = await served(p, hits, seeds)
                    if missing:
                        still.append((p, missing, since, echo_once))
                # A claim gone without a record (its worker failed or died) is taken over now.
                mine_all = await claimed([(p, missing) for p, missing, _, _ in still])
                now = services.clock.now()
                timeout = claims.timeout if claims is not None else 0.0
                for (p, missing, since, echo_once), mine in zip(still, mine_all, strict=True):
                    if now - since >= timeout:
                        mine = missing  # waited long enough: fetch it anyway
                    elif len(mine) < len(missing):
                        waiting.append((p, tuple(s for s in missing if s not in mine), since))
                    if mine:
                        if not key_checked:
                            p.settings.require_api_key()
                            key_checked = True
                        last = job(p, mine, echo_once)
                        yield last

        settings = prepared[0].settings
        run = SampleRun(
            jobs(),
            Target(
                base_url=settings.resolved_base_url,
                model=settings.model,
                verbatim_model=_verbatim_model(settings),
                timeout=settings.timeout,
                max_retries=settings.max_retries,
                max_concurrency=settings.max_concurrency,
            ),
            transport=services.transport.get,
            budget=services.budget.get,
            clock=services.clock,
            models=services.models,
            events=_Events(events, claims),
            sink=writer,
        )
        try:
            return await run.run()
        finally:
            if claims is not None:
                await claims.release_all()  # after run() has drained the writer: the records are there
            events.progress.close()  # type: ignore[attr-defined]
            self._usage = self._usage + events.totals(run.spent, run.requests)


class _Events:
    """The run's reports, passed on to a collector by item index."""

    __slots__ = ("_claims", "_to")

    def __init__(self, to: Collected | Streamed, claims: Claims | None = None) -> None:
        self._to = to
        self._claims = claims

    async def sample(self, job: Job, seed: int, response: FwResponse) -> None:
        response.item = job.item  # a fresh object, the run's own until now
        await self._to.sample(job.item, seed, response)

    def failed(self, job: Job, seed: int, error: FwRolloutsError) -> None:
        if self._claims is not None and job.cache_key is not None:
            self._claims.release_soon([job.cache_key(seed)])  # another worker waiting for it fetches it now
        self._to.failed(job.item, seed, error)

    def stopped(self, job: Job, error: FwRolloutsError) -> None:
        self._to.stop(job.item, error)


class SampleStream:
    """The samples of :meth:`AsyncFireworks.iter_generate`, as they finish: an async iterator and context manager.

    ``async for response in stream`` yields each :class:`FwResponse`; ``await stream.aclose()``
    (or leaving ``async with``) stops the requests still in flight and keeps what finished.
    """

    def __init__(self, client: AsyncFireworks, prepared: list[_Prepared], call: Mapping[str, Any]) -> None:
        self._client = client
        self._prepared = prepared
        total = sum(len(p.seeds) for p in prepared)
        shown = client.settings.for_call(call).progress_bar
        self._progress = StudyProgress(total, enabled=shown and total > 1)
        concurrency = prepared[0].settings.max_concurrency if prepared else 1  # a shard may hold no item
        self._streamed = Streamed(self._progress, bound=max(64, 2 * concurrency))
        self._producer: asyncio.Task[FwRolloutsError | None] | None = None
        self._finished = False

    def __aiter__(self) -> SampleStream:
        return self

    async def __anext__(self) -> FwResponse:
        if self._finished:
            raise StopAsyncIteration
        if self._producer is None:
            self._producer = asyncio.ensure_future(self._produce())
        response = await self._streamed.queue.get()
        if response is None:
            await self._finish()
            raise StopAsyncIteration
        return response

    async def next_ready(self, limit: int) -> list[FwResponse]:
        """The next sample and any others already waiting (at most ``limit``); empty at the end."""
        try:
            batch = [await self.__anext__()]
        except StopAsyncIteration:
            return []
        queue = self._streamed.queue
        while len(batch) < limit and not queue.empty():
            response = queue.get_nowait()
            if response is None:
                await self._finish()
                break
            batch.append(response)
        return batch

    async def _produce(self) -> FwRolloutsError | None:
        queue = self._streamed.queue
        if not self._prepared:  # a shard that holds no item
            self._progress.close()
            await queue.put(None)
            return None
        try:
            fatal = await self._client._run_study(self._prepared, self._streamed)
        except asyncio.CancelledError:
            raise
        except BaseException:
            await queue.put(None)
            raise
        await queue.put(None)
        return fatal

    async def _finish(self) -> None:
        self._finished = True
        assert self._producer is not None
        fatal = await self._producer  # the run's own exception, if it raised one
        streamed = self._streamed
        if not streamed.errors and fatal is None and not streamed.stopped:
            return
        first = min(streamed.errors) if streamed.errors else min(streamed.stopped, default=0)
        errors = dict(sorted(streamed.errors.get(first, {}).items()))
        error = fatal or streamed.stopped.get(first) or errors[min(errors)]
        failed = sum(len(e) for e in streamed.errors.values())
        message = (
            f"{error.message} [{failed} sample{'s' if failed != 1 else ''} failed"
            f" in {len(streamed.errors) or 1} item{'s' if len(streamed.errors) > 1 else ''}"
            f"; {streamed.fetched + streamed.from_cache} were yielded (and cached)]"
        )
        raise scrub_error(error._evolve(message=message, errors=errors), redactor(self._client.settings.api_key))

    async def aclose(self) -> None:
        """Stop: cancel the requests in flight (what finished is cached) and close the progress bar."""
        self._finished = True
        producer = self._producer
        if producer is not None and not producer.done():
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        self._progress.close()

    async def __aenter__(self) -> SampleStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _in_shard(prepared: list[_Prepared], shard: tuple[int, int]) -> list[_Prepared]:
    """The items of ``prepared`` in shard ``shard`` (``(i, N)``), in order."""
    index, count = shard
    if count == 1:
        return prepared
    return [p for p in prepared if shard_of(p.settings.key_body(p.rendered.sent), p.seeds[0], count) == index]


def study_header(prepared: Sequence[_Prepared]) -> dict[str, Any]:
    """The study file's header: each item's call fields, and a fingerprint of what the study asks for (the
    prompts sent, the output-shaping settings and the seeds), which a resumed run must match."""
    items = []
    digest = hashlib.sha256()
    for p in prepared:
        s = p.settings
        ids = {} if p.rendered.ids is None else {"prompt_ids": list(p.rendered.ids)}
        items.append(
            {
                **ids,
                "prompt": p.prompt if isinstance(p.prompt, str) else [dict(m) for m in p.prompt],
                "num_responses": len(p.seeds),
                "temperature": s.temperature,
                "top_p": s.top_p,
                "max_tokens": s.max_tokens,
                "model": s.model,
                "logprobs_enabled": s.wants_logprobs,
                "echo_enabled": s.wants_echo,
                "logprobs": s.logprobs,
                "prompt_text": p.rendered.text,
                "settings": s.sampling_summary(),
            }
        )
        # What is asked (the model in the key body, the prompt, the settings, the seeds), not where: a study
        # moved to another endpoint of the same model resumes.
        key = json.dumps([s.key_body(p.rendered.sent), p.seeds[0], len(p.seeds)], sort_keys=True)
        digest.update(key.encode("utf-8", "surrogatepass") + b"\n")
    return {"study": digest.hexdigest(), "items": items}


async def _read_back(output: str | os.PathLike[str], collected: Collected) -> None:
    """The samples a study file already holds, to ``collected`` as served (read on a worker thread)."""
    samples = await asyncio.to_thread(lambda: list(read_samples(output)))
    by_item: dict[int, dict[int, FwResponse]] = {}
    for item, response in samples:
        response.item = item  # a fresh object, the call's own
        response.cached = True
        if response.seed is not None:
            by_item.setdefault(item, {})[response.seed] = response
    for item, found in by_item.items():
        await collected.hits(item, found)


def _call_options(
    sampling: dict[str, Any], *, raw: bool | None, use_cache: bool | None, progress_bar: bool | None
) -> dict[str, Any]:
    """The call's option overrides, the named toggles among them."""
    for name, value in (("raw", raw), ("use_cache", use_cache), ("progress_bar", progress_bar)):
        if value is not None:
            sampling[name] = value
    return sampling


# -- a study run in parts (fw_rollouts.ray: each worker prepares, runs and fails its batch as generate_many does) --


def prepare_study(
    client: AsyncFireworks, items: Sequence[StudyItem], *, n_samples: int, seed: int
) -> list[_Prepared]:
    """Every item of a study validated and rendered by ``client``, as :meth:`AsyncFireworks.generate_many`
    does before anything is looked up or sent (errors name ``items[i]``)."""
    return client._prepare(items, {}, n_samples=n_samples, seed=seed, where="items")


async def run_prepared(
    client: AsyncFireworks, prepared: Sequence[_Prepared]
) -> tuple[list[FwRollouts], dict[int, FwRolloutsError]]:
    """Run prepared items (indexed from 0) as one study on ``client``, with no bar and no study file: one
    :class:`FwRollouts` per item and the error of each failed item, as ``generate_many`` builds them."""
    collected = Collected(len(prepared), StudyProgress(0, enabled=False))
    fatal = await client._run_study(prepared, collected)
    return _outcomes(prepared, collected, fatal, client._services.store)


def _outcomes(
    prepared: Sequence[_Prepared], collected: Collected, fatal: FwRolloutsError | None, store: Any
) -> tuple[list[FwRollouts], dict[int, FwRolloutsError]]:
    """A study's results, one :class:`FwRollouts` per item, and the error of each failed item (by index).

    Shared by ``generate_many`` and :func:`run_prepared` (the Ray workers), which must fail exactly alike.
    """
    results = []
    failed: dict[int, FwRolloutsError] = {}
    for p in prepared:
        errors = dict(sorted(collected.errors.get(p.index, {}).items()))
        stopped = collected.stopped.get(p.index) or (fatal if len(collected.results[p.index]) < len(p.seeds) else None)
        rollouts = rollouts_of(
            p, collected.results[p.index], p.settings, store if p.settings.use_cache else None, errors=errors
        )
        results.append(rollouts)
        if errors or stopped is not None:
            failed[p.index] = _failure(errors, stopped, rollouts)
    return results, failed


def rollouts_of(
    p: _Prepared,
    results: Mapping[int, FwResponse],
    settings: Settings,
    store: Any,
    *,
    errors: Mapping[int, FwRolloutsError] | None = None,
) -> FwRollouts:
    location = store.get().location if store is not None else None
    return FwRollouts(
        prompt=p.prompt if isinstance(p.prompt, str) else [dict(m) for m in p.prompt],
        num_responses=len(p.seeds),
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_tokens,
        model=settings.model,
        responses=[results[s] for s in p.seeds if s in results],
        cache_dir=location,
        logprobs_enabled=settings.wants_logprobs,
        echo_enabled=settings.wants_echo,
        logprobs=settings.logprobs,
        prompt_text=p.rendered.text,
        settings=settings.sampling_summary(),
        errors=dict(errors or {}),
    )


def _verbatim_model(settings: Settings) -> str | None:
    """The model name as the user wrote it, where a non-Fireworks server may need it unchanged."""
    given = settings.model_as_given
    if settings.is_fireworks or not given or given == settings.model or given in MODEL_ALIASES:
        return None
    return given


def check_n_samples(value: Any) -> int:
    return positive_integer("n_samples", value)


def check_seed(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError("seed", value, "a non-negative integer, or None (0)")
    if value < 0:
        raise ValidationError("seed", value, "must be a non-negative integer")
    return value


def _failure(
    errors: Mapping[int, FwRolloutsError], fatal: FwRolloutsError | None, rollouts: FwRollouts
) -> FwRolloutsError:
    """The error to raise for a call with failed samples: a new instance of the error that ended the
    call (else the lowest seed's), carrying the successes and every sample's own error."""
    errors = dict(sorted(errors.items()))
    error = fatal if fatal is not None else errors[min(errors)]
    message = error.message
    if len(errors) > 1 or rollouts.responses or rollouts.num_responses > 1:
        skipped = rollouts.num_responses - len(errors) - len(rollouts.responses)
        message += (
            f" [{len(errors)} of {rollouts.num_responses} samples failed"
            + (f", {skipped} not requested after that" if skipped else "")
            + (
                f"; {len(rollouts.responses)} succeeded (in error.rollouts, and cached: "
                "a re-run fetches only the missing ones)]"
                if rollouts.responses
                else "; none succeeded]"
            )
        )
    return error._evolve(message=message, rollouts=rollouts, errors=errors)


def study_failure(failed: Mapping[int, FwRolloutsError], results: list[FwRollouts]) -> FwRolloutsError:
    """The error to raise for a study with failed items: the first failed item's error, with every
    item's results (``error.results``) and the failed items named in its message."""
    first = min(failed)
    error = failed[first]
    items = sorted(failed)
    shown = ", ".join(str(i) for i in items[:10]) + (", ..." if len(items) > 10 else "")
    samples = sum(len(r) for r in results)
    total = sum(r.num_responses for r in results)
    message = (
        f"item {first}: {error.message} [{len(items)} of {len(results)} items failed ({shown}); "
        f"{samples} of {total} samples succeeded (in error.results, one FwRollouts per item, and cached: "
        "a re-run fetches only the missing ones)]"
    )
    return error._evolve(message=message, results=results)
