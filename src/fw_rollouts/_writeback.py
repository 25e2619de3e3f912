"""Write-behind: finished samples go to the store in batches, never making the caller wait."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ._echo import PromptPart
from ._models import FwResponse
from ._record import RecordError, encode_prompt_record, encode_record
from ._store import SampleStore, describe_failure

__all__ = ["WriteBehind"]

log = logging.getLogger("fw_rollouts.cache")


class WriteBehind:
    """Samples of one call go to a :class:`SampleStore` in batches, one ``set_many`` task each.

    ``add`` queues the sample; once ``batch`` samples are pending, or ``interval`` seconds
    (by ``clock``) have passed since the last batch, a task encodes the pending ones on a
    worker thread (off the event loop, which goes on with the requests) and hands them to
    ``store.set_many``. ``drain`` hands over what is left and waits for
    every task; it runs before a call returns or is abandoned, so an interrupted run still
    leaves what it fetched. Caching is best effort: a failed write (disk full, read-only
    directory...) loses only the cache entries, never the samples, which the caller returns
    anyway; each ``drain`` logs one warning for all the samples that went uncached.
    ``room`` waits while more than ``max_in_flight`` batches are being written, so a store slower
    than the service slows the caller instead of letting samples pile up in memory.
    """

    __slots__ = (
        "_batch",
        "_clock",
        "_error",
        "_in_flight",
        "_interval",
        "_last",
        "_max_in_flight",
        "_pending",
        "_space",
        "_store",
        "_uncached",
    )

    def __init__(
        self,
        store: SampleStore,
        *,
        batch: int = 128,
        interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = 16,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._store = store
        self._batch = batch
        self._interval = interval
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._last = clock()
        self._pending: list[tuple[str, FwResponse | PromptPart]] = []
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._in_flight: set[asyncio.Task[None]] = set()
        # Set while no more than max_in_flight batches are being written: one event every waiter shares (an
        # asyncio.wait per waiter per request cost a busy run a second in 2,000 samples).
        self._space = asyncio.Event()
        self._space.set()
        self._uncached = 0  # samples not cached since the last drain
        self._error: BaseException | None = None  # the first reason why, for the warning

    @property
    def pending(self) -> int:
        """Samples queued but not yet handed to the store."""
        return len(self._pending)

    def add(self, key: str, response: FwResponse | PromptPart) -> None:
        """Queue one sample (or the prompt part its samples share) for the store.

        Call it from a coroutine: it may start a write task. Entries go to the store in the
        order added, so a prompt part added before its samples is never stored after them.
        """
        self._pending.append((key, response))
        if len(self._pending) >= self._batch or self._clock() - self._last >= self._interval:
            self._flush()

    async def room(self) -> None:
        """Wait while more than ``max_in_flight`` batches are being written.

        The run awaits it after each request, so a store slower than the service holds the
        requests back instead of letting batches of samples pile up in memory.
        """
        while not self._space.is_set():
            await self._space.wait()

    async def drain(self) -> None:
        """Hand over everything pending, wait until every write has finished, and report failures once."""
        self._flush()
        while self._in_flight:
            # asyncio.wait, not gather: should this wait be cancelled, the writes themselves go on.
            await asyncio.wait(tuple(self._in_flight))
        uncached, error = self._uncached, self._error
        self._uncached, self._error = 0, None
        if uncached:
            log.warning(
                "could not write %d sample%s to the cache at %s (they are returned, just not cached): %s",
                uncached,
                "" if uncached == 1 else "s",
                self._store.location,
                "unknown error" if error is None else describe_failure(error),
            )

    def _flush(self) -> None:
        items, self._pending = self._pending, []
        self._last = self._clock()
        if items:
            task = asyncio.ensure_future(self._write(items))
            self._in_flight.add(task)
            task.add_done_callback(self._written)
            if len(self._in_flight) > self._max_in_flight:
                self._space.clear()

    def _written(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if len(self._in_flight) <= self._max_in_flight:
            self._space.set()

    async def _write(self, items: list[tuple[str, FwResponse | PromptPart]]) -> None:
        # Every exception is retrieved here, so none is left for "Task exception was never retrieved".
        try:
            # Encoding off the event loop, a batch at a time, as the loop goes on with the requests.
            records, failures = await asyncio.to_thread(_encode, items)
            for error in failures:
                self._failed(1, error)
            if records:
                await self._store.set_many(records)
        except Exception as exc:
            self._failed(len(items), exc)

    def _failed(self, count: int, error: BaseException) -> None:
        self._uncached += count
        if self._error is None:
            self._error = error

    def __repr__(self) -> str:
        return (
            f"WriteBehind({self._store.location!r}, pending={len(self._pending)}, "
            f"in_flight={len(self._in_flight)}, batch={self._batch})"
        )


def _encode(items: list[tuple[str, FwResponse | PromptPart]]) -> tuple[list[tuple[str, bytes]], list[RecordError]]:
    """The records of ``items``, and why any could not be encoded (a sample that cannot be stored is still a
    sample: it is returned, just not cached)."""
    records: list[tuple[str, bytes]] = []
    failures: list[RecordError] = []
    for key, response in items:
        try:
            if isinstance(response, PromptPart):
                records.append((key, encode_prompt_record(response, key)))
            else:
                records.append((key, encode_record(response, key)))
        except RecordError as exc:
            failures.append(exc)
    return records, failures
