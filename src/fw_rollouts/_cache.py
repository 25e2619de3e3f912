"""Temporary bridge to the new cache modules, for the client until it moves to them (then this goes).

The cache now lives in :mod:`._cache_key` (:class:`CacheKeyer`), :mod:`._record` (the record
format), :mod:`._store` (:class:`SampleStore`, :class:`DiskStore`) and :mod:`._writeback`.
This module keeps the old synchronous :class:`SampleCache` and callable-based
:class:`WriteBehind` working on top of them, writing the new record format, so that entries
written through it and through :class:`DiskStore` are the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from ._cache_key import CacheKeyer
from ._models import FwResponse
from ._record import RecordError, decode_record, encode_record
from ._store import (
    DiskStore,
    SampleStore,
    StoreStats,
    _knows_layout,
    _read_public,
    _read_rows,
    _write_rows,
    open_diskcache,
)

__all__ = [
    "CacheKeyer",
    "DiskStore",
    "RecordError",
    "SampleCache",
    "SampleStore",
    "StoreStats",
    "WriteBehind",
    "decode_record",
    "decode_sample",
    "encode_record",
    "encode_sample",
]

log = logging.getLogger("fw_rollouts.cache")

encode_sample = encode_record
"""Old name of :func:`encode_record`."""
decode_sample = decode_record
"""Old name of :func:`decode_record`."""


class SampleCache:
    """A directory of cached samples, used synchronously on the caller's thread (superseded by DiskStore)."""

    __slots__ = ("_cache", "_fast", "directory")

    def __init__(self, directory: str) -> None:
        self.directory = DiskStore.check(directory)
        self._cache = open_diskcache(self.directory)
        self._fast = _knows_layout(getattr(self._cache, "_con", None))

    def get_many(self, keys: Sequence[str], prompt: str) -> list[FwResponse | None]:
        """The cached sample for each key, or None where there is none (or it is unreadable)."""
        found = _read_rows(self._cache, keys) if self._fast else _read_public(self._cache, keys)
        out: list[FwResponse | None] = []
        for key in keys:
            data = found.get(key)
            if data is None:
                out.append(None)
                continue
            try:
                out.append(decode_record(data, prompt))
            except RecordError as exc:  # a corrupt or foreign entry is a miss, not a crash
                log.warning("ignoring unreadable cache entry %s: %s", key[:12], exc)
                out.append(None)
        return out

    def set_many(self, items: Sequence[tuple[str, FwResponse]]) -> None:
        """Store samples, all in one transaction: each entry is complete or absent."""
        encoded = {key: encode_record(response) for key, response in items}
        with self._cache.transact():
            if self._fast:
                _write_rows(self._cache, encoded)
            else:
                for key, data in encoded.items():
                    self._cache.set(key, data)

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        """Close this thread's connection to the cache database."""
        self._cache.close()

    def __repr__(self) -> str:
        return f"SampleCache({self.directory!r})"


class WriteBehind:
    """Finished samples go to the cache in batches on the cache thread, not one transaction each.

    ``add`` never waits: a batch is handed to ``write`` (which stores it on the cache thread,
    e.g. ``SampleCache.set_many`` there) once ``batch`` samples are pending or ``interval``
    seconds have passed since the last batch. ``drain`` writes what is left and waits for
    every batch. (The store-based successor is :class:`fw_rollouts._writeback.WriteBehind`.)
    """

    __slots__ = ("_batch", "_clock", "_in_flight", "_interval", "_last", "_pending", "_where", "_write")

    def __init__(
        self,
        write: Callable[[list[tuple[str, FwResponse]]], asyncio.Future[None]],
        *,
        where: str = "",
        batch: int = 128,
        interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._where = where
        self._batch = batch
        self._interval = interval
        self._clock = clock
        self._last = clock()
        self._pending: list[tuple[str, FwResponse]] = []
        self._in_flight: list[asyncio.Future[None]] = []

    def add(self, key: str, response: FwResponse) -> None:
        """Queue one sample for writing."""
        self._pending.append((key, response))
        if len(self._pending) >= self._batch or self._clock() - self._last >= self._interval:
            self._flush()

    def _flush(self) -> None:
        items, self._pending = self._pending, []
        self._last = self._clock()
        if items:
            self._in_flight = [f for f in self._in_flight if not f.done()]
            self._in_flight.append(self._write(items))

    async def drain(self) -> None:
        """Write everything pending and wait until all of it is stored."""
        self._flush()
        in_flight, self._in_flight = self._in_flight, []
        for outcome in await asyncio.gather(*in_flight, return_exceptions=True):
            if isinstance(outcome, BaseException):
                # The samples are still returned; only their caching failed (disk full, read-only dir...).
                log.warning("could not write samples to the cache at %s: %r", self._where, outcome)
