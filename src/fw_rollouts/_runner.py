"""A private event loop on a daemon thread, for calling the async core from sync code.

Like anyio's blocking portal: the caller's thread submits a coroutine and blocks on
the result, so it works in a plain script, inside a running loop (Jupyter, or sync
code called from a coroutine) and from several threads at once, with no
nest_asyncio. Ctrl-C in the waiting thread cancels the coroutine on the private loop
and waits briefly for it to unwind, so in-flight requests stop. One loop serves the
whole process; it is rebuilt after ``fork`` and shut down cleanly at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._locks import ForkSafeLock
from ._loop_local import CLOSING_TASK

__all__ = ["LoopThread", "get_runner"]

T = TypeVar("T")

# How long a Ctrl-C waits for the cancelled coroutine to unwind before giving control back.
CANCEL_GRACE = 2.0


class LoopThread:
    """An event loop running forever on its own daemon thread."""

    __slots__ = ("_closed", "_loop", "_thread")

    def __init__(self, name: str = "fw_rollouts-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._closed = False
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), name=name, daemon=True)
        self._thread.start()
        started.wait()

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(started.set)
        try:
            self._loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
                # A dropped client's connections being closed: let that finish (it is quick) rather than cut it.
                closing = [t for t in pending if t.get_name() == CLOSING_TASK]
                if closing:
                    self._loop.run_until_complete(asyncio.wait(closing, timeout=CANCEL_GRACE))
                for task in pending:
                    task.cancel()
                if pending:
                    self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                # Runs the clients' close-at-shutdown generators: connection pools close cleanly.
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private loop."""
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and block until it finishes; Ctrl-C cancels it."""
        if threading.get_ident() == self._thread.ident:
            coro.close()
            raise RuntimeError(
                "fw_rollouts: a sync method was called from inside its own event loop thread; "
                "use AsyncFireworks and await it there"
            )
        if self._closed:
            coro.close()
            raise RuntimeError("fw_rollouts: the background event loop has been shut down")
        started = threading.Event()
        finished = threading.Event()

        async def tracked() -> T:
            started.set()
            try:
                return await coro
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(tracked(), self._loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                future.cancel()
                if started.is_set():  # a coroutine cancelled before it began has nothing to unwind
                    finished.wait(CANCEL_GRACE)
            raise

    def close(self) -> None:
        """Stop the loop (cancelling what still runs) and join the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __repr__(self) -> str:
        return f"LoopThread(thread={self._thread.name!r}, closed={self._closed})"


_runner: LoopThread | None = None
_runner_lock = ForkSafeLock()


def get_runner() -> LoopThread:
    """The process-wide loop thread, started on first use."""
    global _runner
    runner = _runner
    if runner is not None and not runner._closed:
        return runner
    with _runner_lock:
        if _runner is None or _runner._closed:
            _runner = LoopThread()
        return _runner


def _shutdown() -> None:
    if _runner is not None:
        _runner.close()


def _forget_after_fork() -> None:
    # The child has no loop thread: the parent's loop object must not be touched there.
    global _runner
    _runner = None


atexit.register(_shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
