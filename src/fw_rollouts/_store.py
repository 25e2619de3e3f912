"""Where cache records live: the :class:`SampleStore` protocol and :class:`DiskStore`, its diskcache form.

A store maps cache keys (str) to record bytes (:mod:`fw_rollouts._record`) and knows nothing
of what the bytes mean, so another backend (a Redis store, say) only has to move bytes.

:class:`DiskStore` keeps one ``diskcache.Cache`` per directory that never evicts. diskcache is
synchronous and keeps one SQLite connection per thread, so each store owns one worker thread:
the cache is opened there on first use and every operation runs there, whichever event loop
awaits it. Several processes may share a directory (SQLite locking).

A cache is a convenience, so a :class:`DiskStore` that cannot work as asked degrades instead
of stopping the work, and says so once, naming the path:

- a directory or database it cannot write (permissions, a read-only mount): it opens the
  database read-only (SQLite ``mode=ro``; ``immutable=1`` for a database closed cleanly in a
  directory where SQLite cannot create the ``-shm`` file it wants), serves what it holds and
  stores nothing;
- a damaged database file (not SQLite, truncated, a malformed page met by any query): it
  renames the file (``cache.db.corrupt-<UTC time>``, with its ``-wal`` and ``-shm``) and
  starts a new one;
- a database removed or replaced under it (the directory deleted while a client runs, or set
  aside by another process): it notices before the next operation, since each one compares
  the file under the path with the file it has open, and opens (or creates) the one there now;
  a write that raced with the removal is written again.

Any other failure (a full disk, a lock held beyond the timeout) is a :class:`ConfigurationError`
naming the database and the cause; the client's lookup and write-behind turn it into misses and
an uncached count. No sqlite3 error leaves the store.

diskcache is imported when a store is made, not with this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from ._diskcache_rows import MAX_ROW_BYTES, bytes_disk, iter_rows, knows_layout, read_public, read_rows, write_rows
from ._exceptions import ConfigurationError, FwRolloutsError
from ._locks import ForkBarrier, ForkSafeLock

if TYPE_CHECKING:
    import diskcache

__all__ = ["ClaimingStore", "DiskStore", "SampleStore", "StoreStats", "iter_entries"]

T = TypeVar("T")

log = logging.getLogger("fw_rollouts.cache")

_TIMEOUT = 120  # seconds SQLite waits for another process's lock (diskcache's own default is 60)

# Primary SQLite result codes (https://sqlite.org/rescode.html).
_SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 8, 11, 14, 26


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


@runtime_checkable
class ClaimingStore(SampleStore, Protocol):
    """A :class:`SampleStore` shared by many workers that can also hold an in-flight claim on a key.

    A worker claims the keys it is about to fetch; another worker asking for a claimed key waits
    for its record instead of paying for it too. Claims expire after ``claim_timeout`` seconds (a
    worker that dies leaves no claim for long), and a waiter fetches the sample itself after that
    long. :class:`DiskStore` does not claim (one machine's processes rarely race for a sample).
    """

    claim_timeout: float
    """Seconds a claim lives, and how long another worker waits for a claimed sample."""

    async def claim(self, keys: Sequence[str], owner: str) -> list[bool]:
        """Claim each key for ``owner``: True where the claim is now the caller's, False where another holds it."""
        ...

    async def unclaim(self, keys: Sequence[str], owner: str) -> None:
        """Drop ``owner``'s claims of ``keys`` (leaving any another holds); never raises for an unreachable store."""
        ...


class _Handle:
    """The database a :class:`DiskStore` has open (on its worker thread), and how it may use it."""

    __slots__ = ("cache", "connection", "fast", "identity")

    def __init__(
        self,
        connection: sqlite3.Connection | None,
        cache: diskcache.Cache | None,
        fast: bool,
        identity: tuple[int, int] | None,
    ) -> None:
        self.connection = connection  # None: nothing can be read (no database, or one that cannot be opened)
        self.cache = cache  # None: read-only, nothing is stored
        self.fast = fast  # whether diskcache's tables are as read_rows/write_rows expect
        self.identity = identity  # (device, inode) of the database file when opened; None if there was none

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a connection whose files are gone or damaged
            if self.cache is not None:
                self.cache.close()
            elif self.connection is not None:
                self.connection.close()


_NOTHING = _Handle(None, None, False, None)

# Handles a forked child inherited: kept, never closed or freed there. SQLite must not touch a connection from
# across fork() (closing one can checkpoint and delete files the parent still uses).
_INHERITED: list[_Handle] = []


class DiskStore:
    """A :class:`SampleStore` in a directory: a ``diskcache.Cache`` that never evicts, on its own thread.

    Construction only checks the directory (see :meth:`check`, which raises
    :class:`ConfigurationError` naming ``cache_dir``); the database opens on first use, on
    the store's worker thread. Any event loop may await the store's methods.

    ``read_only=True`` opens an existing cache (a shared dataset, say) for reading only: hits
    are served, :meth:`set_many` stores nothing, the directory is never created or written.
    A store that finds its directory or database not writable does the same, after one
    warning; so does one whose damaged database cannot be set aside. See the module
    docstring for a damaged or removed database.
    """

    __slots__ = ("_closed", "_database", "_executor", "_handle", "_lock", "_pid", "_read_only", "_sqlite", "location")

    location: str
    """The absolute path of the directory."""

    def __init__(self, directory: str | os.PathLike[str], *, read_only: bool = False) -> None:
        import diskcache

        self.location = self.check(directory, read_only=read_only)
        self._database = os.path.join(self.location, diskcache.core.DBNAME)
        self._read_only = read_only
        self._handle: _Handle | None = None  # only touched on the worker thread
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        self._closed = False
        # For starting and ending the worker: loops in several threads may race (and one may fork meanwhile).
        self._lock = ForkSafeLock()
        # Held while the store's thread is inside SQLite: a fork waits for it (see ForkBarrier).
        self._sqlite = ForkBarrier()

    @staticmethod
    def check(directory: str | os.PathLike[str], *, read_only: bool = False) -> str:
        """Make sure ``directory`` can hold a cache (creating it if need be); its absolute path.

        Cheap and synchronous (file-system checks, no database), so a client can call it in
        its constructor. Raises :class:`ConfigurationError` naming ``cache_dir`` if the path is
        a file or cannot be created (or, with ``read_only``, does not exist: a read-only store
        creates nothing). A directory that exists but cannot be written is fine: the store
        opens it read-only.
        """
        path = os.path.abspath(os.fspath(directory))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigurationError(f"cache_dir={path!r} is an existing file, not a directory")
        if read_only:
            if not os.path.isdir(path):
                raise ConfigurationError(f"cache_dir={path!r} does not exist (a read-only cache is not created)")
            return path
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cache_dir={path!r} cannot be created: {exc.strerror or exc}") from exc
        return path

    # -- the protocol ---------------------------------------------------------

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The record of each key, in order, or None where there is none (or it is not bytes)."""
        return await self._run(self._get_many, keys)

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(key, record)`` pairs in one SQLite transaction; the last pair wins for a repeated key.

        A read-only store stores nothing (it said why once, when it opened the database).
        """
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
        flags = (", read-only" if self._read_only else "") + (", closed" if self._closed else "")
        return f"DiskStore({self.location!r}{flags})"

    # -- the worker thread ------------------------------------------------------

    def _run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        executor = self._executor
        if executor is None or self._closed or self._pid != os.getpid():
            executor = self._start()
        try:
            return loop.run_in_executor(executor, self._guarded, fn, *args)
        except RuntimeError:  # "cannot schedule new futures after shutdown": closed meanwhile, by another thread
            raise self._closed_error() from None

    def _start(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._executor is None or self._pid != os.getpid():
                # A forked child inherits the executor but not its thread, nor a usable SQLite connection.
                if self._handle is not None and self._pid != os.getpid():
                    _INHERITED.append(self._handle)
                self._handle = None
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fw_rollouts-cache")
                self._pid = os.getpid()
            return self._executor

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the store's thread, with no fork taking place meanwhile."""
        with self._sqlite:
            return fn(*args)

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
            closing = executor.submit(self._guarded, self._drop)
        executor.shutdown(wait=False)  # the thread ends once the queue, close included, is done
        return closing

    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found = self._call(self._read, keys, "read")
        return [found.get(key) for key in keys]

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        latest = dict(items)  # a repeated key: the last value wins, as with one set() after another
        for key, value in latest.items():
            if type(key) is not str or type(value) is not bytes:
                raise TypeError(f"a store entry is (str, bytes), not ({type(key).__name__}, {type(value).__name__})")
        handle = self._call(self._write, latest, "write to")
        if handle.cache is not None and _identity(self._database) != handle.identity:
            # The database was removed (or set aside) while this write went on, so the write went to a file no
            # one will read again: write it to the one there now.
            self._call(self._write, latest, "write to")

    def _stats(self) -> StoreStats:
        entries, size = self._call(self._count, None, "count the entries of")
        return StoreStats(entries=entries, size_bytes=size, location=self.location)

    # -- opening, and what to do when the database is not what it should be ------------------------

    def _call(self, operation: Callable[[_Handle, Any], T], argument: Any, what: str) -> T:
        """``operation(handle, argument)`` on the database there is now; a damaged one is set aside and the
        operation runs once more on its replacement. Other failures raise ConfigurationError naming the file."""
        handle = None
        try:
            handle = self._current()
            return operation(handle, argument)
        except Exception as exc:
            if handle is None or not _is_damage(_cause(exc)):
                raise self._failure(what, exc) from exc
            handle = self._replace_damaged(handle, _cause(exc))
        try:
            return operation(handle, argument)
        except Exception as exc:
            raise self._failure(what, exc) from exc

    def _failure(self, what: str, exc: Exception) -> ConfigurationError:
        return ConfigurationError(f"cannot {what} the cache database {self._database}: {_describe(_cause(exc))}")

    def _current(self) -> _Handle:
        """The open database, reopened first if the file at its path is no longer the one open."""
        handle = self._handle
        if handle is not None:
            identity = _identity(self._database)
            if identity == handle.identity:
                return handle
            self._drop()
            removed = identity is None and handle.identity is not None
            handle = self._handle = self._open()
            if removed:
                log.warning(
                    "the cache database %s was removed while in use (its directory deleted?): %s",
                    self._database,
                    "started a new one" if handle.cache is not None else "nothing is read or stored there now",
                )
            return handle
        handle = self._handle = self._open()
        return handle

    def _drop(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def _open(self) -> _Handle:
        """The database, opened for writing if it can be, else for reading; never raises."""
        if self._read_only:
            return self._open_read_only(None)
        try:
            os.makedirs(self.location, exist_ok=True)  # deleted since the store was made, perhaps
        except OSError as exc:
            return self._open_read_only(f"the directory cannot be created: {_describe(exc)}")
        reason = _why_not_writable(self.location, self._database)
        if reason is None:
            found = _identity(self._database)
            try:
                return self._open_writable()
            except Exception as exc:
                if _is_damage(exc):
                    return self._set_aside(exc, found)
                reason = _describe(exc)
        return self._open_read_only(reason)

    def _open_writable(self) -> _Handle:
        cache = open_diskcache(self.location, wrap=False)
        try:
            connection = cache._con
            handle = _Handle(connection, cache, knows_layout(connection), _identity(self._database))
        except BaseException:
            cache.close()
            raise
        return handle

    def _open_read_only(self, reason: str | None) -> _Handle:
        """The database opened for reading only; ``reason`` is why, when the store was meant to write."""
        database = self._database
        identity = _identity(database)
        state = f"cannot be written ({reason})" if reason is not None else "is read-only"
        unused = "nothing is read from it or stored in it"
        if identity is None:
            log.warning("the cache at %s %s and holds no cache database: %s", self.location, state, unused)
            return _NOTHING
        connection = None
        try:
            connection = _connect_read_only(database)
            fast = knows_layout(connection)
        except Exception as exc:
            if connection is not None:
                connection.close()
            log.warning(
                "the cache at %s %s and its database %s cannot be read (%s): %s",
                self.location,
                state,
                database,
                _describe(exc),
                unused,
            )
            return _Handle(None, None, False, identity)
        if not fast:  # only diskcache itself could read it, and it cannot open a database read-only
            connection.close()
            log.warning(
                "the cache at %s %s and its database %s has tables this version reads only through diskcache, "
                "which needs to write: %s",
                self.location,
                state,
                database,
                unused,
            )
            return _Handle(None, None, False, identity)
        if reason is not None:
            log.warning(
                "the cache at %s cannot be written (%s): its samples are served, new samples are not stored",
                self.location,
                reason,
            )
        return _Handle(connection, None, True, identity)

    def _replace_damaged(self, handle: _Handle, exc: Exception) -> _Handle:
        """What to use instead of ``handle``, whose database just proved damaged."""
        self._drop()
        identity = _identity(self._database)
        if identity != handle.identity:  # already set aside (or replaced) by another process: use what is there now
            handle = self._handle = self._open()
        elif handle.cache is None:  # a read-only store cannot set it aside
            log.warning(
                "the cache database %s is damaged (%s) and read-only: nothing more is read from it",
                self._database,
                _describe(exc),
            )
            handle = self._handle = _Handle(None, None, False, identity)
        else:
            handle = self._handle = self._set_aside(exc, identity)
        return handle

    def _set_aside(self, exc: Exception, damaged: tuple[int, int] | None) -> _Handle:
        """Rename the damaged database (and its -wal and -shm files) and open a new one in its place.

        ``damaged`` is the (device, inode) of the damaged file: if the file at the path is another one
        now, another process has already set it aside, and the one there now is opened instead.
        """
        database = self._database
        if _identity(database) != damaged:
            return self._open_after_aside()
        target = f"{database}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        if os.path.exists(target):
            target += f"-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(database, target)
        except FileNotFoundError:  # moved aside by another process a moment ago
            return self._open_after_aside()
        except OSError as error:
            log.warning(
                "the cache database %s is damaged (%s) and cannot be moved aside (%s): nothing is read from it "
                "or stored in it",
                database,
                _describe(exc),
                error.strerror or error,
            )
            return _Handle(None, None, False, _identity(database))
        for suffix in ("-wal", "-shm"):  # SQLite finds them by name: keep them with the file they belong to
            with contextlib.suppress(OSError):
                os.rename(database + suffix, target + suffix)
        log.warning(
            "the cache database %s is damaged (%s): moved it to %s and started a new one "
            "(the samples it held are fetched again)",
            database,
            _describe(exc),
            target,
        )
        return self._open_after_aside()

    def _open_after_aside(self) -> _Handle:
        try:
            return self._open_writable()
        except Exception as exc:  # damaged again, or not writable after all: read what there is, if anything
            return self._open_read_only(_describe(exc))

    # -- operations on an open database -----------------------------------------------

    def _read(self, handle: _Handle, keys: Sequence[str]) -> dict[str, bytes]:
        if handle.connection is None or not keys:
            return {}
        if handle.fast:
            return read_rows(handle.connection, self.location, keys)
        return read_public(handle.cache, keys)

    def _write(self, handle: _Handle, items: dict[str, bytes]) -> _Handle:
        cache = handle.cache
        if cache is not None and items:
            with cache.transact():
                if handle.fast:
                    write_rows(cache, items)
                else:
                    for key, value in items.items():
                        cache.set(key, value)
        return handle

    def _count(self, handle: _Handle, _: None) -> tuple[int, int | None]:
        if handle.cache is not None:
            return len(handle.cache), handle.cache.volume()
        connection = handle.connection
        if connection is None:
            return 0, None
        settings = dict(connection.execute("SELECT key, value FROM Settings WHERE key IN ('count', 'size')"))
        ((pages,),) = connection.execute("PRAGMA page_count").fetchall()
        ((page_size,),) = connection.execute("PRAGMA page_size").fetchall()
        return int(settings.get("count", 0)), pages * page_size + int(settings.get("size", 0))


def open_diskcache(directory: str, *, wrap: bool = True) -> diskcache.Cache:
    """The ``diskcache.Cache`` of a cache directory, opened on (and for) the calling thread.

    A failure is a :class:`ConfigurationError` naming the directory, or with ``wrap=False``
    the error itself (after closing what the failed open had opened).
    """
    import diskcache

    # Built in two steps so that a failed open can close its connection: nothing should keep a damaged
    # file open when it is moved aside.
    cache = diskcache.Cache.__new__(diskcache.Cache)
    try:
        # eviction_policy "none": a research cache must never drop samples to save space.
        cache.__init__(
            directory,
            timeout=_TIMEOUT,
            disk=bytes_disk(),
            eviction_policy="none",
            statistics=0,
            disk_min_file_size=MAX_ROW_BYTES,
        )
    except Exception as exc:
        with contextlib.suppress(Exception):
            cache.close()
        if not wrap:
            raise
        raise ConfigurationError(f"cache_dir={directory!r} cannot be opened as a cache: {_describe(exc)}") from exc
    return cache


def iter_entries(directory: str) -> Generator[tuple[str, bytes], None, None]:
    """Every ``(key, bytes)`` of the cache in ``directory`` (none where it has no database), read without writing
    anything: for tools that list or copy a cache (``fw-rollouts cache``, ``merge_caches``)."""
    import diskcache

    database = os.path.join(directory, diskcache.core.DBNAME)
    if not os.path.isfile(database):
        return
    connection = _connect_read_only(database)
    try:
        if knows_layout(connection):
            yield from iter_rows(connection, directory)
            return
    finally:
        connection.close()
    # Tables of another diskcache version: its public API (our Disk, which never unpickles), one key at a time.
    cache = open_diskcache(directory)
    try:
        for key in cache.iterkeys():
            if isinstance(key, str):
                yield from read_public(cache, [key]).items()
    finally:
        cache.close()


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, or None where there is none (or it cannot be looked at)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _why_not_writable(directory: str, database: str) -> str | None:
    """Why SQLite could not write the database (before trying, which would fail half-way), or None."""
    # os.access honours read-only mounts, and grants root what root may do anyway.
    if not os.access(directory, os.W_OK | os.X_OK):
        return "read-only file system" if _read_only_mount(directory) else "permission denied on the directory"
    if os.path.exists(database) and not os.access(database, os.R_OK | os.W_OK):
        return "read-only file system" if _read_only_mount(directory) else f"permission denied on {database}"
    return None


def _read_only_mount(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs on this platform
        return False


def _connect_read_only(database: str) -> sqlite3.Connection:
    """A connection that never writes the database, tried with a query so that a failure shows here."""
    uri = f"file:{urllib.parse.quote(database)}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=_TIMEOUT)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchall()
        return connection
    except sqlite3.OperationalError as exc:
        connection.close()
        # A database in WAL mode (diskcache's) needs a -shm file beside it to be read. After a clean close
        # there is none, and SQLite cannot create one in a directory it cannot write (SQLITE_CANTOPEN on a
        # read-only mount, SQLITE_READONLY_DIRECTORY where permissions forbid it): with no -wal either, there
        # is nothing the file alone does not hold, so it can be read as immutable.
        if _code(exc) not in (_SQLITE_CANTOPEN, _SQLITE_READONLY) or os.path.exists(database + "-wal"):
            raise
    connection = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=_TIMEOUT)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except BaseException:
        connection.close()
        raise
    return connection


# What Python 3.10, which does not expose the result code, tells them apart by: SQLite's own text for each.
_CODE_OF_MESSAGE = {
    "attempt to write a readonly database": _SQLITE_READONLY,
    "database disk image is malformed": _SQLITE_CORRUPT,
    "unable to open database file": _SQLITE_CANTOPEN,
    "file is not a database": _SQLITE_NOTADB,
    "malformed database schema": _SQLITE_CORRUPT,
}


def _code(exc: BaseException) -> int | None:
    """The primary SQLite result code of an sqlite3 error, or None."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF
    if isinstance(exc, sqlite3.Error):
        message = str(exc)
        return next((c for text, c in _CODE_OF_MESSAGE.items() if message.startswith(text)), None)
    return None


def _is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database file is damaged (rather than locked, full or not writable)."""
    if isinstance(exc, UnicodeDecodeError):  # diskcache reading a text column (its settings) that is not UTF-8
        return True
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.ProgrammingError):
        return False
    # "Could not decode to UTF-8": raised by sqlite3 itself (no result code) for a text value that is not UTF-8.
    return _code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or str(exc).startswith("Could not decode to UTF-8")


def describe_failure(exc: BaseException) -> str:
    """A store's failure for a warning: our errors say enough themselves (and name the path); others with
    their class."""
    return str(exc) if isinstance(exc, FwRolloutsError) else f"{type(exc).__name__}: {exc}"


def _cause(exc: Exception) -> Exception:
    """The error that made a transaction fail, rather than the failed ROLLBACK that diskcache raised after it.

    SQLite rolls a transaction back by itself on some errors (SQLITE_FULL, SQLITE_CORRUPT...), so the ROLLBACK
    in diskcache's ``transact()`` then fails with "no transaction is active", hiding the reason.
    """
    while (
        isinstance(exc, sqlite3.OperationalError)
        and "no transaction is active" in str(exc)
        and isinstance(exc.__context__, Exception)
    ):
        exc = exc.__context__
    return exc


def _describe(exc: BaseException) -> str:
    """A short reason for a message: the error's own words, with the SQLite or OS name of the code."""
    diskcache = sys.modules.get("diskcache")  # only a store that opened a cache (and so imported it) meets its errors
    if diskcache is not None and isinstance(exc, diskcache.Timeout):  # BEGIN IMMEDIATE still busy after the timeout
        return f"database is locked (another process held it for over {_TIMEOUT} s)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    name = getattr(exc, "sqlite_errorname", None)
    text = str(exc) or type(exc).__name__
    return f"{text} ({name})" if isinstance(name, str) else text
