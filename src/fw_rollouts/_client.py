"""The async core: :class:`AsyncFireworks` and its sampling pipeline.

arguments -> validated :class:`Settings` -> prompt rendered with the chat template ->
cache lookup -> limiter -> retrying request -> parsed samples -> cache write -> results.

Loop-bound objects (the openai client and its connection pool, the limiter) are made
lazily for each event loop that uses the client, so one client works across several
``asyncio.run`` calls and under the sync facade's private loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from ._cache import CacheKeyer, SampleCache, WriteBehind
from ._config import DEFAULT_CACHE_DIR, DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Settings
from ._exceptions import (
    APIError,
    ConfigurationError,
    FwRolloutsError,
    InvalidTypeError,
    MalformedResponseError,
    MissingLogprobsError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from ._models import FwResponse, FwRollouts
from ._parsing import ResponseSpec, decode_body, parse_completion
from ._progress import progress_bar
from ._prompts import MODEL_ALIASES, RenderedPrompt, render_prompt
from ._ratelimit import Limiter
from ._retry import RetryPolicy, is_retryable
from ._templates import ChatTemplate, template_for_model
from ._transport import Transport

__all__ = ["AsyncFireworks"]

log = logging.getLogger("fw_rollouts")

T = TypeVar("T")

Prompt = str | Sequence[Mapping[str, Any]]

# Overloaded-service statuses after which the whole client backs off, not just the one request.
_COOL_DOWN_STATUSES = frozenset({429, 503})


class _LoopState:
    """What a client owns on one event loop: its limiter and its HTTP clients."""

    __slots__ = ("__weakref__", "_closer", "limiter", "transports")

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.transports: dict[tuple[str, str], Transport] = {}
        self._closer: AsyncIterator[None] | None = None

    async def arm_closer(self) -> None:
        """Close our connections when ``asyncio.run`` shuts the loop's async generators down.

        Without this, a client used across ``asyncio.run`` calls without ``async with``
        would leave an open connection pool behind on each dead loop.
        """
        self._closer = self._close_at_shutdown()
        await self._closer.__anext__()

    async def _close_at_shutdown(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        transports = list(self.transports.values())
        self.transports.clear()
        for transport in transports:
            try:
                await transport.aclose()
            except Exception:  # closing must not mask the error that led here
                log.debug("error closing %r", transport, exc_info=True)


class AsyncFireworks:
    """Async client that samples completions with logprobs from Fireworks (or any
    OpenAI-compatible completions server via ``base_url``).

    Every constructor option can be overridden per call as a keyword argument of
    :meth:`generate`. Fireworks request fields without a named option (``top_logprobs``,
    ``typical_p``, ``logit_bias``, ``ignore_eos``, ``context_length_exceeded_behavior``,
    ``mirostat_target``, ``mirostat_lr``, ``response_format``, ``user``, ``service_tier``,
    ``prompt_cache_key``) are accepted too; any other name is an error.

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
        stop: str | Sequence[str] | None = None,
        logprobs: int | None = 5,
        echo: bool = True,
        api_key: str | None = None,
        base_url: str | None = None,
        use_cache: bool = True,
        cache_dir: str = DEFAULT_CACHE_DIR,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
        progress_bar: bool = True,
        raw: bool = False,
        chat_template: str | ChatTemplate | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        samples_per_request: int = 1,
        **service_fields: Any,
    ) -> None:
        self._settings = Settings.create(
            model=model,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            top_k=top_k,
            min_p=min_p,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            repetition_penalty=repetition_penalty,
            stop=stop,
            logprobs=logprobs,
            echo=echo,
            api_key=api_key,
            base_url=base_url,
            use_cache=use_cache,
            cache_dir=cache_dir,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            timeout=timeout,
            progress_bar=progress_bar,
            raw=raw,
            chat_template=chat_template,
            chat_template_kwargs=chat_template_kwargs,
            samples_per_request=samples_per_request,
            **service_fields,
        )
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._caches: dict[str, SampleCache] = {}
        self._io: ThreadPoolExecutor | None = None
        self._templates: dict[Any, ChatTemplate | None] = {}
        # (base_url, resolved model) -> the name a non-Fireworks server accepted instead.
        self._wire_models: dict[tuple[str, str], str] = {}
        self._closed = False
        # Injectable so that tests run on virtual time and never wait for real.
        self._sleep: Callable[[float], Any] = asyncio.sleep
        self._clock: Callable[[], float] | None = None

    # -- public API ----------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The client's validated default settings."""
        return self._settings

    @property
    def model(self) -> str:
        """The resolved model id."""
        return self._settings.model

    async def generate(
        self,
        prompt: Prompt,
        n_samples: int = 1,
        *,
        seed: int | None = None,
        raw: bool | None = None,
        **overrides: Any,
    ) -> FwRollouts:
        """Sample ``n_samples`` completions of ``prompt``; sample ``i`` uses seed ``seed + i``.

        ``prompt`` is a string (one user message) or a list of chat messages, rendered
        with the model's chat template; ``raw=True`` sends a string verbatim. Samples
        already in the cache are not requested again.

        Raises :class:`FwRolloutsError` subclasses. If some samples fail for good, the
        error of the first failed sample is raised after the others finish, with
        ``error.rollouts`` holding every sample that succeeded (they are cached, so a
        re-run requests only the missing ones) and ``error.errors`` each failure by seed.
        """
        if self._closed:
            raise ConfigurationError("this client is closed")
        if raw is not None:
            overrides["raw"] = raw
        settings = self._settings.replace(**overrides)
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
        plan = _Plan(first_seed, settings.samples_per_request)
        cache = await self._cache_for(settings.cache_dir) if settings.use_cache else None
        keyer = CacheKeyer(settings.resolved_base_url, settings.key_body(rendered.text)) if cache is not None else None

        results: dict[int, FwResponse] = {}
        if cache is not None and keyer is not None:
            hits = await self._in_thread(cache.get_many, [plan.key(keyer, s) for s in seeds], rendered.text)
            for s, hit in zip(seeds, hits, strict=True):
                if hit is not None and (hit.logprobs is not None or not spec.logprobs):
                    results[s] = hit
        missing = [s for s in seeds if s not in results]
        errors: dict[int, FwRolloutsError] = {}
        if missing:
            api_key = settings.require_api_key()
            await self._fetch_all(settings, api_key, rendered, spec, plan, missing, results, errors, cache, keyer, n)

        rollouts = FwRollouts(
            prompt=prompt if isinstance(prompt, str) else [dict(m) for m in prompt],
            num_responses=n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            model=settings.model,
            responses=[results[s] for s in seeds if s in results],
            cache_dir=cache.directory if cache is not None else None,
            logprobs_enabled=settings.wants_logprobs,
            echo_enabled=settings.wants_echo,
            logprobs=settings.logprobs,
            prompt_text=rendered.text,
            settings=settings.sampling_summary(),
        )
        if errors:
            raise _failure(errors, rollouts)
        return rollouts

    async def aclose(self) -> None:
        """Close connections (on the current loop) and the cache. The client cannot be used afterwards."""
        self._closed = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        state = self._states.pop(loop) if loop is not None and loop in self._states else None
        if state is not None:
            await state.aclose()
        self._states.clear()
        caches = list(self._caches.values())
        self._caches.clear()
        if self._io is not None:
            for cache in caches:
                await self._in_thread(cache.close)
            self._io.shutdown(wait=False)
            self._io = None

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

    def _render(self, prompt: Prompt, settings: Settings) -> RenderedPrompt:
        template = None
        if not settings.raw:
            template = self._template(settings)
            if template is None:
                raise ConfigurationError(
                    f"no chat template is known for model {settings.model!r}. Pass raw=True to send a "
                    "string prompt verbatim, or chat_template='...' with the model's chat template as a "
                    "Jinja string (or a built-in name: deepseek-r1-distill, llama3.1, llama3.1-hf, harmony)"
                )
        return render_prompt(prompt, template=template, raw=settings.raw)

    def _template(self, settings: Settings) -> ChatTemplate | None:
        kwargs = settings.chat_template_kwargs or {}
        try:
            key: Any = (settings.model, settings.chat_template, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:
            return template_for_model(settings.model, settings.chat_template, kwargs)
        if key not in self._templates:
            self._templates[key] = template_for_model(settings.model, settings.chat_template, kwargs)
        return self._templates[key]

    async def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            base = self._settings
            state = _LoopState(
                Limiter(
                    max_concurrency=base.max_concurrency,
                    requests_per_minute=base.requests_per_minute,
                    tokens_per_minute=base.tokens_per_minute,
                    clock=self._clock,
                    sleep=self._sleep,
                )
            )
            self._states[loop] = state
            await state.arm_closer()
        return state

    def _limiters(self, state: _LoopState, settings: Settings) -> list[Limiter]:
        limiters = [state.limiter]
        base = self._settings
        if (settings.max_concurrency, settings.requests_per_minute, settings.tokens_per_minute) != (
            base.max_concurrency,
            base.requests_per_minute,
            base.tokens_per_minute,
        ):
            # A per-call override adds its own limits on top of the client's.
            limiters.append(
                Limiter(
                    max_concurrency=settings.max_concurrency,
                    requests_per_minute=settings.requests_per_minute,
                    tokens_per_minute=settings.tokens_per_minute,
                    clock=self._clock,
                    sleep=self._sleep,
                )
            )
        return limiters

    async def _fetch_all(
        self,
        settings: Settings,
        api_key: str,
        rendered: RenderedPrompt,
        spec: ResponseSpec,
        plan: _Plan,
        seeds: list[int],
        results: dict[int, FwResponse],
        errors: dict[int, FwRolloutsError],
        cache: SampleCache | None,
        keyer: CacheKeyer | None,
        total: int,
    ) -> None:
        state = await self._state()
        base_url = settings.resolved_base_url
        transport = state.transports.get((base_url, api_key))
        if transport is None:
            transport = Transport(
                base_url=base_url, api_key=api_key, max_connections=max(self._settings.max_concurrency, 1)
            )
            state.transports[(base_url, api_key)] = transport
        writer = None
        if cache is not None and keyer is not None:
            writer = (WriteBehind(partial(self._submit, cache.set_many), where=cache.directory), keyer)
        run = _SampleRun(self, settings, transport, self._limiters(state, settings), rendered, spec, plan, writer)
        bar = progress_bar(total, enabled=settings.progress_bar and total > 1, initial=total - len(seeds))
        try:
            await run.run(seeds, results, errors, bar)
        finally:
            bar.close()

    # -- cache and threads ---------------------------------------------------

    async def _cache_for(self, directory: str) -> SampleCache:
        cache = self._caches.get(directory)
        if cache is None:
            # Opened on the cache thread, not the loop: diskcache keeps one SQLite connection per thread,
            # and the one its constructor opens must be the one close() (run on that thread) closes.
            opened = await self._in_thread(SampleCache, directory)
            cache = self._caches.setdefault(directory, opened)
            if cache is not opened:  # another call opened it meanwhile
                await self._in_thread(opened.close)
        return cache

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn`` on the cache thread; the future resolves on the running loop."""
        if self._io is None:
            # One thread: SQLite serialises writers anyway, and order is kept.
            self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fw_rollouts-cache")
        return asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._submit(fn, *args)


class _Plan:
    """Which request produces which sample: sample ``s`` is choice ``j`` of the request sent with
    seed ``s - j``, where ``j = (s - first_seed) % k`` and ``k`` is ``samples_per_request``
    (so with ``k == 1``, sample ``s`` is the request sent with seed ``s``)."""

    __slots__ = ("first_seed", "k")

    def __init__(self, first_seed: int, k: int) -> None:
        self.first_seed = first_seed
        self.k = k

    def locate(self, seed: int) -> tuple[int, int]:
        """(request seed, choice index) of a sample."""
        choice = (seed - self.first_seed) % self.k
        return seed - choice, choice

    def key(self, keyer: CacheKeyer, seed: int) -> str:
        """The sample's cache key (with ``k == 1`` the same key as ever: seed alone)."""
        if self.k == 1:
            return keyer(seed)
        return keyer(*self.locate(seed))

    def requests(self, seeds: list[int]) -> list[int]:
        """The request seeds that cover ``seeds``, in order."""
        return sorted({self.locate(s)[0] for s in seeds})


class _SampleRun:
    """Fetching the missing samples of one ``generate`` call: workers pull requests from a queue."""

    def __init__(
        self,
        client: AsyncFireworks,
        settings: Settings,
        transport: Transport,
        limiters: list[Limiter],
        rendered: RenderedPrompt,
        spec: ResponseSpec,
        plan: _Plan,
        writer: tuple[WriteBehind, CacheKeyer] | None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.transport = transport
        self.limiters = limiters
        self.spec = spec
        self.plan = plan
        self.writer = writer
        self.base_url = settings.resolved_base_url
        self.retry = RetryPolicy(settings.max_retries, sleep=client._sleep, on_backoff=self._backoff)
        self.body = settings.body(rendered.text)
        self.verbatim = _verbatim_model(settings)
        self.prompt_tokens = max(1, len(rendered.text) // 4)  # until the server tells us
        self.succeeded = False
        self.stopped = False
        self.tasks: list[asyncio.Task[None]] = []
        self._templates: dict[str, bytes] = {}

    def _template(self, model: str) -> bytes:
        """The request body serialised once, ending just before the seed: each request appends its own."""
        template = self._templates.get(model)
        if template is None:
            text = json.dumps(dict(self.body, model=model), separators=(",", ":"))
            template = self._templates[model] = (text[:-1] + ',"seed":').encode()
        return template

    def _backoff(self, error: APIError, wait: float) -> None:
        if isinstance(error, (RateLimitError, ServerError)) and error.status_code in _COOL_DOWN_STATUSES:
            for limiter in self.limiters:
                limiter.overloaded(wait)

    async def _attempt(self, model: str, seed: int) -> list[FwResponse]:
        k = self.plan.k
        charge = self.limiters[0].estimate_tokens(self.prompt_tokens, self.settings.max_tokens) * k
        acquired: list[Limiter] = []
        try:
            for limiter in self.limiters:
                await limiter.acquire(charge)
                acquired.append(limiter)
            reply = await self.transport.post_completions(
                self._template(model) + b"%d}" % seed, timeout=self.settings.timeout
            )
        finally:
            for limiter in acquired:
                limiter.release()
        choices = parse_completion(decode_body(reply.content), self.spec, range(seed, seed + k))
        if len(choices) < k:
            raise MalformedResponseError(f"asked for n={k} choices, the response has {len(choices)}")
        return choices

    async def _request(self, seed: int) -> list[FwResponse]:
        wire = self.client._wire_models
        model = wire.get((self.base_url, self.settings.model), self.settings.model)
        try:
            choices = await self.retry.call(lambda: self._attempt(model, seed))
        except NotFoundError:
            if self.verbatim is None or model == self.verbatim:
                raise
            # Another server may want the model name as given, not the Fireworks id made from it.
            choices = await self.retry.call(lambda: self._attempt(self.verbatim or model, seed))
            if (self.base_url, self.settings.model) not in wire:
                log.info("%s rejected model %r; using %r as given", self.base_url, self.settings.model, self.verbatim)
            wire[(self.base_url, self.settings.model)] = self.verbatim
        usage = choices[0].usage
        if usage.prompt_tokens:
            self.prompt_tokens = usage.prompt_tokens
        for limiter in self.limiters:
            limiter.succeeded()
            limiter.observe_completion(usage.completion_tokens)
        self.succeeded = True
        return choices

    def _ends_the_call(self, error: FwRolloutsError) -> bool:
        """A failure every other sample would repeat (bad key, unknown model, a server without logprobs)."""
        if isinstance(error, MissingLogprobsError):
            return not self.succeeded
        return not is_retryable(error)

    async def _worker(
        self,
        queue: deque[int],
        wanted: set[int],
        results: dict[int, FwResponse],
        errors: dict[int, FwRolloutsError],
        bar: Any,
    ) -> None:
        k = self.plan.k
        while queue and not self.stopped:
            seed = queue.popleft()
            try:
                choices = await self._request(seed)
            except FwRolloutsError as exc:
                for s in range(seed, seed + k):
                    if s in wanted:
                        errors[s] = exc
                if self._ends_the_call(exc):
                    log.debug("request seed=%d failed for good (%s); stopping this call", seed, exc)
                    self.stopped = True
                    current = asyncio.current_task()
                    for task in self.tasks:
                        if task is not current:
                            task.cancel()
                continue
            done = 0
            for offset, response in enumerate(choices):
                s = seed + offset
                if self.writer is not None:
                    # Every choice is cached as its own sample, wanted now or not.
                    writer, keyer = self.writer
                    writer.add(self.plan.key(keyer, s), response)
                if s in wanted and s not in results:
                    results[s] = response
                    done += 1
            bar.update(done)

    async def run(
        self, seeds: list[int], results: dict[int, FwResponse], errors: dict[int, FwRolloutsError], bar: Any
    ) -> None:
        """Fetch every missing seed (or stop at the first failure that every sample would share)."""
        queue = deque(self.plan.requests(seeds))
        wanted = set(seeds)
        n_workers = min(len(queue), self.settings.max_concurrency)
        self.tasks = [
            asyncio.ensure_future(self._worker(queue, wanted, results, errors, bar)) for _ in range(n_workers)
        ]
        try:
            # asyncio.wait, not gather: a cancel from outside must reach the finally below at once.
            # Cancelling through gather only cancels each worker, and a worker can swallow that
            # (asyncio.wait_for before 3.12 returns a result that is ready as the cancel arrives),
            # then go on draining the queue.
            await asyncio.wait(self.tasks)
            for task in self.tasks:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
        finally:
            # Cancelled from outside (Ctrl-C, task.cancel()): stop every in-flight request now, and
            # take no new seed even in a worker that missed its cancel.
            self.stopped = True
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.writer is not None:
                # Whatever arrived is stored before we return or give up, even when interrupted.
                await self.writer[0].drain()


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


def _failure(errors: dict[int, FwRolloutsError], rollouts: FwRollouts) -> FwRolloutsError:
    """The error to raise for a call with failed samples: the lowest seed's, carrying the rest."""
    fatal = [e for e in errors.values() if not is_retryable(e)]
    error = fatal[0] if fatal else errors[min(errors)]
    error.rollouts = rollouts
    error.errors = dict(sorted(errors.items()))
    if len(errors) > 1 or rollouts.responses or rollouts.num_responses > 1:
        skipped = rollouts.num_responses - len(errors) - len(rollouts.responses)
        note = (
            f"{len(errors)} of {rollouts.num_responses} samples failed"
            + (f", {skipped} not requested after that" if skipped else "")
            + f"; {len(rollouts.responses)} succeeded (in error.rollouts, and cached: "
            "a re-run fetches only the missing ones)"
        )
        if note not in error.message:
            error.message = f"{error.message} [{note}]"
    return error
