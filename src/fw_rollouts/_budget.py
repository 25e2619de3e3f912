"""The budget protocol: what the client asks of whatever decides when a request may start.

The client talks to a :class:`Budget` only: before each request it ``acquire``\\ s the request's
:class:`Cost` and holds the ticket it gets back until the request is over, then ``release``\\ s
it exactly once whatever happened, with what the request :class:`Spent` (None if it failed) and
the successful reply's headers, from which a budget can read the service's own limits; each
429/503 is reported with ``overloaded``. The default implementation is the in-process
:class:`~fw_rollouts._ratelimit.Limiter`; a budget shared between processes (issue 12) can hand
out tickets that are reservations expiring on their own, which is why ``acquire`` returns one at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Budget", "Cost", "Spent"]


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request may spend: its prompt tokens (per choice, estimated), max_tokens, and choices (n)."""

    prompt_tokens: int
    """Prompt tokens of one choice (the server counts the prompt once per choice)."""
    max_tokens: int | None
    """The request's ``max_tokens``: the most one choice can generate (``None``: the server's default)."""
    choices: int = 1
    """How many choices (``n``) the request asks for."""


@dataclass(frozen=True, slots=True)
class Spent:
    """What one finished request used: totals over its choices, as the server reported them."""

    prompt_tokens: int
    """Prompt tokens the server reported for the request (its ``usage.prompt_tokens``)."""
    cached_tokens: int
    """Of those, served from the service's prompt cache (0 when not reported)."""
    completion_tokens: int
    """Tokens generated, all choices together."""
    choices: int
    """How many choices came back."""


@runtime_checkable
class Budget(Protocol):
    """Admission control for requests: how many at once, how fast, and a pause when the service is overloaded."""

    async def acquire(self, cost: Cost) -> object:
        """Wait until a request of this cost may start; return the ticket to hand back to :meth:`release`."""
        ...

    def release(self, ticket: object, spent: Spent | None = None, headers: Mapping[str, str] | None = None) -> None:
        """The request holding ``ticket`` is over; called exactly once per :meth:`acquire`.

        ``spent`` is what it used, or None when it failed; ``headers`` are the successful reply's HTTP
        headers (names lower-cased) when there was one. Synchronous and never raises, so it is safe in
        a ``finally`` block of a cancelled task.
        """
        ...

    def overloaded(self, seconds: float) -> None:
        """The service said 429/503: nobody starts a request for ``seconds``."""
        ...

    async def aclose(self) -> None:
        """Give back whatever the budget holds (connections, reservations); it is not used afterwards."""
        ...
