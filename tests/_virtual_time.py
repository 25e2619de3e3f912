"""Virtual time for tests: retries and cool-downs advance a counter instead of waiting."""

from __future__ import annotations

import asyncio
from typing import Any


class VirtualTime:
    """A clock that moves only when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)

    def install(self, client: Any) -> Any:
        """Make an AsyncFireworks (or the core of a Fireworks) run on this clock; returns the client."""
        core = getattr(client, "_async", client)
        core._sleep = self.sleep
        core._clock = self.clock
        return client
