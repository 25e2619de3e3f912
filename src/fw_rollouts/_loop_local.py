"""Objects that belong to one event loop: made on first use on each loop, closed when that loop shuts down.

aiohttp sessions and asyncio waiters are bound to the loop that made them, so a client used
across several ``asyncio.run`` calls, or under the sync facade's private loop, keeps one
per loop. Each is closed by ``asyncio.run``'s shutdown of async generators even if the
user never calls ``aclose``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

from ._exceptions import ConfigurationError

__all__ = ["LoopLocal"]

log = logging.getLogger("fw_rollouts")

T = TypeVar("T")


class _Entry(Generic[T]):
    __slots__ = ("__weakref__", "closer", "value")

    def __init__(self, value: T) -> None:
        self.value = value
        self.closer: AsyncGenerator[None, None] | None = None


class LoopLocal(Generic[T]):
    """One ``T`` per running event loop, made by ``make()`` and closed with ``close(value)``."""

    __slots__ = ("_close", "_closed", "_entries", "_make")

    def __init__(self, make: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._closed = False
        self._entries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Entry[T]] = weakref.WeakKeyDictionary()

    async def get(self) -> T:
        """The running loop's ``T``, made now if this loop has none yet."""
        loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is None:
            if self._closed:
                # A sibling client outliving the client that made this: it must not open a pool nobody closes.
                raise ConfigurationError("this client's connections were closed with the client it was derived from")
            entry = self._entries[loop] = _Entry(self._make())
            # Closed when asyncio.run shuts the loop's async generators down: no pool is left open on a dead loop.
            entry.closer = self._close_at_shutdown(entry)
            await entry.closer.__anext__()
        return entry.value

    async def _close_at_shutdown(self, entry: _Entry[T]) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._close_quietly(entry.value)

    async def _close_quietly(self, value: T) -> None:
        try:
            await self._close(value)
        except Exception:  # closing must not mask the error that led here
            log.debug("error closing %r", value, exc_info=True)

    async def aclose(self) -> None:
        """Close the running loop's ``T`` now; those of other loops close when their loops shut down.

        No ``T`` is made after this.
        """
        self._closed = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        entry = self._entries.pop(loop, None) if loop is not None else None
        self._entries.clear()
        if entry is not None:
            if entry.closer is not None:
                await entry.closer.aclose()  # runs the close in its finally
            else:
                await self._close_quietly(entry.value)

    def __repr__(self) -> str:
        return f"LoopLocal(loops={len(self._entries)})"
