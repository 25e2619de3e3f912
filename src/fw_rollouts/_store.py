"""Where cache records live: the :class:`SampleStore` protocol and :class:`DiskStore`, its diskcache form.

A store maps cache keys (str) to record bytes (:mod:`fw_rollouts._record`) and knows nothing
of what the bytes mean, so another backend (a Redis store, say) only has to move bytes.

:class:`DiskStore` keeps one ``diskcache.Cache`` per directory that never evicts. diskcache is
synchronous and keeps one SQLite connection per thread, so each store owns one worker thread:
the cache is opened there on first use and every operation runs there, whichever event loop
awaits it. Several processes may share a directory (SQLite locking).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import diskcache

from ._exceptions import ConfigurationError

__all__ = ["DiskStore", "SampleStore", "StoreStats"]

T = TypeVar("T")

# Records up to 4 MiB stay rows of the database rather than files of their own (diskcache's
# default is 32 KiB, which would put every sample with long logprobs in a file).
_MAX_ROW_BYTES = 2**22
_KEYS_PER_QUERY = 500  # under SQLite's historical limit of 999 parameters per statement
_MODE_RAW = 1  # diskcache.core.MODE_RAW: the row's value column holds the bytes
_COLUMNS = ("rowid", "key", "raw", "store_time", "expire_time", "access_time", "access_count", "tag", "size", "mode",
            "filename", "value")  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What a store holds."""

    entries: int
    """How many records."""
    size_bytes: int | None
    """Bytes used (on disk for :class:`DiskStore`), or None where the backend cannot tell."""
    location: str
    """Where the records are (a directory, a URL)."""


@runtime_checkable
class SampleStore(Protocol):
    """Record bytes by cache key: what the client needs of a cache backend.

    Values are opaque bytes. ``set_many`` is all-or-nothing per call (an interrupted write
    leaves every entry of the call or none). After ``aclose`` a store refuses every call.
    """

    location: str
    """Where the records are, for messages and ``FwRollouts.cache_dir`` (a directory, a URL)."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The record of each key, in order, or None where there is none."""
        ...

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(key, record)`` pairs, replacing what was under the same keys, in one transaction."""
        ...

    async def stats(self) -> StoreStats:
        """How many records the store holds and how big it is."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources; idempotent."""
        ...


class DiskStore:
    """A :class:`SampleStore` in a directory: a ``diskcache.Cache`` that never evicts, on its own thread.

    Construction only checks the directory (see :meth:`check`, which raises
    :class:`ConfigurationError` naming ``cache_dir``); the database opens on first use, on
    the store's worker thread. Any event loop may await the store's methods.
    """

    __slots__ = ("_cache", "_closed", "_executor", "_fast", "_lock", "_pid", "location")

    location: str
    """The absolute path of the directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.location = self.check(directory)
        self._cache: diskcache.Cache | None = None  # only touched on the worker thread
        self._fast = False  # whether diskcache's tables are as _read_rows/_write_rows expect
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        self._closed = False
        self._lock = threading.Lock()  # for starting and ending the worker: loops in several threads may race

    @staticmethod
    def check(directory: str | os.PathLike[str]) -> str:
        """Make sure ``directory`` can hold a cache (creating it if need be); its absolute path.

        Cheap and synchronous (file-system checks, no database), so a client can call it in
        its constructor. Raises :class:`ConfigurationError` naming ``cache_dir`` if the path is
        a file, cannot be created, or cannot be written.
        """
        path = os.path.abspath(os.fspath(directory))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigurationError(f"cache_dir={path!r} is an existing file, not a directory")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cache_dir={path!r} cannot be created: {exc.strerror or exc}") from exc
        # os.access honours read-only mounts and, for root, grants what root may do anyway.
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigurationError(f"cache_dir={path!r} cannot be written (permission denied)")
        database = os.path.join(path, diskcache.core.DBNAME)
        if os.path.exists(database) and not os.access(database, os.R_OK | os.W_OK):
            raise ConfigurationError(f"cache_dir={path!r} cannot be written: {database} is not writable")
        return path

    # -- the protocol ---------------------------------------------------------

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The record of each key, in order, or None where there is none (or it is not bytes)."""
        return await self._run(self._get_many, keys)

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(key, record)`` pairs in one SQLite transaction; the last pair wins for a repeated key."""
        await self._run(self._set_many, items)

    async def stats(self) -> StoreStats:
        """Entry count and bytes on disk (database pages plus value files)."""
        return await self._run(self._stats)

    async def aclose(self) -> None:
        """Close the database on the worker thread (after what is queued there) and end the thread."""
        closing = self._begin_close()
        if closing is not None:
            await asyncio.wrap_future(closing)

    def close(self) -> None:
        """Blocking :meth:`aclose`, for code without an event loop; idempotent."""
        closing = self._begin_close()
        if closing is not None:
            closing.result()

    async def __aenter__(self) -> DiskStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"DiskStore({self.location!r}{', closed' if self._closed else ''})"

    # -- the worker thread ------------------------------------------------------

    def _run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        executor = self._executor
        if executor is None or self._closed or self._pid != os.getpid():
            executor = self._start()
        try:
            return loop.run_in_executor(executor, fn, *args)
        except RuntimeError:  # "cannot schedule new futures after shutdown": closed meanwhile, by another thread
            raise self._closed_error() from None

    def _start(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._executor is None or self._pid != os.getpid():
                # A forked child inherits the executor but not its thread, nor a usable SQLite connection.
                self._cache = None
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fw_rollouts-cache")
                self._pid = os.getpid()
            return self._executor

    def _closed_error(self) -> ConfigurationError:
        return ConfigurationError(f"cache store is closed (cache_dir={self.location!r})")

    def _begin_close(self) -> Future[None] | None:
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            executor, self._executor = self._executor, None
            if executor is None or self._pid != os.getpid():
                return None
            closing = executor.submit(self._close_cache)
        executor.shutdown(wait=False)  # the thread ends once the queue, close included, is done
        return closing

    def _open(self) -> diskcache.Cache:
        cache = self._cache
        if cache is None:
            cache = open_diskcache(self.location)
            self._fast = _knows_layout(getattr(cache, "_con", None))
            self._cache = cache
        return cache

    def _close_cache(self) -> None:
        cache, self._cache = self._cache, None
        if cache is not None:
            cache.close()

    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        cache = self._open()
        found = _read_rows(cache, keys) if self._fast else _read_public(cache, keys)
        return [found.get(key) for key in keys]

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        latest = dict(items)  # a repeated key: the last value wins, as with one set() after another
        for key, value in latest.items():
            if type(key) is not str or type(value) is not bytes:
                raise TypeError(f"a store entry is (str, bytes), not ({type(key).__name__}, {type(value).__name__})")
        cache = self._open()
        with cache.transact():
            if self._fast:
                _write_rows(cache, latest)
            else:
                for key, value in latest.items():
                    cache.set(key, value)

    def _stats(self) -> StoreStats:
        cache = self._open()
        return StoreStats(entries=len(cache), size_bytes=cache.volume(), location=self.location)


def open_diskcache(directory: str) -> diskcache.Cache:
    """The ``diskcache.Cache`` of a cache directory, opened on (and for) the calling thread."""
    try:
        # eviction_policy "none": a research cache must never drop samples to save space.
        return diskcache.Cache(
            directory,
            disk=_BytesDisk,
            eviction_policy="none",
            statistics=0,
            timeout=120,
            disk_min_file_size=_MAX_ROW_BYTES,
        )
    except (OSError, sqlite3.Error) as exc:  # e.g. a file named cache.db that is not a database
        raise ConfigurationError(f"cache_dir={directory!r} cannot be opened as a cache: {exc}") from exc


# -- diskcache, quickly --------------------------------------------------------------------------------------
# diskcache reads and writes one key per statement (about 15 us per get and 40 us per set, in Python); a
# cache-hit re-run of thousands of samples would be dominated by that. _read_rows and _write_rows read and
# write diskcache's ``Cache`` table directly, hundreds of keys per statement, through diskcache's own
# connection (``Cache._con``, its one private member used here; writes inside its public ``transact()``)
# and with exactly the column values its ``get``/``set`` use; values too large for a row go through
# ``set``. tests/test_store.py proves both directions against diskcache's public API. Should diskcache's
# tables ever differ, ``_knows_layout`` says so and the store uses one public ``get``/``set`` per key.


class _BytesDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache is untyped
    """diskcache's ``Disk`` that never unpickles: a value some other code stored pickled reads as None."""

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        """The stored value, as ``Disk.fetch`` returns it, except None for a pickled one."""
        if mode == diskcache.core.MODE_PICKLE:
            return None
        return super().fetch(mode, filename, value, read)


def _knows_layout(connection: Any) -> bool:
    """Whether diskcache's ``Cache`` table and its unique (key, raw) index are the ones this module writes."""
    if not isinstance(connection, sqlite3.Connection):
        return False
    columns = tuple(row[1] for row in connection.execute("PRAGMA table_info(Cache)"))
    unique = any(row[1] == "Cache_key_raw" and row[2] for row in connection.execute("PRAGMA index_list(Cache)"))
    indexed = tuple(row[2] for row in connection.execute("PRAGMA index_info(Cache_key_raw)"))
    return columns == _COLUMNS and unique and indexed == ("key", "raw")


def _read_rows(cache: diskcache.Cache, keys: Sequence[str]) -> dict[str, bytes]:
    """The bytes stored under ``keys``, as ``Cache.get`` would return them, hundreds of keys per query.

    Like ``get``: only str keys (``raw = 1``) that have not expired; a value in a file is read
    from it (a file removed meanwhile by another process is a miss). Unlike ``get``, only bytes
    values count: a str, number or pickled object stored by other code is a miss, and a
    pickle is never loaded.
    """
    found: dict[str, bytes] = {}
    connection: sqlite3.Connection = cache._con
    fetch = cache.disk.fetch
    now = time.time()
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        rows = connection.execute(
            "SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN "
            f"({','.join('?' * len(chunk))}) AND (expire_time IS NULL OR expire_time > ?)",
            (*chunk, now),
        ).fetchall()
        for key, mode, filename, value in rows:
            if mode == _MODE_RAW:  # nearly every row: spare the call
                if type(value) is bytes:
                    found[key] = value
                continue
            try:
                data = fetch(mode, filename, value, False)
            except OSError:  # the file was removed meanwhile (by another process): a miss
                continue
            if type(data) is bytes:
                found[key] = data
    return found


def _write_rows(cache: diskcache.Cache, items: dict[str, bytes]) -> None:
    """Store ``items`` as ``Cache.set(key, value)`` would, in the transaction the caller holds.

    Rows small enough for the database go in with one upsert statement: an INSERT, or for an
    existing key an UPDATE to the same column values ``set`` writes. (Not INSERT OR REPLACE:
    REPLACE deletes without firing the triggers that keep diskcache's entry count and size.)
    An existing entry whose value is a file is left to ``set``, which removes the old file
    after the commit; so is a value of ``_MAX_ROW_BYTES`` or more, which ``set`` writes to a file.
    """
    connection: sqlite3.Connection = cache._con
    now = time.time()
    rows = []
    large = []
    for key, value in items.items():
        if len(value) < _MAX_ROW_BYTES:
            rows.append((key, now, now, value))
        else:
            large.append(key)
    if rows:
        cursor = connection.executemany(
            "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size, mode,"
            f" filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, {_MODE_RAW}, NULL, ?)"
            " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time, expire_time = NULL,"
            " access_time = excluded.access_time, access_count = 0, tag = NULL, size = 0, mode = excluded.mode,"
            " filename = NULL, value = excluded.value WHERE filename IS NULL",
            rows,
        )
        if cursor.rowcount != len(rows):  # some keys held a file: the WHERE skipped them
            keys = [row[0] for row in rows]
            for start in range(0, len(keys), _KEYS_PER_QUERY):
                chunk = keys[start : start + _KEYS_PER_QUERY]
                large.extend(
                    key
                    for (key,) in connection.execute(
                        "SELECT key FROM Cache WHERE raw = 1 AND filename IS NOT NULL AND key IN "
                        f"({','.join('?' * len(chunk))})",
                        chunk,
                    )
                )
    for key in large:
        cache.set(key, items[key])


def _read_public(cache: diskcache.Cache, keys: Sequence[str]) -> dict[str, bytes]:
    """What :func:`_read_rows` returns, through diskcache's public ``get``, one key at a time (the fallback)."""
    found: dict[str, bytes] = {}
    for key in keys:
        value = cache.get(key)
        if type(value) is bytes:
            found[key] = value
    return found
