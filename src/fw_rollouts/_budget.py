"""The budget protocol: what the client asks of whatever decides when a request may start.

The client talks to a :class:`Budget` only: before each request it ``acquire``\\ s the request's
:class:`Cost` and holds the ticket it gets back until the request is over, then ``release``\\ s
it whatever happened; it reports each success's usage with ``observe`` and each 429/503 with
``overloaded``. The default implementation is the in-process :class:`~fw_rollouts._ratelimit.Limiter`;
a budget shared between processes (issue 12) can hand out tickets that are reservations
expiring on their own, which is why ``acquire`` returns one at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Budget", "Cost"]


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request may spend: its prompt tokens (per choice, estimated), max_tokens, and choices (n)."""

    prompt_tokens: int
    """Prompt tokens of one choice (the server counts the prompt once per choice)."""
    max_tokens: int | None
    """The request's ``max_tokens``: the most one choice can generate (``None``: the server's default)."""
    choices: int = 1
    """How many choices (``n``) the request asks for."""


@runtime_checkable
class Budget(Protocol):
    """Admission control for requests: how many at once, how fast, and a pause when the service is overloaded."""

    async def acquire(self, cost: Cost) -> object:
        """Wait until a request of this cost may start; return the ticket to hand back to :meth:`release`."""
        ...

    def release(self, ticket: object) -> None:
        """The request holding ``ticket`` is over (success or failure).

        Synchronous and never raises, so it is safe in a ``finally`` block of a cancelled task.
        """
        ...

    def observe(self, prompt_tokens: int, completion_tokens: int) -> None:
        """A request succeeded; its usage per choice (prompt and completion tokens of one choice)."""
        ...

    def overloaded(self, seconds: float) -> None:
        """The service said 429/503: nobody starts a request for ``seconds``."""
        ...

    async def aclose(self) -> None:
        """Give back whatever the budget holds (connections, reservations); it is not used afterwards."""
        ...
