"""Which request produces which sample, and under which cache key.

Sample ``s`` is choice ``j`` of the request sent with seed ``s - j``, where
``j = (s - first_seed) % k`` and ``k`` is ``samples_per_request``; with ``k == 1``, sample
``s`` is the request sent with seed ``s``. Every choice is cached as its own sample.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Plan"]


class Plan:
    """The request layout of one call: its first seed and ``k`` choices per request."""

    __slots__ = ("first_seed", "k")

    def __init__(self, first_seed: int, k: int) -> None:
        self.first_seed = first_seed
        self.k = k

    def locate(self, seed: int) -> tuple[int, int]:
        """(request seed, choice index) of a sample."""
        choice = (seed - self.first_seed) % self.k
        return seed - choice, choice

    def key(self, keyer: Callable[..., str], seed: int) -> str:
        """The sample's cache key (with ``k == 1`` the same key as ever: seed alone)."""
        if self.k == 1:
            return keyer(seed)
        return keyer(*self.locate(seed))

    def requests(self, seeds: list[int]) -> list[int]:
        """The request seeds that cover ``seeds``, in order."""
        return sorted({self.locate(s)[0] for s in seeds})

    def __repr__(self) -> str:
        return f"Plan(first_seed={self.first_seed}, k={self.k})"
