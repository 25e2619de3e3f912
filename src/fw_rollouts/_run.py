"""The sampling run: fetching the missing samples of one call, given everything it needs explicitly.

A :class:`SampleRun` gets a :class:`Job` (what to request: the body, how to parse the reply,
which seeds, the limits of this call) and the services it uses (a transport, a budget, the
clock, an optional cache writer, a progress bar, the memory of which model names a server
accepted). Workers pull request seeds from one queue; each request goes through the budget
and the retry policy; its choices are parsed into samples, handed to the cache writer and
counted. :meth:`SampleRun.run` returns a :class:`RunResult`: the samples that came back, one
error per sample that did not, and the error that ended the call early, if any. Nothing here
reads or writes a client's attributes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._budget import Budget, Cost, Spent
from ._clock import Clock
from ._exceptions import APIConnectionError, APIError, FwRolloutsError, NotFoundError
from ._models import FwResponse
from ._parsing import ResponseSpec, decode_body, parse_completion
from ._plan import Plan
from ._policy import Reachability, RetryLog, cools_down, ends_the_call
from ._retry import RetryPolicy
from ._transport import Transport

__all__ = ["Job", "ModelNames", "RunResult", "SampleRun", "SampleSink"]

log = logging.getLogger("fw_rollouts")


class SampleSink(Protocol):
    """Where finished samples go as they arrive (the cache writer)."""

    def add(self, seed: int, response: FwResponse) -> None:
        """Take one sample (``seed`` is its own seed, every choice included); never waits."""
        ...

    async def drain(self) -> None:
        """Finish storing everything taken so far."""
        ...


class Progress(Protocol):
    """The part of a progress bar a run uses."""

    def update(self, n: int = 1) -> Any:
        """Count ``n`` more samples done."""
        ...


class ModelNames:
    """The model name each server accepted, shared by a client and its siblings.

    Fireworks ids look like ``accounts/fireworks/models/...``; another OpenAI-compatible server
    may answer 404 for that id and want the name as the user wrote it. Once a server accepted
    the name as written, later requests use it at once.
    """

    __slots__ = ("_accepted",)

    def __init__(self) -> None:
        self._accepted: dict[tuple[str, str], str] = {}

    def get(self, base_url: str, model: str) -> str:
        """The name to send for ``model`` to ``base_url``."""
        return self._accepted.get((base_url, model), model)

    def accept(self, base_url: str, model: str, name: str) -> None:
        """``base_url`` took ``name`` for ``model``."""
        if (base_url, model) not in self._accepted:
            log.info("%s rejected model %r; using %r as given", base_url, model, name)
        self._accepted[(base_url, model)] = name


@dataclass(frozen=True, slots=True)
class Job:
    """What one call requests: everything the run needs to know, fixed before it starts."""

    body: Mapping[str, Any]
    """The request body without seed (the model included; it may be renamed per server)."""
    spec: ResponseSpec
    """How to read a reply."""
    plan: Plan
    """Which request yields which sample."""
    seeds: tuple[int, ...]
    """The samples to fetch."""
    base_url: str
    """The server (for the model-name memory and messages)."""
    url: str
    """The endpoint (for messages)."""
    model: str
    """The resolved model id."""
    verbatim_model: str | None
    """The model name as written, to try after a 404 on a server other than Fireworks."""
    timeout: float
    """Seconds one request may take."""
    max_retries: int
    """Retries after the first attempt."""
    max_concurrency: int
    """Workers (requests in flight at most; the budget may allow fewer)."""
    prompt_tokens: int
    """Estimated prompt tokens, until a reply says."""
    max_tokens: int | None
    """Generation budget per sample."""


@dataclass(slots=True)
class RunResult:
    """What a run produced."""

    results: dict[int, FwResponse] = field(default_factory=dict)
    """Seed -> sample, for every wanted seed that came back."""
    errors: dict[int, FwRolloutsError] = field(default_factory=dict)
    """Seed -> its own error, for every wanted seed that was tried and failed."""
    fatal: FwRolloutsError | None = None
    """The error that ended the call early (every other sample would have failed the same way)."""


class SampleRun:
    """Fetch the samples of one :class:`Job`: workers pull requests from a queue."""

    def __init__(
        self,
        job: Job,
        *,
        transport: Transport,
        budget: Budget,
        clock: Clock,
        models: ModelNames,
        sink: SampleSink | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.job = job
        self.transport = transport
        self.budget = budget
        self.models = models
        self.sink = sink
        self.progress = progress
        self.reachability = Reachability(clock.now)
        self.retry = RetryPolicy(
            job.max_retries,
            sleep=clock.sleep,
            on_backoff=self._backoff,
            gives_up=self.reachability.gives_up,
            log=RetryLog(),
        )
        self.prompt_tokens = job.prompt_tokens
        self.succeeded = False
        self.stopped = False
        self.result = RunResult()
        self._tasks: list[asyncio.Task[None]] = []
        self._templates: dict[str, bytes] = {}

    def _template(self, model: str) -> bytes:
        """The request body serialised once, ending just before the seed: each request appends its own."""
        template = self._templates.get(model)
        if template is None:
            text = json.dumps(dict(self.job.body, model=model), separators=(",", ":"))
            template = self._templates[model] = (text[:-1] + ',"seed":').encode()
        return template

    def _backoff(self, error: APIError, wait: float) -> None:
        if cools_down(error):
            self.budget.overloaded(wait)

    async def _attempt(self, model: str, seed: int) -> list[FwResponse]:
        k = self.job.plan.k
        reachability = self.reachability
        ticket = await self.budget.acquire(Cost(self.prompt_tokens, self.job.max_tokens, k))
        attempt = reachability.start()
        try:
            spent: Spent | None = None
            headers: Mapping[str, str] | None = None
            try:
                reply = await self.transport.post_completions(
                    self._template(model) + b"%d}" % seed, timeout=self.job.timeout
                )
                headers = reply.headers
                choices = parse_completion(decode_body(reply.content), self.job.spec, range(seed, seed + k))
                usage = choices[0].usage
                spent = Spent(
                    usage.prompt_tokens, usage.cached_tokens or 0, sum(c.usage.completion_tokens for c in choices), k
                )
            finally:
                self.budget.release(ticket, spent, headers)
        except APIError as exc:
            reachability.record(exc, attempt)
            raise
        except BaseException:  # cancelled, or a bug: no outcome to learn from, but no longer on its way
            reachability.abandon(attempt)
            raise
        reachability.record(None, attempt)
        return choices

    async def _request(self, seed: int) -> list[FwResponse]:
        job = self.job
        model = self.models.get(job.base_url, job.model)
        try:
            choices = await self.retry.call(lambda: self._attempt(model, seed))
        except NotFoundError:
            verbatim = job.verbatim_model
            if verbatim is None or model == verbatim:
                raise
            # Another server may want the model name as given, not the Fireworks id made from it.
            choices = await self.retry.call(lambda: self._attempt(verbatim, seed))
            self.models.accept(job.base_url, job.model, verbatim)
        usage = choices[0].usage
        if usage.prompt_tokens:
            self.prompt_tokens = usage.prompt_tokens
        self.succeeded = True
        return choices

    def _fail(self, seed: int, exc: FwRolloutsError, wanted: set[int]) -> None:
        """Record ``exc`` for the wanted samples of the request sent with ``seed``, each its own instance."""
        errors = self.result.errors
        first = True
        for s in range(seed, seed + self.job.plan.k):
            if s in wanted:
                errors[s] = exc if first else exc._evolve()
                first = False
        ends = ends_the_call(exc, any_succeeded=self.succeeded)
        if isinstance(exc, APIConnectionError):
            if self.reachability.gives_up(exc):
                exc = self.reachability.unreachable_error(exc, self.job.url)
                ends = True
            elif self.reachability.ends_the_call(exc):
                exc = self.reachability.unanswered_error(exc, self.job.url)
                ends = True
        if ends and not self.stopped:
            log.debug("request seed=%d failed for good (%s); stopping this call", seed, exc)
            self.result.fatal = exc
            self._stop(except_current=True)

    def _stop(self, *, except_current: bool = False) -> None:
        self.stopped = True
        current = asyncio.current_task() if except_current else None
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def _worker(self, queue: deque[int], wanted: set[int]) -> None:
        results = self.result.results
        sink, progress = self.sink, self.progress
        while queue and not self.stopped:
            seed = queue.popleft()
            try:
                choices = await self._request(seed)
            except FwRolloutsError as exc:
                self._fail(seed, exc, wanted)
                continue
            done = 0
            for offset, response in enumerate(choices):
                s = seed + offset
                if sink is not None:
                    sink.add(s, response)  # every choice is cached as its own sample, wanted now or not
                if s in wanted and s not in results:
                    results[s] = response
                    done += 1
            if progress is not None:
                progress.update(done)

    async def run(self) -> RunResult:
        """Fetch every seed of the job (or stop at the first failure that every sample would share)."""
        queue = deque(self.job.plan.requests(list(self.job.seeds)))
        wanted = set(self.job.seeds)
        n_workers = min(len(queue), self.job.max_concurrency)
        self._tasks = [asyncio.ensure_future(self._worker(queue, wanted)) for _ in range(n_workers)]
        try:
            # asyncio.wait, not gather: a cancel from outside must reach the finally below at once.
            # Cancelling through gather only cancels each worker, and a worker can swallow that
            # (asyncio.wait_for before 3.12 returns a result that is ready as the cancel arrives),
            # then go on draining the queue.
            await asyncio.wait(self._tasks)
            for task in self._tasks:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
        finally:
            # Cancelled from outside (Ctrl-C, task.cancel()): stop every in-flight request now, and
            # take no new seed even in a worker that missed its cancel.
            self._stop()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.sink is not None:
                # Whatever arrived is stored before we return or give up, even when interrupted.
                await self.sink.drain()
        return self.result
