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

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._budget import Budget
from ._cache_key import CacheKeyer
from ._clock import Clock
from ._exceptions import ConfigurationError, FwRolloutsError, InvalidTypeError, ValidationError
from ._lookup import cached_samples
from ._models import FwResponse, FwRollouts
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
from ._progress import progress_bar as make_progress_bar
from ._prompts import MODEL_ALIASES, RenderedPrompt, model_hint, render_prompt
from ._redact import redactor, remember_secret, scrub_error
from ._run import Job, RunResult, SampleRun
from ._services import SEAMS, Services
from ._settings import Settings
from ._store import SampleStore
from ._templates import ChatTemplate, template_for_model
from ._transport import Transport
from ._writeback import WriteBehind

if TYPE_CHECKING:
    from typing_extensions import Never

__all__ = ["AsyncFireworks", "Prompt"]

log = logging.getLogger("fw_rollouts")

Prompt = str | Sequence[Mapping[str, Any]]

class _CacheSink:
    """Finished samples to the cache writer, under their cache keys."""

    __slots__ = ("_keyer", "_plan", "_writer")

    def __init__(self, writer: WriteBehind, plan: Plan, keyer: CacheKeyer) -> None:
        self._writer = writer
        self._plan = plan
        self._keyer = keyer

    def add(self, seed: int, response: FwResponse) -> None:
        self._writer.add(self._plan.key(self._keyer, seed), response)

    async def drain(self) -> None:
        await self._writer.drain()


class AsyncFireworks:
    """Async client that samples completions with logprobs from Fireworks (or any
    OpenAI-compatible completions server via ``base_url``).

    Sampling options (``temperature`` ... ``prompt_cache_key``) and the call toggles (``raw``,
    ``chat_template``, ``use_cache``, ``progress_bar``, ...) set defaults that each
    :meth:`generate` call may override. The client's own configuration (``api_key``,
    ``base_url``, ``timeout``, ``max_retries``, ``max_concurrency``, the rate limits and
    ``cache_dir``) is fixed: :meth:`with_options` returns a sibling client with some of it
    changed. ``cache``, ``budget``, ``transport`` and ``clock`` replace the services the
    client uses (a :class:`SampleStore`, :class:`Budget`, :class:`Transport`, :class:`Clock`).

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
        echo: bool = True,
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
        cache: SampleStore | None = None,
        budget: Budget | None = None,
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

    # -- public API ----------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The client's validated settings (the defaults of every call)."""
        return self._settings

    @property
    def model(self) -> str:
        """The resolved model id."""
        return self._settings.model

    def with_options(
        self,
        *,
        cache: SampleStore | None = None,
        budget: Budget | None = None,
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
        for name, value in (("raw", raw), ("use_cache", use_cache), ("progress_bar", progress_bar)):
            if value is not None:
                sampling[name] = value
        settings = self._settings.for_call(sampling)
        n = _check_n_samples(n_samples)
        first_seed = _check_seed(seed)
        rendered = self._render(prompt, settings)
        seeds = list(range(first_seed, first_seed + n))
        spec = ResponseSpec(
            prompt=rendered.text,
            echo=settings.wants_echo,
            logprobs=settings.wants_logprobs,
            stop=settings.stop,
            split_reasoning=rendered.split_reasoning,
        )
        plan = Plan(first_seed, settings.samples_per_request)
        store = self._services.store.get() if settings.use_cache else None
        keyer = CacheKeyer(settings.resolved_base_url, settings.key_body(rendered.text)) if store is not None else None

        results: dict[int, FwResponse] = {}
        if store is not None and keyer is not None:
            results = await cached_samples(store, [plan.key(keyer, s) for s in seeds], seeds, rendered.text, spec)
        missing = [s for s in seeds if s not in results]
        outcome = RunResult()
        if missing:
            outcome = await self._fetch(settings, rendered, spec, plan, missing, store, keyer, n)
            results.update(outcome.results)

        rollouts = FwRollouts(
            prompt=prompt if isinstance(prompt, str) else [dict(m) for m in prompt],
            num_responses=n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            model=settings.model,
            responses=[results[s] for s in seeds if s in results],
            cache_dir=store.location if store is not None else None,
            logprobs_enabled=settings.wants_logprobs,
            echo_enabled=settings.wants_echo,
            logprobs=settings.logprobs,
            prompt_text=rendered.text,
            settings=settings.sampling_summary(),
        )
        if outcome.errors or outcome.fatal is not None:
            # The transport scrubs what it builds; this catches what any layer (or a custom transport)
            # let through, in every field of the error and of each per-seed error it carries.
            raise scrub_error(_failure(outcome, rollouts), redactor(settings.api_key))
        return rollouts

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

    async def _fetch(
        self,
        settings: Settings,
        rendered: RenderedPrompt,
        spec: ResponseSpec,
        plan: Plan,
        seeds: list[int],
        store: SampleStore | None,
        keyer: CacheKeyer | None,
        total: int,
    ) -> RunResult:
        services = self._services
        if not services.transport_given:
            settings.require_api_key()  # before any request: the clear error, not a 401
        transport = await services.transport.get()
        job = Job(
            body=settings.body(rendered.text),
            spec=spec,
            plan=plan,
            seeds=tuple(seeds),
            base_url=settings.resolved_base_url,
            url=transport.url,
            model=settings.model,
            verbatim_model=_verbatim_model(settings),
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            max_concurrency=settings.max_concurrency,
            prompt_tokens=max(1, len(rendered.text) // 4),  # until the server tells us
            max_tokens=settings.max_tokens,
        )
        sink = None
        if store is not None and keyer is not None:
            sink = _CacheSink(WriteBehind(store, clock=services.clock.now), plan, keyer)
        bar = make_progress_bar(total, enabled=settings.progress_bar and total > 1, initial=total - len(seeds))
        run = SampleRun(
            job,
            transport=transport,
            budget=await services.budget.get(),
            clock=services.clock,
            models=services.models,
            sink=sink,
            progress=bar,
        )
        try:
            return await run.run()
        finally:
            bar.close()


def _verbatim_model(settings: Settings) -> str | None:
    """The model name as the user wrote it, where a non-Fireworks server may need it unchanged."""
    given = settings.model_as_given
    if settings.is_fireworks or not given or given == settings.model or given in MODEL_ALIASES:
        return None
    return given


def _check_n_samples(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError("n_samples", value, "a positive integer")
    if value < 1:
        raise ValidationError("n_samples", value, "must be an integer >= 1")
    return value


def _check_seed(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError("seed", value, "a non-negative integer, or None (0)")
    if value < 0:
        raise ValidationError("seed", value, "must be a non-negative integer")
    return value


def _failure(outcome: RunResult, rollouts: FwRollouts) -> FwRolloutsError:
    """The error to raise for a call with failed samples: a new instance of the error that ended the
    call (else the lowest seed's), carrying the successes and every sample's own error."""
    errors = dict(sorted(outcome.errors.items()))
    error = outcome.fatal if outcome.fatal is not None else errors[min(errors)]
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
