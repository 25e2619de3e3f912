"""A thread lock that a forked child gets back released: :class:`ForkSafeLock`."""

from __future__ import annotations

import os
import threading
import weakref
from typing import Literal

__all__ = ["ForkSafeLock"]


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


_LOCKS: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def _renew_all() -> None:
    for lock in list(_LOCKS):
        lock._renew()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_all)
