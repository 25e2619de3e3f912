"""A first-in-first-out memo bounded by the total weight (tokens, characters) of what it holds."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Memo"]

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """A dict that evicts its oldest entries once their summed weight exceeds ``max_weight``.

    Eviction is one entry at a time: clearing a large cache at once would stall the event loop.
    """

    __slots__ = ("_data", "_max", "_weight")

    def __init__(self, max_weight: int) -> None:
        self._data: dict[K, tuple[V, int]] = {}
        self._weight = 0
        self._max = max_weight

    def get(self, key: K) -> V | None:
        """The value stored under ``key``, or None."""
        hit = self._data.get(key)
        return None if hit is None else hit[0]

    def put(self, key: K, value: V, weight: int) -> None:
        """Store ``value``; entries heavier than the whole budget are not kept."""
        weight = max(1, weight)
        if weight > self._max or key in self._data:
            return
        data = self._data
        while data and self._weight + weight > self._max:
            self._weight -= data.pop(next(iter(data)))[1]
        data[key] = (value, weight)
        self._weight += weight

    def __len__(self) -> int:
        return len(self._data)
