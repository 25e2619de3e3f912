"""The limiter: how many requests may be in flight, how fast they may start, and the shared cool-down.

One :class:`Limiter` per client and per event loop (asyncio primitives belong to the loop
that first waits on them, which is why the peer's process-global limiter broke on a
second ``asyncio.run``). It combines:

* a concurrency window of at most ``max_concurrency`` requests in flight;
* aiolimiter token buckets for requests and tokens per minute;
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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter

__all__ = ["Limiter"]

log = logging.getLogger("fw_rollouts.ratelimit")

# Weight of the newest observation in the running estimate of completion tokens per request.
_EMA_WEIGHT = 0.2


class Limiter:
    """Admission control for one client on one event loop.

    ``tokens_per_minute`` charges each request its prompt tokens plus the expected
    completion tokens (a running average of what requests really generated, never more
    than ``max_tokens``), so the budget tracks real usage rather than the worst case.
    ``clock`` and ``sleep`` are injectable so tests run on virtual time.
    """

    __slots__ = (
        "_clock",
        "_completion_estimate",
        "_in_flight",
        "_requests",
        "_resume_at",
        "_sleep",
        "_tokens",
        "_waiters",
        "_window",
        "max_concurrency",
        "requests_per_minute",
        "tokens_per_minute",
    )

    def __init__(
        self,
        *,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._in_flight = 0
        self._window = max_concurrency
        self._requests = AsyncLimiter(requests_per_minute, 60) if requests_per_minute else None
        self._tokens = AsyncLimiter(tokens_per_minute, 60) if tokens_per_minute else None
        self._clock = clock
        self._sleep = sleep
        self._resume_at = 0.0
        self._completion_estimate: float | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # -- feedback --------------------------------------------------------------

    def overloaded(self, seconds: float) -> None:
        """The service said it is overloaded (429/503): cool the whole client down and narrow the window."""
        now = self._now()
        if now >= self._resume_at:
            # The first overload of a cool-down halves the window; the rest of that wave agree with it.
            self._window = max(1, self._window // 2)
        resume = now + seconds
        if resume > self._resume_at:
            self._resume_at = resume
        log.debug("overloaded: cooling down for %.2fs, window %d", seconds, self._window)

    def succeeded(self) -> None:
        """A request went through: widen the window by one, up to ``max_concurrency``."""
        if self._window < self.max_concurrency:
            self._window += 1
            self._hand_off()

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
        return max(0.0, self._resume_at - self._now())

    def estimate_tokens(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """Tokens to charge a request: prompt plus expected completion."""
        expected = self._completion_estimate
        cap = max_tokens if max_tokens is not None else 16
        completion = cap if expected is None else min(cap, int(expected + 0.5))
        return prompt_tokens + completion

    def observe_completion(self, completion_tokens: int) -> None:
        """Feed back how many tokens a request really generated."""
        if self._completion_estimate is None:
            self._completion_estimate = float(completion_tokens)
        else:
            self._completion_estimate += _EMA_WEIGHT * (completion_tokens - self._completion_estimate)

    # -- admission -------------------------------------------------------------

    async def acquire(self, tokens: int = 0) -> None:
        """Wait for room in the window, the cool-down and both buckets; :meth:`release` gives the room back."""
        await self._enter()
        try:
            while (delay := self._resume_at - self._now()) > 0:
                await self._sleep(delay)
            if self._requests is not None:
                await self._requests.acquire()
            if self._tokens is not None and tokens > 0:
                # aiolimiter refuses a single acquire larger than the bucket.
                await self._tokens.acquire(min(float(tokens), self._tokens.max_rate))
        except BaseException:
            self._leave()
            raise

    def release(self) -> None:
        """Give back the room taken by :meth:`acquire`."""
        self._leave()

    @asynccontextmanager
    async def slot(self, tokens: int = 0) -> AsyncIterator[None]:
        """``acquire`` and ``release`` around a block."""
        await self.acquire(tokens)
        try:
            yield
        finally:
            self.release()

    def __repr__(self) -> str:
        return (
            f"Limiter(max_concurrency={self.max_concurrency}, window={self._window}, "
            f"requests_per_minute={self.requests_per_minute}, tokens_per_minute={self.tokens_per_minute})"
        )
