"""Objects that belong to one event loop: made on first use on each loop, closed when that loop shuts down.

aiohttp sessions and asyncio waiters are bound to the loop that made them, so a client used
across several ``asyncio.run`` calls, or under the sync facade's private loop, keeps one
per loop. Each is closed, quietly, however its owner ends: by ``aclose``; when its loop shuts
down (``asyncio.run``'s shutdown of async generators, which the sync facade's loop thread runs
too); when the owner is garbage collected without ``aclose`` (the close is scheduled on the
value's loop); or at exit, for a loop left open but no longer running.

An open value is held here (``_OPEN``) until it is closed, not only by its owner: dropped with
its owner, it would be garbage in the same collection as the generator meant to close it, and
aiohttp warns "Unclosed client session" from the session's ``__del__`` before any close can run.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from ._exceptions import ConfigurationError

__all__ = ["CLOSING_TASK", "LoopLocal"]

log = logging.getLogger("fw_rollouts")

T = TypeVar("T")

CLOSING_TASK = "fw_rollouts: closing a dropped client's connections"
"""The name of the task that closes the values of an owner garbage collected without ``aclose`` (the sync
facade's loop thread lets these finish before it cancels what else still runs at exit)."""


class _Entry(Generic[T]):
    __slots__ = ("__weakref__", "closer", "loop", "value")

    def __init__(self, value: T, loop: asyncio.AbstractEventLoop) -> None:
        self.value = value
        self.loop = weakref.ref(loop)  # weak: an owner living across many asyncio.run calls keeps no dead loop
        self.closer: AsyncGenerator[None, None] | None = None


_OPEN: set[_Entry[Any]] = set()
"""Every value made and not closed yet, whoever still holds it (see the module docstring)."""
_CLOSING: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to its tasks


class LoopLocal(Generic[T]):
    """One ``T`` per running event loop, made by ``make()`` and closed with ``close(value)``.

    ``close`` must not hold a reference to the owner of this object (it is kept until the value is
    closed, which may be after the owner is gone).
    """

    __slots__ = ("__weakref__", "_close", "_closed", "_entries", "_make")

    def __init__(self, make: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._closed = False
        self._entries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Entry[T]] = weakref.WeakKeyDictionary()
        finalizer = weakref.finalize(self, _abandon, self._entries)
        finalizer.atexit = False  # at exit, _close_at_exit closes what is still open, whoever holds it

    async def get(self) -> T:
        """The running loop's ``T``, made now if this loop has none yet."""
        loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is None:
            if self._closed:
                # A sibling client outliving the client that made this: it must not open a pool nobody closes.
                raise ConfigurationError("this client's connections were closed with the client it was derived from")
            entry = self._entries[loop] = _Entry(self._make(), loop)
            _OPEN.add(entry)
            # Closed when asyncio.run shuts the loop's async generators down: no pool is left open on a dead loop.
            entry.closer = _close_at_shutdown(entry, self._close)
            await entry.closer.__anext__()
        return entry.value

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
                await _close_quietly(entry, self._close)

    def __repr__(self) -> str:
        return f"LoopLocal(loops={len(self._entries)})"


async def _close_at_shutdown(entry: _Entry[T], close: Callable[[T], Awaitable[None]]) -> AsyncGenerator[None, None]:
    # A module function, not a method: the generator must not keep the LoopLocal (and so the client) alive.
    try:
        yield
    finally:
        await _close_quietly(entry, close)


async def _close_quietly(entry: _Entry[T], close: Callable[[T], Awaitable[None]]) -> None:
    try:
        await close(entry.value)
    except Exception:  # closing must not mask the error that led here
        log.debug("error closing %r", entry.value, exc_info=True)
    finally:
        _OPEN.discard(entry)


def _abandon(entries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Entry[Any]]) -> None:
    """The owner was garbage collected without ``aclose``: close its values on their loops, from any thread."""
    if sys.is_finalizing():
        return
    for loop, entry in list(entries.items()):
        if entry.closer is None or loop.is_closed():
            continue
        try:
            loop.call_soon_threadsafe(_start_closing, entry)  # runs once the loop runs (now, if it is running)
        except RuntimeError:  # closed meanwhile
            continue


def _start_closing(entry: _Entry[Any]) -> None:
    closer = entry.closer
    if closer is None or entry not in _OPEN:
        return
    task = asyncio.get_running_loop().create_task(closer.aclose(), name=CLOSING_TASK)
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


def _close_at_exit() -> None:
    """At exit: close the values of loops left open and not running (a loop still running is another
    thread's, which shuts it down itself: the sync facade's loop thread does)."""
    for entry in list(_OPEN):
        loop, closer = entry.loop(), entry.closer
        if closer is None or loop is None or loop.is_closed() or loop.is_running():
            continue
        try:
            loop.run_until_complete(closer.aclose())
        except Exception:  # exiting: nothing left to tell
            log.debug("error closing %r at exit", entry.value, exc_info=True)


atexit.register(_close_at_exit)
