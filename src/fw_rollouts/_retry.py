"""The retry layer: tenacity, composed from small strategies, as the only retry layer.

What is retried is the failure policy's decision (``_policy``); this module only decides
when: jittered exponential backoff, capped, with a server's ``Retry-After`` (in any form) as
a floor for the wait. After the last attempt the final error is raised as a new instance of
its own class with ``attempts`` set (never ``tenacity.RetryError``, never the original
instance altered).

tenacity is imported on the first failure: nearly every request succeeds at its first attempt, which
runs without it (and ``import fw_rollouts`` need not load it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from ._exceptions import APIError, APIStatusError
from ._policy import MAX_RETRY_AFTER, RetryLog, is_retryable, too_long_to_wait

if TYPE_CHECKING:
    import tenacity

__all__ = ["DEFAULT_INITIAL_WAIT", "DEFAULT_MAX_WAIT", "RetryPolicy"]

T = TypeVar("T")

DEFAULT_INITIAL_WAIT = 0.5
DEFAULT_MAX_WAIT = 30.0


class wait_retry_after:
    """Wait what the server asked for (``Retry-After``), at least ``fallback``'s backoff, at most ``cap``.

    A tenacity wait strategy (any callable of the retry state); not a ``wait_base``, so that defining it
    needs no tenacity, and it is never combined with ``+``.
    """

    def __init__(self, fallback: Callable[[tenacity.RetryCallState], float], cap: float = MAX_RETRY_AFTER) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = self.fallback(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, APIStatusError) and exc.retry_after is not None:
            return min(max(exc.retry_after, backoff), self.cap)
        return backoff


def _never(_exc: APIError) -> bool:
    return False


def _final(exc: APIError, attempts: int) -> APIError:
    """The error to raise after ``attempts`` attempts: a new instance saying how many there were, and why
    a very long Retry-After was not waited for."""
    if too_long_to_wait(exc):
        assert isinstance(exc, APIStatusError) and exc.retry_after is not None
        return exc._evolve(
            attempts=attempts,
            message=f"{exc.message} (the server asked us to wait {exc.retry_after:.0f}s, longer than the "
            f"{MAX_RETRY_AFTER:.0f}s we wait: not retried)",
        )
    return exc if exc.attempts == attempts else exc._evolve(attempts=attempts)


class RetryPolicy:
    """Retry a coroutine function on transient errors.

    ``max_retries`` is the number of retries after the first attempt. ``sleep`` is the SDK
    clock's (tests never wait). ``on_backoff(error, wait)`` is told about every retry (the
    client cools down after a 429); ``gives_up(error)`` may stop retrying early (a server that
    was never reachable); ``log`` words the retries.
    """

    __slots__ = ("gives_up", "initial", "log", "max_retries", "max_wait", "on_backoff", "sleep")

    def __init__(
        self,
        max_retries: int,
        *,
        sleep: Callable[[float], Awaitable[None]],
        initial: float = DEFAULT_INITIAL_WAIT,
        max_wait: float = DEFAULT_MAX_WAIT,
        on_backoff: Callable[[APIError, float], None] | None = None,
        gives_up: Callable[[APIError], bool] = _never,
        log: RetryLog | None = None,
    ) -> None:
        self.max_retries = max_retries
        self.initial = initial
        self.max_wait = max_wait
        self.sleep = sleep
        self.on_backoff = on_backoff
        self.gives_up = gives_up
        self.log = log if log is not None else RetryLog()

    def _retries(self, exc: BaseException) -> bool:
        return is_retryable(exc) and not (isinstance(exc, APIError) and self.gives_up(exc))

    def _strategy(self) -> tenacity.AsyncRetrying:
        import tenacity

        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=wait_retry_after(
                tenacity.wait_exponential(multiplier=self.initial, max=self.max_wait)
                + tenacity.wait_random(0, self.initial),
            ),
            retry=tenacity.retry_if_exception(self._retries),
            sleep=self.sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        wait = retry_state.upcoming_sleep
        if isinstance(exc, APIError):
            self.log.retrying(exc, retry_state.attempt_number, self.max_retries + 1, wait)
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
            if self.max_retries == 0 or not self._retries(exc):
                raise _final(exc, 1) from exc.__cause__
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
            raise _final(exc, attempts) from exc.__cause__

    def __repr__(self) -> str:
        return f"RetryPolicy(max_retries={self.max_retries}, initial={self.initial}, max_wait={self.max_wait})"
