"""The retry policy: tenacity, composed from small strategies, as the only retry layer.

Transient failures are retried with jittered exponential backoff, capped: 408, 409,
425, 429 and 5xx, connection errors, timeouts, and bodies that are cut short or do not
parse. A server's ``Retry-After`` (in any form) is a floor for the wait and
``x-should-retry`` overrides the status rules. Other 4xx and validation errors are
raised at once. After the last attempt the final error is raised as it is (one of our
own classes, never ``tenacity.RetryError``) with ``attempts`` set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import tenacity
from tenacity.wait import wait_base

from ._exceptions import APIError, APIStatusError, RateLimitError

__all__ = ["DEFAULT_INITIAL_WAIT", "DEFAULT_MAX_WAIT", "MAX_RETRY_AFTER", "RetryPolicy", "is_retryable"]

log = logging.getLogger("fw_rollouts.retry")

T = TypeVar("T")

DEFAULT_INITIAL_WAIT = 0.5
DEFAULT_MAX_WAIT = 30.0
MAX_RETRY_AFTER = 300.0
"""Longest server-requested wait we honour; a longer Retry-After is not waited for, the error is raised."""


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is transient: our API errors say so themselves (anything else is a bug, not
    retried), unless the server asked us to come back later than we are willing to wait."""
    if not (isinstance(exc, APIError) and exc.retryable):
        return False
    return not (isinstance(exc, APIStatusError) and exc.retry_after is not None and exc.retry_after > MAX_RETRY_AFTER)


class wait_retry_after(wait_base):
    """Wait what the server asked for (``Retry-After``), at least ``fallback``'s backoff, at most ``cap``."""

    def __init__(self, fallback: wait_base, cap: float = MAX_RETRY_AFTER) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = self.fallback(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, APIStatusError) and exc.retry_after is not None:
            return min(max(exc.retry_after, backoff), self.cap)
        return backoff


class RetryPolicy:
    """Retry a coroutine function on transient errors.

    ``max_retries`` is the number of retries after the first attempt. ``sleep`` is
    injectable so tests never wait; ``on_backoff(error, wait)`` is told about every
    retry (the rate limiter uses it to cool the whole client down after a 429).
    """

    __slots__ = ("initial", "max_retries", "max_wait", "on_backoff", "sleep")

    def __init__(
        self,
        max_retries: int,
        *,
        initial: float = DEFAULT_INITIAL_WAIT,
        max_wait: float = DEFAULT_MAX_WAIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_backoff: Callable[[APIError, float], None] | None = None,
    ) -> None:
        self.max_retries = max_retries
        self.initial = initial
        self.max_wait = max_wait
        self.sleep = sleep
        self.on_backoff = on_backoff

    def _strategy(self) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=wait_retry_after(
                tenacity.wait_exponential(multiplier=self.initial, max=self.max_wait)
                + tenacity.wait_random(0, self.initial),
            ),
            retry=tenacity.retry_if_exception(is_retryable),
            sleep=self.sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        wait = retry_state.upcoming_sleep
        if isinstance(exc, APIError):
            exc.attempts = retry_state.attempt_number
            level = logging.WARNING if not isinstance(exc, RateLimitError) else logging.DEBUG
            log.log(
                level,
                "attempt %d/%d failed (%s: %s); retrying in %.2fs",
                retry_state.attempt_number,
                self.max_retries + 1,
                type(exc).__name__,
                exc.message if not isinstance(exc, APIStatusError) else f"HTTP {exc.status_code}: {exc.message}",
                wait,
            )
            if self.on_backoff is not None:
                self.on_backoff(exc, wait)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` until it succeeds, fails for good, or the attempts run out."""
        # The first attempt runs bare: tenacity's bookkeeping costs as much as parsing a response,
        # and nearly every request succeeds at once. A failure enters the tenacity loop, which
        # starts by replaying it as attempt 1, so waits, logs and counts are as if it ran there.
        try:
            return await fn()
        except APIError as exc:
            if self.max_retries == 0 or not is_retryable(exc):
                exc.attempts = 1
                _explain(exc)
                raise
            first: APIError | None = exc
        attempts = 0

        async def attempt() -> T:
            nonlocal attempts, first
            attempts += 1
            if first is not None:
                failure, first = first, None
                raise failure
            return await fn()

        try:
            return await self._strategy()(attempt)
        except APIError as exc:
            exc.attempts = attempts
            _explain(exc)
            raise

    def __repr__(self) -> str:
        return f"RetryPolicy(max_retries={self.max_retries}, initial={self.initial}, max_wait={self.max_wait})"


def _explain(exc: APIError) -> None:
    """Say why an error with a very long Retry-After was not retried."""
    if isinstance(exc, APIStatusError) and exc.retry_after is not None and exc.retry_after > MAX_RETRY_AFTER:
        exc.message += (
            f" (the server asked us to wait {exc.retry_after:.0f}s, longer than the {MAX_RETRY_AFTER:.0f}s"
            " we wait: not retried)"
        )
