"""A thread lock that a forked child gets back released: :class:`ForkSafeLock`."""

from __future__ import annotations

import os
import threading
import weakref
from typing import Literal

__all__ = ["ForkBarrier", "ForkSafeLock"]


class ForkSafeLock:
    """A ``threading.Lock`` (used as ``with lock:``) that is new and released in a child after ``os.fork()``.

    A thread of the parent may hold a lock at the moment another thread forks; the child has no
    such thread, so a plain lock would stay held there for good and the first ``with`` would hang.
    What the lock guards must stay usable after an interrupted critical section (each user says why
    theirs does).
    """

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _LOCKS.add(self)

    def __enter__(self) -> Literal[True]:
        self._lock.acquire()
        return True

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def _renew(self) -> None:
        self._lock = threading.Lock()




def _renew_all() -> None:
    for lock in list(_LOCKS):
        lock._renew()


class ForkBarrier(ForkSafeLock):
    """A :class:`ForkSafeLock` that ``os.fork()`` waits for: held by a thread while it is inside code that a
    child must not inherit half done.

    SQLite keeps process-wide mutexes of its own; a fork while another thread is inside an SQLite
    call can leave one held in the child, whose first SQLite call then hangs for good. A fork
    waits (before it happens) until no thread holds a barrier, and the child gets them back new.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        _BARRIERS.add(self)


_LOCKS: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()
_BARRIERS: weakref.WeakSet[ForkBarrier] = weakref.WeakSet()
_held: list[threading.Lock] = []


def _before_fork() -> None:
    held = []
    for barrier in list(_BARRIERS):
        barrier._lock.acquire()
        held.append(barrier._lock)
    _held[:] = held


def _after_fork_in_parent() -> None:
    held, _held[:] = list(_held), []
    for lock in held:
        lock.release()


def _after_fork_in_child() -> None:
    _held.clear()
    _renew_all()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
