"""The failure policy: which errors are retried, which end a whole call, which cool the client down.

Every rule about what a failure means lives here, as pure functions and one small
per-call tracker, so that the retry layer (``_retry``) and the sampling run (``_run``)
only ask:

* :func:`is_retryable`: may the same request succeed if sent again? Transient statuses
  (408, 409, 425, 429, 5xx), connection failures, timeouts and unusable bodies are; other
  4xx are not; ``x-should-retry`` overrides the status; a Retry-After longer than
  :data:`MAX_RETRY_AFTER` is not waited for.
* :func:`ends_the_call`: would every other sample of the call fail the same way (a bad key,
  an unknown model, a server without logprobs)? Then stop the call instead of paying for it.
* :func:`ends_the_study`: of those, which say nothing about this prompt but everything about the
  client (the key, the account, the model): in a study of many prompts they end every item, while
  a request that is wrong for one prompt (too long, say) ends only that item.
* :func:`cools_down`: is the service overloaded (429, 503)? Then nobody starts a request until
  the wait has passed (the budget's cool-down), not just the one that was told.
* :class:`Reachability`: has this call ever reached the server, and has it ever answered? When
  every attempt so far failed to connect at all, stop within seconds with one error naming the
  URL. When the server takes connections but has never answered one (every attempt timed out or
  was dropped), stop once the first sample has used up its retries: a call of any size then fails
  in about ``(max_retries + 1) x timeout``, not that times the number of request waves.
* :class:`RetryLog`: log each distinct cause of retries once per call at WARNING, the rest at
  DEBUG, so a thousand samples against a dead server do not print thousands of lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from ._exceptions import (
    AccountError,
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    FwRolloutsError,
    MissingLogprobsError,
    NotFoundError,
    RateLimitError,
)

__all__ = [
    "COOL_DOWN_STATUSES",
    "MAX_RETRY_AFTER",
    "UNREACHABLE_AFTER",
    "Reachability",
    "RetryLog",
    "cools_down",
    "ends_the_call",
    "ends_the_study",
    "is_retryable",
    "too_long_to_wait",
]

log = logging.getLogger("fw_rollouts.retry")

MAX_RETRY_AFTER: Final = 300.0
"""Longest server-requested wait we honour; a longer Retry-After is not waited for, the error is raised."""

COOL_DOWN_STATUSES: Final = frozenset({429, 503})
"""Overloaded-service statuses after which the whole client backs off, not just the one request."""

UNREACHABLE_AFTER: Final = 2.0
"""Seconds of nothing but failed connections (and at least two attempts) after which a call gives up."""


def too_long_to_wait(exc: BaseException) -> bool:
    """The server asked us to come back later than we are willing to wait."""
    return isinstance(exc, APIStatusError) and exc.retry_after is not None and exc.retry_after > MAX_RETRY_AFTER


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is transient. Our API errors say so themselves; anything else is a bug, not retried."""
    return isinstance(exc, APIError) and exc.retryable and not too_long_to_wait(exc)


def ends_the_call(exc: FwRolloutsError, *, any_succeeded: bool) -> bool:
    """Whether a sample's final failure means the rest of the call would fail too.

    Missing logprobs end the call only if no sample of it had them (the server cannot give
    them); another sample's luck says the server can.
    """
    if isinstance(exc, MissingLogprobsError):
        return not any_succeeded
    return not is_retryable(exc)


def ends_the_study(exc: FwRolloutsError) -> bool:
    """Whether a failure that ends one prompt's samples would end every other prompt's too.

    A bad or unauthorised key, a suspended account and an unknown model are the client's, not the
    prompt's; a 400 (a prompt too long for the model, say) or a reply without logprobs for one
    prompt is that prompt's alone.
    """
    return isinstance(exc, (AuthenticationError, AccountError, NotFoundError))


def cools_down(exc: BaseException) -> bool:
    """Whether the service said it is overloaded, so the whole client should wait."""
    return isinstance(exc, APIStatusError) and exc.status_code in COOL_DOWN_STATUSES


def cause(exc: APIError) -> str:
    """A short name for what went wrong, the same for every repeat of the same failure."""
    if isinstance(exc, APIStatusError):
        return f"HTTP {exc.status_code}"
    return type(exc).__name__


class Reachability:
    """Whether one call has ever reached its server, and whether the server ever answered, to end it fast
    when it cannot.

    ``clock`` is the SDK's clock (seconds). A call gives up on connection failures once
    none of its attempts has got any HTTP response, at least two attempts failed to connect,
    and :data:`UNREACHABLE_AFTER` seconds have passed since the first: a closed port or an
    unreachable host then ends the call in about two seconds instead of retrying every sample.

    Attempts that were already on their way when the first connect failed must all have ended
    (failed) before that verdict: a server slow to accept many connections at once refuses none of
    them, it only lets a few time out while the others get through.

    A server that accepts connections but never sends an HTTP response (each attempt times out,
    or the connection is dropped) is not given that benefit of a quick verdict, since a slow
    server looks the same for a while; but once one sample has failed for good that way and
    no attempt of the call was ever answered, :meth:`ends_the_call` says the others would fare
    no better, so the call ends after one sample's retries instead of every sample's in turn.
    """

    __slots__ = ("_attempts", "_clock", "_first", "_horizon", "_next", "_open", "_silent", "answered", "reached")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._first: float | None = None
        self._attempts = 0
        self._silent = 0  # attempts that connected and got no HTTP response
        self._next = 0  # the number the next attempt gets from start()
        self._open: set[int] = set()  # attempts started and not yet recorded
        self._horizon: frozenset[int] = frozenset()  # those that were open at the first failed connect
        self.reached = False
        """True once any attempt got a connection (or an HTTP response)."""
        self.answered = False
        """True once any attempt got an HTTP response (a success or an error status)."""

    def start(self) -> int:
        """Note that an attempt is being sent; its number, for :meth:`record`."""
        attempt = self._next
        self._next += 1
        self._open.add(attempt)
        return attempt

    def abandon(self, attempt: int) -> None:
        """Note that an attempt ended without an outcome to learn from (cancelled)."""
        self._open.discard(attempt)

    def record(self, exc: BaseException | None, attempt: int | None = None) -> None:
        """Note the outcome of one attempt (None: it succeeded), numbered by :meth:`start` if it was started so."""
        if attempt is not None:
            self._open.discard(attempt)
        if not isinstance(exc, APIConnectionError):
            self.reached = self.answered = True  # an HTTP answer: a success, an error status, a bad body
            return
        if exc.connected:
            self.reached = True
            self._silent += 1
            return
        self._attempts += 1
        if self._first is None:
            self._first = self._clock()
            # An attempt still on its way may yet connect: the verdict waits for those (a server slow to
            # accept, with many connections at once, fails a few connects while the rest get through).
            self._horizon = frozenset(self._open)

    def gives_up(self, exc: BaseException) -> bool:
        """Whether to stop retrying ``exc`` because the server has never been reachable."""
        if self.reached or not isinstance(exc, APIConnectionError) or exc.connected or self._first is None:
            return False
        if self._horizon and not self._horizon.isdisjoint(self._open):
            return False
        return self._attempts >= 2 and self._clock() - self._first >= UNREACHABLE_AFTER

    def ends_the_call(self, exc: BaseException) -> bool:
        """Whether a sample's final failure ``exc``, after retries, should end the whole call because the
        server has never answered any attempt of it: the other samples would wait just as long for nothing."""
        # One attempt is no evidence (max_retries=0 asks each sample to fail alone, and fast).
        return isinstance(exc, APIConnectionError) and exc.attempts >= 2 and not self.answered

    def unreachable_error(self, exc: APIConnectionError, url: str) -> APIConnectionError:
        """The one error a call raises when its server could never be reached."""
        where = "" if url in exc.message else f" to {url}"
        return exc._evolve(
            message=f"{exc.message}; no attempt could connect{where} ({self._attempts} attempts over "
            f"{self._clock() - (self._first or 0.0):.1f}s): check base_url and the network"
        )

    def unanswered_error(self, exc: APIConnectionError, url: str) -> APIConnectionError:
        """The one error a call raises when its server took connections but never answered any attempt."""
        where = "" if url in exc.message else f" ({url})"
        return exc._evolve(
            message=f"{exc.message}; the server{where} accepted connections but answered none of this call's "
            f"{self._silent + self._attempts} attempts, so the call stops here instead of waiting as long for "
            "every other sample: check the server, or raise timeout= if it is only slow"
        )


class RetryLog:
    """Retry messages of one call: the first of each cause at WARNING, repeats at DEBUG."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def retrying(self, exc: APIError, attempt: int, attempts: int, wait: float) -> None:
        """Log that attempt ``attempt`` of ``attempts`` failed with ``exc`` and the next starts in ``wait`` s."""
        key = cause(exc)
        first = key not in self._seen
        self._seen.add(key)
        # 429s are the service working as designed; the cool-down handles them.
        level = logging.WARNING if first and not isinstance(exc, RateLimitError) else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        detail = f"HTTP {exc.status_code}: {exc.message}" if isinstance(exc, APIStatusError) else exc.message
        log.log(
            level,
            "attempt %d/%d failed (%s: %s); retrying in %.2fs%s",
            attempt,
            attempts,
            type(exc).__name__,
            detail,
            wait,
            " (further retries for this cause in this call are logged at DEBUG)" if level == logging.WARNING else "",
        )
