"""The sampling run: fetching the missing samples of many jobs under one budget, given everything explicitly.

A :class:`SampleRun` gets its jobs from an async iterator (each :class:`Job` is one prompt's missing
samples: the body, how to parse the reply, which seeds), the :class:`Target` they all go to (server,
model, timeout, retries, concurrency) and the services it uses (a transport, a budget, the clock, the
memory of which model names a server accepted). Workers pull requests from one queue that interleaves
the jobs, so no prompt waits for another to finish; the queue is refilled from the iterator as it runs
low, so a study of a million samples holds only the requests about to be sent. Each request goes
through the budget and the retry policy; its choices are parsed into samples, handed to the job's
cache writer and reported to :class:`RunEvents` as they arrive. Nothing here reads or writes a
client's attributes, and nothing is kept once reported.

A job that pays for its prompt's echo once (:class:`EchoOnce`) sends its first request with echo and
holds its other requests until that one succeeds; they then go without echo and get the prompt's
logprobs attached from the first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ._budget import Budget, Cost, Spent
from ._clock import Clock
from ._exceptions import APIConnectionError, APIError, FwRolloutsError, MissingLogprobsError, NotFoundError
from ._models import FwResponse
from ._parsing import ResponseSpec, decode_body, parse_completion
from ._plan import Plan
from ._policy import Reachability, RetryLog, cools_down, ends_the_call, ends_the_study
from ._retry import RetryPolicy
from ._transport import Reply, Transport

__all__ = ["EchoOnce", "Job", "ModelNames", "RunEvents", "SampleRun", "SampleSink", "Target"]

log = logging.getLogger("fw_rollouts")


class SampleSink(Protocol):
    """Where finished samples go as they arrive (the cache writer)."""

    def add(self, key: str, response: Any) -> None:
        """Take one sample (or a prompt part its samples share) under its cache key; never waits."""
        ...

    async def room(self) -> None:
        """Wait until the sink is not too far behind (what keeps a long run's memory flat)."""
        ...

    async def drain(self) -> None:
        """Finish storing everything taken so far."""
        ...


class RunEvents(Protocol):
    """What a run reports, as it happens. The run keeps none of it."""

    async def sample(self, job: Job, seed: int, response: FwResponse) -> None:
        """A wanted sample arrived (awaiting it is how a slow consumer holds the run back)."""
        ...

    def failed(self, job: Job, seed: int, error: FwRolloutsError) -> None:
        """A wanted sample failed for good, with its own error instance."""
        ...

    def stopped(self, job: Job, error: FwRolloutsError) -> None:
        """The job's other samples will not be requested: ``error`` would end them all."""
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
class Target:
    """Where every request of a run goes, and the limits they share."""

    base_url: str
    """The server (for the model-name memory and messages)."""
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


@dataclass(frozen=True, slots=True)
class EchoOnce:
    """How a job pays for its prompt's echoed logprobs once instead of with every sample.

    ``part`` is the prompt's part when it is already known (from the cache). Otherwise the job's
    first request is sent with echo and ``take`` reads the part from its first choice (None: the
    server did not echo, and every request of the job then asks for echo as usual); ``keep``
    stores it. Every other request is sent without echo and ``attach`` gives each of its samples
    the part, so it reads exactly as if it had been echoed.
    """

    part: object | None
    take: Callable[[FwResponse], object | None]
    attach: Callable[[FwResponse, object], FwResponse]
    keep: Callable[[object], None]


@dataclass(frozen=True, slots=True)
class Job:
    """One prompt's missing samples: everything the run needs to request them, fixed before it starts."""

    item: int
    """The item's index in its study (0 for a single ``generate``)."""
    body: Mapping[str, Any]
    """The request body without seed (the model included; it may be renamed per server)."""
    spec: ResponseSpec
    """How to read a reply."""
    plan: Plan
    """Which request yields which sample."""
    seeds: tuple[int, ...]
    """The samples to fetch."""
    prompt_tokens: int
    """Estimated prompt tokens, until a reply says."""
    max_tokens: int | None
    """Generation budget per sample."""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Extra request headers (session affinity)."""
    cache_key: Callable[[int], str] | None = None
    """A sample's cache key from its seed; None: the job's samples are not cached."""
    echo_once: EchoOnce | None = None
    """Set when the prompt's echo is fetched once for all samples (see :class:`EchoOnce`).

    A job with no seeds asks for nothing: a source yields one before it waits a while (for samples another
    worker is fetching), so that the feed hands out the jobs it took before."""


class _JobState:
    """A job while it runs: what the workers learn about it."""

    __slots__ = (
        "carrier",
        "echo_once",
        "in_flight",
        "job",
        "parked",
        "part",
        "plain_spec",
        "prompt_tokens",
        "queued",
        "stopped",
        "succeeded",
        "templates",
        "wanted",
    )

    def __init__(self, job: Job) -> None:
        self.job = job
        self.wanted = frozenset(job.seeds)
        self.prompt_tokens = job.prompt_tokens
        self.succeeded = False
        self.stopped = False
        self.templates: dict[tuple[str, bool], bytes] = {}
        self.echo_once = job.echo_once
        self.part = job.echo_once.part if job.echo_once is not None else None
        self.plain_spec = dataclasses.replace(job.spec, echo=False)
        self.carrier = False  # a request asking for echo is on its way
        self.queued = 0  # requests of this job in the queue
        self.in_flight = 0  # requests of this job being sent (retries included)
        # Samples that came back before the prompt's part was known: delivered once it is.
        self.parked: list[tuple[int, list[FwResponse]]] = []

    @property
    def needs_echo(self) -> bool:
        """Whether the prompt's part is still to learn (so some request must ask for echo)."""
        return self.echo_once is not None and self.part is None

    def template(self, model: str, echo: bool) -> bytes:
        """The request body serialised once, ending just before the seed: each request appends its own."""
        key = (model, echo)
        template = self.templates.get(key)
        if template is None:
            body = dict(self.job.body, model=model)
            if not echo and self.echo_once is not None:
                body["echo"] = False
            text = json.dumps(body, separators=(",", ":"))
            template = self.templates[key] = (text[:-1] + ',"seed":').encode()
        return template


class _Request(NamedTuple):
    """One request handed to a worker."""

    state: _JobState
    seed: int
    echo: bool
    """Whether it asks for echo (to learn the prompt's part)."""
    extra: bool
    """Whether it is sent only for the prompt's part (its samples came back already, without echo)."""


class _Feed:
    """The request queue: jobs pulled from the source as it runs low, their requests interleaved."""

    def __init__(self, source: AsyncIterator[Job], low_water: int) -> None:
        self._source = source
        self._low_water = low_water
        self._queue: deque[tuple[_JobState, int, bool]] = deque()
        self._exhausted = False
        self._refilling = asyncio.Lock()

    @property
    def exhausted(self) -> bool:
        """Whether every job has been pulled from the source."""
        return self._exhausted

    @property
    def queued(self) -> int:
        """Requests waiting in the queue."""
        return len(self._queue)

    async def first(self) -> bool:
        """Pull the first jobs; False if there are none (nothing to request)."""
        while not self._queue and not self._exhausted:
            await self._refill()
        return bool(self._queue)

    async def next(self) -> _Request | None:
        """The next request, or None when every one has been handed out."""
        while True:
            # While another worker refills (the source may take a while), one with requests queued takes them.
            if len(self._queue) < self._low_water and not self._exhausted and not (
                self._queue and self._refilling.locked()
            ):
                async with self._refilling:
                    if len(self._queue) < self._low_water and not self._exhausted:
                        await self._refill()
            while self._queue:
                state, seed, extra = self._queue.popleft()
                state.queued -= 1
                if state.stopped:
                    continue
                # The first request of a prompt whose part is unknown asks for echo; the others go at
                # once without it (their samples wait for the part, see SampleRun._share).
                echo = extra or (state.needs_echo and not state.carrier)
                if echo:
                    state.carrier = True
                state.in_flight += 1
                return _Request(state, seed, echo, extra)
            if self._exhausted:
                return None

    def push_front(self, state: _JobState, seed: int, *, extra: bool = False) -> None:
        """Put a request at the head of the queue."""
        state.queued += 1
        self._queue.appendleft((state, seed, extra))

    async def _refill(self) -> None:
        pulled: list[_JobState] = []
        requests = len(self._queue)
        while requests < 4 * self._low_water:
            try:
                job = await self._source.__anext__()
            except StopAsyncIteration:
                self._exhausted = True
                break
            if not job.seeds:  # the source is about to wait: hand out what was pulled
                break
            state = _JobState(job)
            pulled.append(state)
            requests += len(job.plan.requests(list(job.seeds)))
        # Round robin over the jobs just pulled: the first request of each, then the second of each, ...
        lists = [deque(state.job.plan.requests(list(state.job.seeds))) for state in pulled]
        for state, seeds in zip(pulled, lists, strict=True):
            state.queued = len(seeds)
        while lists:
            for state, seeds in zip(pulled, lists, strict=True):
                if seeds:
                    self._queue.append((state, seeds.popleft(), False))
            pulled = [s for s, seeds in zip(pulled, lists, strict=True) if seeds]
            lists = [seeds for seeds in lists if seeds]


class SampleRun:
    """Fetch the samples of every job the source yields: workers pull requests from one interleaved queue."""

    def __init__(
        self,
        jobs: AsyncIterator[Job],
        target: Target,
        *,
        transport: Callable[[], Any],
        budget: Callable[[], Any],
        clock: Clock,
        models: ModelNames,
        events: RunEvents,
        sink: SampleSink | None = None,
    ) -> None:
        self.target = target
        self._get_transport = transport
        self._get_budget = budget
        self.models = models
        self.events = events
        self.clock = clock
        self.reachability = Reachability(clock.now)
        self.retry = RetryPolicy(
            target.max_retries,
            sleep=clock.sleep,
            on_backoff=self._backoff,
            gives_up=self.reachability.gives_up,
            log=RetryLog(),
        )
        self.succeeded = False
        self.stopped = False
        self.fatal: FwRolloutsError | None = None
        self.requests = 0
        """Requests sent, retries included."""
        self.spent = Spent(0, 0, 0, 0)
        """What the successful requests used, summed (every choice, wanted now or only cached)."""
        self._feed = _Feed(jobs, low_water=2 * target.max_concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self.sink = sink
        self.transport: Transport | None = None
        self.budget: Budget | None = None
        self._sends_headers = False

    def _backoff(self, error: APIError, wait: float) -> None:
        if cools_down(error) and self.budget is not None:
            self.budget.overloaded(wait)

    async def _post(self, state: _JobState, model: str, seed: int, echo: bool) -> Reply:
        assert self.transport is not None
        body = state.template(model, echo) + b"%d}" % seed
        if self._sends_headers and state.job.headers:
            return await self.transport.post_completions(body, timeout=self.target.timeout, headers=state.job.headers)
        return await self.transport.post_completions(body, timeout=self.target.timeout)

    async def _attempt(self, state: _JobState, model: str, seed: int, echo: bool) -> list[FwResponse]:
        assert self.budget is not None
        job = state.job
        k = job.plan.k
        reachability = self.reachability
        ticket = await self.budget.acquire(Cost(state.prompt_tokens, job.max_tokens, k))
        attempt = reachability.start()
        spent: Spent | None = None
        headers: Mapping[str, str] | None = None
        try:
            try:
                self.requests += 1
                reply = await self._post(state, model, seed, echo)
                headers = reply.headers
                spec = job.spec if echo or state.echo_once is None else state.plain_spec
                choices = parse_completion(decode_body(reply.content), spec, range(seed, seed + k))
                spent = _spent(choices)
                total = self.spent
                self.spent = Spent(
                    total.prompt_tokens + spent.prompt_tokens,
                    total.cached_tokens + spent.cached_tokens,
                    total.completion_tokens + spent.completion_tokens,
                    total.choices + spent.choices,
                )
            finally:
                # Exactly one release per acquire: with what the request used when it succeeded.
                self.budget.release(ticket, spent, headers)
        except APIError as exc:
            reachability.record(exc, attempt)
            raise
        except BaseException:  # cancelled, or a bug: no outcome to learn from, but no longer on its way
            reachability.abandon(attempt)
            raise
        reachability.record(None, attempt)
        return choices

    async def _request(self, state: _JobState, seed: int, echo: bool) -> list[FwResponse]:
        target = self.target
        model = self.models.get(target.base_url, target.model)
        try:
            choices = await self.retry.call(lambda: self._attempt(state, model, seed, echo))
        except NotFoundError:
            verbatim = target.verbatim_model
            if verbatim is None or model == verbatim:
                raise
            # Another server may want the model name as given, not the Fireworks id made from it.
            choices = await self.retry.call(lambda: self._attempt(state, verbatim, seed, echo))
            self.models.accept(target.base_url, target.model, verbatim)
        usage = choices[0].usage
        if usage.prompt_tokens:
            state.prompt_tokens = usage.prompt_tokens
        state.succeeded = self.succeeded = True
        return choices

    def _share(self, request: _Request, choices: list[FwResponse]) -> list[tuple[int, list[FwResponse]]]:
        """What to deliver now, by request seed: the samples with the prompt's part attached.

        A reply to the echo request gives the part, and releases the samples parked while it was
        on its way; a reply without echo before the part is known is parked.
        """
        state, seed = request.state, request.seed
        once = state.echo_once
        if once is None:
            return [(seed, choices)]
        own = [] if request.extra else [(seed, choices)]
        if request.echo:
            state.carrier = False
            part = once.take(choices[0])
            if part is None:
                # The server did not echo, so there is nothing to share: what came back is as it would be.
                state.echo_once = None
                ready, state.parked = own + state.parked, []
                return ready
            state.part = part
            once.keep(part)
            ready, state.parked = own + state.parked, []
        elif state.part is None:
            state.parked.append((seed, choices))
            return []
        else:
            ready = own
        attach, part = once.attach, state.part
        return [(s, [attach(c, part) for c in cs]) for s, cs in ready]

    def _after(self, state: _JobState, error: FwRolloutsError | None) -> None:
        """A request of ``state`` ended: ask for the prompt's part alone if its samples are all back without it."""
        if not state.parked or not state.needs_echo or state.carrier or state.queued or state.in_flight:
            return
        if state.stopped or error is not None:
            # No request is left to learn the part from: those samples cannot be given as asked (with the
            # prompt's logprobs), so they fail with the error that stopped their echo request.
            parked, state.parked = state.parked, []
            cause = error or MissingLogprobsError("the prompt's echoed logprobs could not be fetched for this sample")
            for seed, _ in parked:
                self._fail(state, seed, cause._evolve())
            return
        self._feed.push_front(state, state.parked[0][0], extra=True)

    def _fail(self, state: _JobState, seed: int, exc: FwRolloutsError) -> None:
        """Report ``exc`` for the wanted samples of the request sent with ``seed``, each its own instance."""
        job = state.job
        first = True
        for s in range(seed, seed + job.plan.k):
            if s in state.wanted:
                self.events.failed(job, s, exc if first else exc._evolve())
                first = False
        ends = ends_the_call(exc, any_succeeded=state.succeeded or self.succeeded)
        everything = ends and ends_the_study(exc)
        if isinstance(exc, APIConnectionError):
            url = self.transport.url if self.transport is not None else self.target.base_url
            if self.reachability.gives_up(exc):
                exc = self.reachability.unreachable_error(exc, url)
                ends = everything = True
            elif self.reachability.ends_the_call(exc):
                exc = self.reachability.unanswered_error(exc, url)
                ends = everything = True
        if everything and not self.stopped:
            log.debug("request seed=%d failed for good (%s); stopping the run", seed, exc)
            self.fatal = exc
            self._stop(except_current=True)
        elif ends and not state.stopped:
            log.debug("request seed=%d failed for good (%s); stopping item %d", seed, exc, job.item)
            state.stopped = True
            self.events.stopped(job, exc)

    def _stop(self, *, except_current: bool = False) -> None:
        self.stopped = True
        current = asyncio.current_task() if except_current else None
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def _worker(self) -> None:
        feed, events = self._feed, self.events
        while not self.stopped:
            request = await feed.next()
            if request is None:
                return
            state = request.state
            job = state.job
            try:
                choices = await self._request(state, request.seed, request.echo)
            except FwRolloutsError as exc:
                state.in_flight -= 1
                if request.echo:
                    state.carrier = False
                if request.extra:
                    self._after(state, exc)
                    continue
                self._fail(state, request.seed, exc)
                self._after(state, exc if state.stopped else None)
                continue
            except BaseException:
                state.in_flight -= 1
                raise
            state.in_flight -= 1
            sink, key = self.sink, job.cache_key
            for seed, ready in self._share(request, choices):
                for offset, response in enumerate(ready):
                    s = seed + offset
                    if sink is not None and key is not None:
                        sink.add(key(s), response)  # every choice is cached as its own sample, wanted now or not
                    if s in state.wanted:
                        await events.sample(job, s, response)
            self._after(state, None)
            if sink is not None:
                await sink.room()

    async def run(self) -> FwRolloutsError | None:
        """Fetch every job's seeds; the error that ended the whole run early, if one did.

        Each sample's own outcome has been reported to the events by then. Cancelled from
        outside, it stops every in-flight request and stores what arrived before it returns.
        """
        try:
            if not await self._feed.first():
                return None
            self.transport = await self._get_transport()
            self.budget = await self._get_budget()
            self._sends_headers = _takes_headers(self.transport)
            n_workers = self.target.max_concurrency
            if self._feed.exhausted:
                n_workers = min(n_workers, self._feed.queued)
            self._tasks = [asyncio.ensure_future(self._worker()) for _ in range(n_workers)]
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
            # take no new request even in a worker that missed its cancel.
            self._stop()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.sink is not None:
                # Whatever arrived is stored before we return or give up, even when interrupted.
                await self.sink.drain()
        return self.fatal


def _spent(choices: list[FwResponse]) -> Spent:
    """What one request used, as the server reported it: the prompt once (each choice carries the
    request's prompt count), the generated tokens of every choice."""
    usage = choices[0].usage
    completion = sum(c.usage.completion_tokens for c in choices)
    return Spent(usage.prompt_tokens, usage.cached_tokens or 0, completion, len(choices))


def _takes_headers(transport: Transport) -> bool:
    """Whether a transport takes per-request headers (one written before they existed does not)."""
    import inspect

    try:
        parameters = inspect.signature(transport.post_completions).parameters
    except (TypeError, ValueError):
        return False
    return "headers" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
