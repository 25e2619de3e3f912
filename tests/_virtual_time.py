"""Virtual time for tests: a :class:`fw_rollouts.Clock` that moves only when something sleeps on it.

Pass it as ``clock=`` to a client: retry waits, the cool-down after a 429 and the rate
buckets then advance this counter instead of waiting.
"""

from __future__ import annotations

import asyncio


class VirtualTime:
    """A clock that moves only when something sleeps on it (``now`` plus ``sleep``)."""

    def __init__(self) -> None:
        self.time = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        """The virtual time in seconds."""
        return self.time

    async def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` at once (yielding to the loop once)."""
        self.sleeps.append(seconds)
        self.time += max(0.0, seconds)
        await asyncio.sleep(0)
