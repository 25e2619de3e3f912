"""The limiter: the in-process :class:`~fw_rollouts._budget.Budget`, which every client uses by default.

One :class:`Limiter` per client and per event loop (asyncio primitives belong to the loop
that first waits on them, which is why the peer's process-global limiter broke on a
second ``asyncio.run``). It combines:

* a concurrency window of at most ``max_concurrency`` requests in flight;
* an aiolimiter token bucket per per-minute limit, dripping on the SDK's
  :class:`~fw_rollouts._clock.Clock`: requests (a request with ``n`` choices counts ``n``, as
  Fireworks counts them), prompt tokens, generated tokens and all tokens together;
* a cool-down shared by every request of the client: after a 429 (or 503) nobody starts a
  request until the server's Retry-After, or the backoff, has passed;
* additive-increase / multiplicative-decrease of the window: each overload halves it (once
  per cool-down) and each success widens it by one, back up to ``max_concurrency``.

The service counts each limit over a rolling minute. A bucket of capacity ``C`` refilling at
``r`` a second lets through at most ``r * W + C`` in any ``W`` seconds, so a bucket holding a
whole minute's worth would let up to twice the limit into some rolling minute. Each bucket
therefore holds only :data:`PERIOD` seconds' worth and refills at ``limit / (W + PERIOD)``,
``W`` being the minute plus a margin for the service seeing a request a little after we send
it: no rolling minute goes over the limit, and a client that keeps the bucket busy gets
``60 / (W + PERIOD)`` of it (94.5%).

Token limits work by reservation: a request takes its prompt (estimated) and ``max_tokens`` per
choice from the buckets when it starts; when it is over, the reservation is settled to what the
server reported, by changing the bucket's level: the unused part is given back, an overrun is
charged, and a request that failed gives its tokens back. So what could still be generated
never goes over a limit, and what was not generated is free again at once.

The service's own limits are read from each successful reply's ``x-ratelimit-*`` headers where
it sends them (:func:`read_ratelimit_headers`): a limit below ours becomes ours, a
``remaining`` count lower than ours charges our buckets with the difference, and
``x-ratelimit-over-limit: yes`` narrows the window. Absent or unreadable headers change nothing.

Together these make a storm of 429s slow the whole client down instead of turning into a
storm of retries.

The buckets (:mod:`._bucket`) are made only for the limits set, so aiolimiter (whose import reads the
installed packages' metadata, tens of milliseconds) is imported only by a client that sets one.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ._budget import Budget, Cost, Spent
from ._clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from ._bucket import Bucket as _Bucket

__all__ = ["METERS", "PERIOD", "GenerationEstimate", "Limiter", "ServiceLimits", "read_ratelimit_headers"]

log = logging.getLogger("fw_rollouts.ratelimit")

METERS: Final = ("requests", "prompt_tokens", "uncached_prompt_tokens", "generated_tokens", "tokens")
"""What the limiter counts per minute, in this order everywhere (limits, usage, header readings)."""
_REQUESTS, _PROMPT, _UNCACHED, _GENERATED, _TOKENS = range(len(METERS))
_TOKEN_METERS: Final = (_PROMPT, _UNCACHED, _GENERATED, _TOKENS)

WINDOW: Final = 60.0
"""Seconds over which the service counts every limit: its limits are per minute."""
PERIOD: Final = 3.0
"""Seconds of its rate each bucket holds: the most a client sends at once, and the share of a limit it gives up
(``WINDOW + _MARGIN + PERIOD`` seconds' worth of the rate is one minute's limit)."""
# The service counts a request when it arrives, a little after we let it start: a bucket keeps any
# window this much longer than a minute under the limit, so jitter cannot put an extra request in one.
_MARGIN = 0.5
_SPAN = WINDOW + _MARGIN
# Weight of the newest observation in the running estimate of completion tokens per choice.
_EMA_WEIGHT = 0.2
# What a choice may generate when the request sets no max_tokens and no reply taught us better: the
# completions endpoint's default.
_DEFAULT_MAX_TOKENS = 16
# Shortest wait: float rounding can leave a shortfall too small to move the clock on.
_MIN_WAIT = 1e-3
_SLACK = 1e-6
# The window narrows at most this often on over-limit replies (a burst of them is one signal).
_OVER_LIMIT_PERIOD = 1.0
# Header values outside this range per minute are garbled, not limits: below one a minute would stall the client.
_SANE_LIMIT = (1.0, 1e12)
_SANE_REMAINING = 1e12
_LONGEST_VALUE = 64


# -- the service's headers (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """What a reply's ``x-ratelimit-*`` headers said, per minute, one entry per :data:`METERS` (None: not said)."""

    limits: tuple[float | None, ...]
    """The service's limit of each meter, per minute."""
    remaining: tuple[float | None, ...]
    """What is left of each limit in the service's current minute."""
    over_limit: bool | None
    """``x-ratelimit-over-limit``: yes (the request was over a limit and de-prioritised), no, or not sent."""


# The header suffix of each meter ("x-ratelimit-limit-<suffix>", "x-ratelimit-remaining-<suffix>"); the
# total of all tokens has none.
_SUFFIXES: Final = ("requests", "tokens-prompt", "tokens-cache-adjusted-prompt", "tokens-generated", None)
_PREFIX = "x-ratelimit-"
_LIMIT_KEYS: Final = tuple(f"limit-{s}" if s else "" for s in _SUFFIXES)
_REMAINING_KEYS: Final = tuple(f"remaining-{s}" if s else "" for s in _SUFFIXES)
_NOTHING: Final[tuple[float | None, ...]] = (None,) * len(METERS)


def _number(value: object) -> float | None:
    if not isinstance(value, str) or len(value) > _LONGEST_VALUE:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def read_ratelimit_headers(headers: Mapping[str, str]) -> ServiceLimits | None:
    """The service's limits from a reply's headers, or None when it sent no ``x-ratelimit-*`` header.

    Two documented schemes share the header names. The older one: ``x-ratelimit-limit-requests``,
    ``-tokens-prompt`` and ``-tokens-generated`` per minute, with ``x-ratelimit-remaining-*`` beside
    them. The newer one: ``X-Ratelimit-Limit-Tokens-Prompt``, ``-Cache-Adjusted-Prompt`` and
    ``-Generated`` in tokens per second; it is recognised by the cache-adjusted header, or by a
    remaining count above its limit, which only a per-second limit can be. Values that are not
    numbers, not finite, or a limit outside one to 10^12 per minute are ignored; a name sent twice
    counts at its lower value. Never raises for any mapping of strings.
    """
    found: dict[str, float] = {}
    over_limit: bool | None = None
    for name, value in headers.items():
        # Most headers are not ours: one character tells, before any slicing or lowering.
        if not isinstance(name, str) or name[:1] not in "xX" or name[:12].lower() != _PREFIX:
            continue
        key = name[12:].lower()
        if key == "over-limit":
            flag = value.strip().lower() if isinstance(value, str) else ""
            over_limit = True if flag == "yes" else False if flag == "no" else over_limit
            continue
        number = _number(value)
        if number is not None:
            known = found.get(key)
            found[key] = number if known is None else min(known, number)
    if not found:
        return None if over_limit is None else ServiceLimits(_NOTHING, _NOTHING, over_limit)
    limits = [found.get(key) if key else None for key in _LIMIT_KEYS]
    remaining = [found.get(key) if key else None for key in _REMAINING_KEYS]
    per_second = limits[_UNCACHED] is not None or any(
        (limit := limits[m]) is not None and (left := remaining[m]) is not None and left > limit
        for m in _TOKEN_METERS
    )
    for m, limit in enumerate(limits):
        if limit is not None:
            if per_second and m != _REQUESTS:
                limit *= 60.0
            limits[m] = limit if _SANE_LIMIT[0] <= limit <= _SANE_LIMIT[1] else None
        left = remaining[m]
        if left is not None:
            remaining[m] = None if left > _SANE_REMAINING else max(0.0, left)
    return ServiceLimits(tuple(limits), tuple(remaining), over_limit)


def _new_bucket(limit: float, clock: Clock, level: float = 0.0) -> _Bucket:
    """A bucket for one per-minute ``limit`` (see :class:`._bucket.Bucket`)."""
    from ._bucket import Bucket

    return Bucket(limit, clock, level)


# -- what a request may generate ----------------------------------------------------------------------------


class GenerationEstimate:
    """What one choice of a request that sets no ``max_tokens`` is reserved for: a running average of what choices
    really generated, the endpoint's default (16) until the first reply. Shared by every budget that reserves."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float | None = None
        """The running average of generated tokens per choice (None: no reply yet)."""

    def learn(self, spent: Spent) -> None:
        """Take in what a finished request generated."""
        if spent.choices < 1:
            return
        per_choice = spent.completion_tokens / spent.choices
        self.value = per_choice if self.value is None else self.value + _EMA_WEIGHT * (per_choice - self.value)

    def expected(self) -> int:
        """Tokens to reserve for one choice without ``max_tokens``."""
        return _DEFAULT_MAX_TOKENS if self.value is None else int(self.value + 0.5)


# -- what the service counts -------------------------------------------------------------------------------

class _Tally:
    """What this client sent in each second of the last span, per meter, and their sum: only to read the service's
    ``remaining`` counts (whatever the service counts beyond it, others on the account spent) and to start the
    bucket of a limit announced mid-run. The buckets, not this, decide when a request starts."""

    __slots__ = ("_by_second", "_seconds", "_total")

    def __init__(self) -> None:
        self._seconds: deque[int] = deque()  # in order, each once
        self._by_second: dict[int, list[float]] = {}
        self._total = [0.0] * len(METERS)

    def add(self, now: float, amounts: list[float]) -> int:
        """Count ``amounts`` at ``now``; the second they are counted in (for :meth:`adjust`)."""
        second = int(now)
        slot = self._by_second.get(second)
        if slot is None:
            self._expire(now)
            self._seconds.append(second)
            self._by_second[second] = list(amounts)
        else:
            for m, amount in enumerate(amounts):
                slot[m] += amount
        total = self._total
        for m, amount in enumerate(amounts):
            total[m] += amount
        return second

    def adjust(self, second: int, m: int, delta: float) -> None:
        """Change what was counted in ``second`` (a settled reservation), if it is still counted."""
        slot = self._by_second.get(second)
        if slot is not None:
            slot[m] += delta
            self._total[m] += delta

    def _expire(self, now: float) -> None:
        oldest = math.floor(now - _SPAN)  # the last second that overlaps the span is still counted
        seconds, total = self._seconds, self._total
        while seconds and seconds[0] < oldest:
            for m, amount in enumerate(self._by_second.pop(seconds.popleft())):
                total[m] -= amount
        if not seconds:
            self._total = [0.0] * len(METERS)  # no float dust left behind

    def last_span(self, now: float) -> list[float]:
        """Per meter, what was counted in every second that overlaps the last span."""
        self._expire(now)
        return list(self._total)


class _Ticket:
    """One request's reservation: what it took, when, and each bucket's ``emptied`` count at that moment."""

    __slots__ = ("amounts", "buckets", "second", "settled")

    def __init__(self, amounts: list[float], buckets: tuple[tuple[_Bucket, int] | None, ...], second: int) -> None:
        self.amounts = amounts
        self.buckets = buckets
        self.second = second
        self.settled = False


class Limiter:
    """Admission control for one client on one event loop: the default :class:`~fw_rollouts._budget.Budget`.

    Each limit in force has an aiolimiter bucket (:data:`PERIOD` seconds of its rate, see the module
    docstring): a request may start when its reservation fits in every bucket, first come first served.
    The reservation is its prompt estimate per choice and ``max_tokens`` per choice for what it generates
    (with no ``max_tokens``: a running average of what choices really generated, 16 until the first
    reply); it is settled to the reported usage when the request is over, and given back when it failed
    (a request stays counted as requests: the service may have counted it). A reply without any usage
    keeps its reservation.

    A request larger than a bucket (``n=128`` under 60 requests a minute, say) is not refused and cannot
    deadlock: it waits until the bucket has been empty long enough, goes, and the bucket then stays full
    for as long as it is larger, so the long-run rate stays at the limit. Every wait and reading of time
    goes through ``clock``.
    """

    __slots__ = (
        "_buckets",
        "_clock",
        "_estimate",
        "_in_flight",
        "_limits",
        "_narrowed_at",
        "_queue",
        "_resume_at",
        "_service",
        "_tally",
        "_user",
        "_waiters",
        "_wake",
        "_window",
        "generated_tokens_per_minute",
        "max_concurrency",
        "prompt_tokens_per_minute",
        "requests_per_minute",
        "tokens_per_minute",
    )

    max_concurrency: int
    """The widest the window gets: the most requests ever in flight at once."""
    requests_per_minute: float | None
    """How many requests may start per minute, each choice counted (``None``: no limit of ours)."""
    tokens_per_minute: float | None
    """Prompt and generated tokens together per minute (``None``: no limit of ours)."""
    prompt_tokens_per_minute: float | None
    """Prompt tokens per minute, cached ones included (``None``: no limit of ours)."""
    generated_tokens_per_minute: float | None
    """Generated tokens per minute (``None``: no limit of ours)."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        prompt_tokens_per_minute: float | None = None,
        generated_tokens_per_minute: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.prompt_tokens_per_minute = prompt_tokens_per_minute
        self.generated_tokens_per_minute = generated_tokens_per_minute
        self._clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._in_flight = 0
        self._window = max_concurrency
        self._resume_at = 0.0
        self._narrowed_at = -math.inf
        self._estimate = GenerationEstimate()
        user: list[float | None] = [None] * len(METERS)
        user[_REQUESTS], user[_TOKENS] = requests_per_minute, tokens_per_minute
        user[_PROMPT], user[_GENERATED] = prompt_tokens_per_minute, generated_tokens_per_minute
        self._user: tuple[float | None, ...] = tuple(user)
        self._service: list[float | None] = [None] * len(METERS)
        self._limits = self._user  # in force: ours, or the service's where lower (kept up to date by _set_service)
        self._buckets: list[_Bucket | None] = [
            None if limit is None else _new_bucket(limit, clock) for limit in self._limits
        ]
        self._tally = _Tally()  # kept whether or not a limit is set: a limit announced later starts from it
        self._queue = asyncio.Lock()  # first come, first served: only the head of the queue watches the clock
        self._wake: asyncio.Future[None] | None = None

    # -- feedback --------------------------------------------------------------

    def overloaded(self, seconds: float) -> None:
        """The service said it is overloaded (429/503): nobody starts for ``seconds``, and the window narrows."""
        now = self._clock.now()
        if now >= self._resume_at:
            # The first overload of a cool-down halves the window; the rest of that wave agree with it.
            self._window = max(1, self._window // 2)
        resume = now + seconds
        if resume > self._resume_at:
            self._resume_at = resume
        log.debug("overloaded: cooling down for %.2fs, window %d", seconds, self._window)

    def _widen(self) -> None:
        if self._window < self.max_concurrency:
            self._window += 1
            self._hand_off()

    def _generation(self, max_tokens: int | None) -> float:
        """What one choice may generate, as reserved."""
        return float(max_tokens if max_tokens is not None else self._estimate.expected())

    # -- the window ------------------------------------------------------------

    async def _enter(self) -> None:
        if self._in_flight < self._window and not self._waiters:
            self._in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # whoever resolves it has already counted us in
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._leave()  # handed a place just as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def _leave(self) -> None:
        self._in_flight -= 1
        self._hand_off()

    def _hand_off(self) -> None:
        # Synchronous on purpose: it runs in finally blocks, where awaiting could be cancelled.
        while self._waiters and self._in_flight < self._window:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)

    @property
    def window(self) -> int:
        """How many requests may be in flight now."""
        return self._window

    @property
    def cooling_down_for(self) -> float:
        """Seconds left of the current cool-down (0 if none)."""
        return max(0.0, self._resume_at - self._clock.now())

    # -- the buckets -----------------------------------------------------------

    @property
    def limits(self) -> dict[str, float | None]:
        """The per-minute limits in force, by :data:`METERS` name: ours, or the service's where it is lower."""
        return dict(zip(METERS, self._limits, strict=True))

    def levels(self) -> dict[str, float | None]:
        """How full each limit's bucket is now, by :data:`METERS` name (None: no limit in force)."""
        return {name: None if b is None else b.level() for name, b in zip(METERS, self._buckets, strict=True)}

    def used(self) -> dict[str, float]:
        """What this client sent in the last minute, by :data:`METERS` name (reservations of those in flight)."""
        return dict(zip(METERS, self._tally.last_span(self._clock.now()), strict=True))

    def _set_service(self, m: int, limit: float) -> None:
        self._service[m] = limit
        old = self._limits[m]
        self._limits = tuple(
            service if user is None else user if service is None else min(user, service)
            for user, service in zip(self._user, self._service, strict=True)
        )
        new = self._limits[m]
        if new == old or new is None:
            return
        # A new bucket starts as full as keeps every rolling minute under the new limit: with all that was
        # sent in the last span counted as if sent now, or with the old bucket's level plus what its faster
        # rate may have let through beyond the new one's over a span; both hold, the lower is kept.
        level = self._tally.last_span(self._clock.now())[m]
        bucket = self._buckets[m]
        if bucket is not None:
            fresh = _new_bucket(new, self._clock)
            level = min(level, bucket.level() + _SPAN * max(0.0, bucket._rate_per_sec - fresh._rate_per_sec))
        self._buckets[m] = _new_bucket(new, self._clock, level)

    def _shortfall(self, amounts: list[float]) -> float:
        """Seconds until ``amounts`` fit in every bucket (0: now)."""
        wait = 0.0
        for bucket, amount in zip(self._buckets, amounts, strict=True):
            if bucket is not None and amount > 0:
                wait = max(wait, bucket.shortfall(amount))
        # A little past the moment it fits: float rounding would otherwise leave a sliver to wait for again.
        return wait if wait <= 0 else max(wait + _SLACK, _MIN_WAIT)

    async def _take(self, amounts: list[float]) -> _Ticket:
        if self._queue.locked() or self._shortfall(amounts) > 0:
            async with self._queue:
                while (wait := self._shortfall(amounts)) > 0:
                    await self._sleep_or_wake(wait)
        held: list[tuple[_Bucket, int] | None] = []
        for bucket, amount in zip(self._buckets, amounts, strict=True):
            if bucket is None:
                held.append(None)
                continue
            if amount > 0:
                await bucket.take(amount)  # never yields: the buckets cannot change between the check and here
            held.append((bucket, bucket.emptied))
        return _Ticket(amounts, tuple(held), self._tally.add(self._clock.now(), amounts))

    async def _sleep_or_wake(self, seconds: float) -> None:
        """Sleep ``seconds`` on the clock, or less if a release gives room back (or a limit rises) meanwhile."""
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wake = wake
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        sleeper.add_done_callback(lambda _: None if wake.done() else wake.set_result(None))
        try:
            await wake  # cheaper than asyncio.wait: a paced client sleeps here once a request
        finally:
            self._wake = None
            sleeper.cancel()
            wake.cancel()

    def _room_changed(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # -- admission -------------------------------------------------------------

    async def acquire(self, cost: Cost) -> object:
        """Wait for room in the window, the end of any cool-down and in every bucket; return the ticket.

        The ticket holds the request's reservation; pass it to :meth:`release` when the request is over.
        """
        await self._enter()
        try:
            await self._cool_down()
            choices = max(cost.choices, 1)
            prompt = float(max(cost.prompt_tokens, 0) * choices)
            generated = self._generation(cost.max_tokens) * choices
            ticket = await self._take([float(choices), prompt, prompt, generated, prompt + generated])
            # An overload reported while we waited for the buckets holds us back too.
            await self._cool_down()
        except BaseException:
            self._leave()
            raise
        return ticket

    async def _cool_down(self) -> None:
        while (delay := self._resume_at - self._clock.now()) > 0:
            await self._clock.sleep(delay)

    def release(self, ticket: object, spent: Spent | None = None, headers: Mapping[str, str] | None = None) -> None:
        """The request is over (once per :meth:`acquire`): settle its reservation, read the service's headers
        and give back its place in the window. Never raises."""
        try:
            if isinstance(ticket, _Ticket) and not ticket.settled:
                self._settle(ticket, spent)
                over_limit = self._read(headers) if headers is not None else False
                if spent is not None and not over_limit:
                    self._widen()
        except Exception:  # a bug here must not leak a place in the window
            log.exception("the limiter could not settle a request")
        finally:
            self._leave()

    def _settle(self, ticket: _Ticket, spent: Spent | None) -> None:
        ticket.settled = True
        if spent is None:
            actual = [ticket.amounts[_REQUESTS], 0.0, 0.0, 0.0, 0.0]
        elif spent.prompt_tokens or spent.completion_tokens:
            self._estimate.learn(spent)
            prompt = float(max(spent.prompt_tokens, 0))
            uncached = max(prompt - max(spent.cached_tokens, 0), 0.0)
            generated = float(max(spent.completion_tokens, 0))
            actual = [ticket.amounts[_REQUESTS], prompt, uncached, generated, prompt + generated]
        else:
            return  # no usage reported: the reservation is the best count there is
        for m, (amount, reserved) in enumerate(zip(actual, ticket.amounts, strict=True)):
            delta = amount - reserved
            if not delta:
                continue
            self._tally.adjust(ticket.second, m, delta)
            bucket = self._buckets[m]
            if bucket is None:
                continue
            if delta > 0:
                bucket.charge(delta)
            elif (held := ticket.buckets[m]) is not None and held[0] is bucket:
                bucket.give_back(-delta, held[1])
        ticket.amounts = actual
        self._room_changed()

    def _read(self, headers: Mapping[str, str]) -> bool:
        """Take in the service's limits from a successful reply's headers; whether it said over-limit."""
        said = read_ratelimit_headers(headers)
        if said is None:
            return False
        now = self._clock.now()
        raised = False
        for m, limit in enumerate(said.limits):
            if limit is not None and limit != self._service[m]:
                old = self._limits[m]
                self._set_service(m, limit)
                new = self._limits[m]
                if new != old:
                    log.debug("the service's %s limit: %g a minute; ours now %s", METERS[m], limit, new)
                    raised = raised or old is None or (new is not None and new > old)
        # The service counts more than we sent (another client on the account): that much more is charged.
        if any(left is not None for left in said.remaining):
            ours = self._tally.last_span(now)
            phantom = [0.0] * len(METERS)
            for m, left in enumerate(said.remaining):
                server_limit = said.limits[m] if said.limits[m] is not None else self._limits[m]
                if left is None or server_limit is None:
                    continue
                phantom[m] = extra = max(0.0, (server_limit - left) - ours[m])
                bucket = self._buckets[m]
                if bucket is not None:
                    bucket.charge(extra)
            if any(phantom):
                self._tally.add(now, phantom)
        if raised:
            self._room_changed()
        if said.over_limit:
            if now >= self._narrowed_at + _OVER_LIMIT_PERIOD:
                self._narrowed_at = now
                self._window = max(1, self._window // 2)
                log.debug("over the service's limit: window %d", self._window)
            return True
        return False

    async def aclose(self) -> None:
        """Nothing to give back: the limiter holds no connections and its reservations end with the process."""

    def __repr__(self) -> str:
        expected = self._estimate.value
        limits = ", ".join(f"{name}={limit:g}" for name, limit in self.limits.items() if limit is not None)
        return (
            f"<Limiter(max_concurrency={self.max_concurrency}, requests_per_minute={self.requests_per_minute}, "
            f"tokens_per_minute={self.tokens_per_minute}, prompt_tokens_per_minute={self.prompt_tokens_per_minute}, "
            f"generated_tokens_per_minute={self.generated_tokens_per_minute}) [window: {self._window}, "
            f"in flight: {self._in_flight}, waiting: {len(self._waiters)}, "
            f"cooling down: {self.cooling_down_for:.2f}s, limits in force: {limits or 'none'}, "
            f"expected completion: {'unknown' if expected is None else f'{expected:.1f} tokens'}]>"
        )


if TYPE_CHECKING:

    def _limiter_is_a_budget(limiter: Limiter) -> Budget:
        return limiter  # mypy checks here that Limiter satisfies the protocol
