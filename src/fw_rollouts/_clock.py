"""The SDK's one clock seam: every wait and every reading of time goes through a :class:`Clock`.

Retry backoff, the shared cool-down after a 429 and the rate buckets all read and wait on
the same clock, so a test that swaps in a virtual clock moves all of them at once and never
waits for real time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final, Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Time as the SDK sees it: retry waits, cool-downs and rate buckets all read and wait on it."""

    def now(self) -> float:
        """Monotonic seconds (only differences between readings mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait until :meth:`now` has moved on by at least ``seconds``."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` (what asyncio's default loop reads) and :func:`asyncio.sleep`."""

    __slots__ = ()

    def now(self) -> float:
        """Seconds from :func:`time.monotonic`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running event loop."""
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Final = SystemClock()
"""The clock every client uses unless it is given another."""
