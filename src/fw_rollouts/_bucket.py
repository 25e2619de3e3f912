"""The limiter's token bucket: an aiolimiter bucket for one per-minute limit, on the SDK's clock.

Apart from :mod:`._ratelimit` so that aiolimiter, whose import reads the installed packages' metadata (tens of
milliseconds), is imported only when a client sets a per-minute limit.
"""

from __future__ import annotations

import math

from aiolimiter import AsyncLimiter

from ._clock import Clock
from ._ratelimit import _SPAN, PERIOD

__all__ = ["Bucket"]


class Bucket(AsyncLimiter):
    """An aiolimiter bucket for one per-minute limit that drips on a :class:`Clock`, its level settable.

    It holds ``PERIOD`` seconds' worth of its rate, the rate being ``limit / (WINDOW + _MARGIN + PERIOD)``
    (at least one unit, the rate then ``(limit - 1) / (WINDOW + _MARGIN)``, when the limit is 2 or more), so no
    rolling minute (plus the margin) lets more than ``limit`` through: capacity plus a span of the rate.

    aiolimiter internals this relies on (``test_the_aiolimiter_internals_the_bucket_relies_on`` pins them):
    ``_leak()`` is the only place AsyncLimiter reads time, and both ``has_capacity()`` and ``acquire()`` call
    it; it drains ``_level`` at ``_rate_per_sec`` since ``_last_check``; ``max_rate / time_period`` is that
    rate; and ``acquire(amount)`` adds ``amount`` to ``_level`` and returns without waiting (nor touching the
    loop's timers) when ``has_capacity(amount)`` is true. So we wait on the clock ourselves until there is
    capacity and only then call ``acquire``; settling a request and the service's counts change ``_level``.

    Two additions keep the bound where aiolimiter has nothing to say:

    * A request larger than the bucket (``amount > max_rate``, which ``acquire`` refuses) goes once the
      bucket has been empty for as long as its excess takes to drip, or nothing was taken for a whole
      span, whichever comes first; then it fills the bucket above its capacity and the rest wait for it to
      drain: no deadlock, and the long-run rate stays at the limit.
    * Giving back an unused reservation is exact only while the bucket has not run empty since the
      reservation was taken (an empty bucket has forgotten it, drips included): ``emptied`` counts the
      times it ran empty, and a ticket taken before the last one gives nothing back.
    """

    __slots__ = ("_clock", "_idle_since", "_last_take", "emptied", "limit")

    def __init__(self, limit: float, clock: Clock, level: float = 0.0) -> None:
        capacity = limit * PERIOD / (_SPAN + PERIOD)
        if capacity < 1.0 <= limit / 2:
            # A bucket smaller than one request would make every request wait for an empty bucket and then its
            # excess (half the rate lost at 5 a minute); one unit fits, and the rate is what is left of the limit.
            capacity = 1.0
        super().__init__(capacity, capacity * _SPAN / (limit - capacity))
        self.limit = limit
        self._clock = clock
        self._last_check = clock.now()
        self._level = max(level, 0.0)
        self._idle_since = -math.inf if self._level == 0 else math.inf
        self._last_take = -math.inf
        self.emptied = 0

    def _leak(self) -> None:
        now = self._clock.now()
        level = self._level
        if level:
            drained = (now - self._last_check) * self._rate_per_sec
            if drained >= level:
                self._level = 0.0
                self._idle_since = self._last_check + level / self._rate_per_sec
                self.emptied += 1
            else:
                self._level = level - drained
        self._last_check = now

    def level(self) -> float:
        """How full the bucket is now."""
        self._leak()
        return self._level

    def shortfall(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (0: now)."""
        self._leak()
        rate = self._rate_per_sec
        if amount <= self.max_rate:
            return max(0.0, (self._level + amount - self.max_rate) / rate)
        now = self._clock.now()
        idle_at = now + self._level / rate if self._level else self._idle_since
        ready = max(idle_at, min(idle_at + (amount - self.max_rate) / rate, self._last_take + _SPAN))
        return max(0.0, ready - now)

    async def take(self, amount: float) -> None:
        """Take ``amount``, which :meth:`shortfall` said fits now; returns without yielding."""
        self._last_take = self._clock.now()
        if amount <= self.max_rate:
            await self.acquire(amount)  # immediate: there is capacity and nothing yields in between
        else:
            await self.acquire(self.max_rate)
            self._level += amount - self.max_rate

    def charge(self, amount: float) -> None:
        """Add ``amount`` to the level: an overrun, or what others spent of the service's minute."""
        if amount > 0:
            self._leak()
            self._level += amount

    def give_back(self, amount: float, emptied: int) -> None:
        """Take ``amount`` off the level, if the bucket has not run empty since ``emptied`` was read."""
        self._leak()
        if emptied != self.emptied or amount <= 0:
            return
        level = self._level - amount
        if level <= 0:
            self._level = 0.0
            self._idle_since = self._last_check
            self.emptied += 1
        else:
            self._level = level
