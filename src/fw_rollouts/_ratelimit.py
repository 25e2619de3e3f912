"""The limiter: the in-process :class:`~fw_rollouts._budget.Budget`, which every client uses by default.

One :class:`Limiter` per client and per event loop (asyncio primitives belong to the loop
that first waits on them, which is why the peer's process-global limiter broke on a
second ``asyncio.run``). It combines:

* a concurrency window of at most ``max_concurrency`` requests in flight;
* aiolimiter token buckets for requests and tokens per minute, dripping on the SDK's
  :class:`~fw_rollouts._clock.Clock` rather than on the event loop's time;
* a cool-down shared by every request of the client: after a 429 (or 503) nobody starts a
  request until the server's Retry-After, or the backoff, has passed;
* additive-increase / multiplicative-decrease of the window: each overload halves it (once
  per cool-down) and each success widens it by one, back up to ``max_concurrency``.

Together these make a storm of 429s slow the whole client down instead of turning into a
storm of retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from aiolimiter import AsyncLimiter

from ._budget import Budget, Cost
from ._clock import SYSTEM_CLOCK, Clock

__all__ = ["Limiter"]

log = logging.getLogger("fw_rollouts.ratelimit")

# Weight of the newest observation in the running estimate of completion tokens per choice.
_EMA_WEIGHT = 0.2
# What a choice may generate when the request sets no max_tokens: the completions endpoint's default.
_DEFAULT_MAX_TOKENS = 16
# Shortest wait for a bucket: float rounding can leave a shortfall too small to move the clock on.
_MIN_WAIT = 1e-3


class _Bucket(AsyncLimiter):
    """An aiolimiter bucket that drips on a :class:`Clock`, with a first-come-first-served queue in front.

    aiolimiter internals this relies on (``test_the_aiolimiter_internals_the_bucket_relies_on`` checks them):
    ``_leak()`` is the only place AsyncLimiter reads time and both ``has_capacity()`` and ``acquire()`` call
    it; it drains ``_level`` at ``_rate_per_sec`` since ``_last_check``; and ``acquire(amount)`` returns
    without waiting (nor touching the loop's timers) when ``has_capacity(amount)`` is true. So we wait on
    the clock ourselves until there is capacity and only then call ``acquire``.
    """

    __slots__ = ("_clock", "_queue")

    def __init__(self, per_minute: float, clock: Clock) -> None:
        # At least one unit fits, so a request bucket below one request per minute still admits requests
        # (aiolimiter refuses an acquire larger than max_rate); the rate stays per_minute either way.
        capacity = max(per_minute, 1.0)
        super().__init__(capacity, 60.0 * capacity / per_minute)
        self._clock = clock
        self._queue = asyncio.Lock()

    def _leak(self) -> None:
        now = self._clock.now()
        if self._level:
            self._level = max(self._level - (now - self._last_check) * self._rate_per_sec, 0.0)
        self._last_check = now

    def shortfall(self, amount: float) -> float:
        """Seconds until ``amount`` fits in the bucket (0 if it fits now)."""
        self._leak()
        return max(0.0, (self._level + amount - self.max_rate) / self._rate_per_sec)

    async def take(self, amount: float) -> None:
        """Wait on the clock until ``amount`` fits, then take it; ``amount`` must be at most ``max_rate``."""
        # Only the head of the queue watches the clock: no thundering herd, and big requests are not starved.
        async with self._queue:
            while (wait := self.shortfall(amount)) > 0:
                await self._clock.sleep(max(wait, _MIN_WAIT))
            await self.acquire(amount)  # immediate: there is capacity and nothing yields in between


class Limiter:
    """Admission control for one client on one event loop: the default :class:`~fw_rollouts._budget.Budget`.

    ``tokens_per_minute`` charges each request ``choices * (prompt_tokens + expected completion)``,
    where the expected completion is a running average of what choices really generated (never
    more than ``max_tokens``; ``max_tokens`` itself until the first success), so the budget tracks
    real usage rather than the worst case. A charge larger than the whole bucket is charged the
    whole bucket. Every wait and reading of time goes through ``clock``.
    """

    __slots__ = (
        "_clock",
        "_completion_estimate",
        "_in_flight",
        "_requests",
        "_resume_at",
        "_tokens",
        "_waiters",
        "_window",
        "max_concurrency",
        "requests_per_minute",
        "tokens_per_minute",
    )

    max_concurrency: int
    """The widest the window gets: the most requests ever in flight at once."""
    requests_per_minute: float | None
    """How many requests may start per minute (``None``: no limit); up to this many at once in a burst."""
    tokens_per_minute: float | None
    """How many tokens (prompt and expected completion) requests may be charged per minute (``None``: no limit)."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._in_flight = 0
        self._window = max_concurrency
        self._requests = _Bucket(requests_per_minute, clock) if requests_per_minute else None
        self._tokens = _Bucket(tokens_per_minute, clock) if tokens_per_minute else None
        self._resume_at = 0.0
        self._completion_estimate: float | None = None

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

    def observe(self, prompt_tokens: int, completion_tokens: int) -> None:
        """A request succeeded: widen the window by one (up to ``max_concurrency``) and learn its completion size.

        The counts are one choice's; only ``completion_tokens`` is used here (the prompt comes with each
        :class:`~fw_rollouts._budget.Cost`).
        """
        self._widen()
        self._learn(completion_tokens)

    def _widen(self) -> None:
        if self._window < self.max_concurrency:
            self._window += 1
            self._hand_off()

    def _learn(self, completion_tokens: int) -> None:
        if self._completion_estimate is None:
            self._completion_estimate = float(completion_tokens)
        else:
            self._completion_estimate += _EMA_WEIGHT * (completion_tokens - self._completion_estimate)

    def _expected_completion(self, max_tokens: int | None) -> int:
        cap = max_tokens if max_tokens is not None else _DEFAULT_MAX_TOKENS
        expected = self._completion_estimate
        return cap if expected is None else min(cap, int(expected + 0.5))

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

    # -- admission -------------------------------------------------------------

    async def acquire(self, cost: Cost) -> object:
        """Wait for room in the window, the end of any cool-down and both buckets; the ticket is ``None``.

        Pass the ticket to :meth:`release` when the request is over.
        """
        await self._enter()
        try:
            await self._cool_down()
            if self._requests is not None:
                await self._requests.take(1.0)
            tokens = self._tokens
            if tokens is not None:
                charge = cost.choices * (cost.prompt_tokens + self._expected_completion(cost.max_tokens))
                if charge > 0:
                    await tokens.take(min(float(charge), tokens.max_rate))
            # An overload reported while we waited for the buckets holds us back too.
            await self._cool_down()
        except BaseException:
            self._leave()
            raise
        return None

    async def _cool_down(self) -> None:
        while (delay := self._resume_at - self._clock.now()) > 0:
            await self._clock.sleep(delay)

    def release(self, ticket: object) -> None:
        """Give back the room taken by :meth:`acquire` (once per ``acquire``); never raises."""
        self._leave()

    async def aclose(self) -> None:
        """Nothing to give back: the limiter holds no connections and its reservations end with the process."""

    def __repr__(self) -> str:
        expected = self._completion_estimate
        return (
            f"<Limiter(max_concurrency={self.max_concurrency}, requests_per_minute={self.requests_per_minute}, "
            f"tokens_per_minute={self.tokens_per_minute}) [window: {self._window}, in flight: {self._in_flight}, "
            f"waiting: {len(self._waiters)}, cooling down: {self.cooling_down_for:.2f}s, "
            f"expected completion: {'unknown' if expected is None else f'{expected:.1f} tokens'}]>"
        )


if TYPE_CHECKING:

    def _limiter_is_a_budget(limiter: Limiter) -> Budget:
        return limiter  # mypy checks here that Limiter satisfies the protocol
