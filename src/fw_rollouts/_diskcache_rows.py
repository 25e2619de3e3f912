"""diskcache's ``Cache`` table read and written directly, hundreds of keys per statement: the store's fast path.

diskcache reads and writes one key per statement (about 15 us per get and 40 us per set, in Python); a
cache-hit re-run of thousands of samples would be dominated by that. :func:`read_rows` and
:func:`write_rows` use diskcache's own connection (``Cache._con``, its one private member used here;
writes inside its public ``transact()``) with exactly the column values its ``get``/``set`` use; values
too large for a row go through ``set``. tests/test_store.py proves both directions against diskcache's
public API. Should diskcache's tables ever differ, :func:`knows_layout` says so and the store uses one
public ``get``/``set`` per key (:func:`read_public`).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import diskcache

__all__ = ["MAX_ROW_BYTES", "bytes_disk", "iter_rows", "knows_layout", "read_public", "read_rows", "write_rows"]

# Records up to 4 MiB stay rows of the database rather than files of their own (diskcache's
# default is 32 KiB, which would put every sample with long logprobs in a file).
MAX_ROW_BYTES = 2**22
_KEYS_PER_QUERY = 500  # under SQLite's historical limit of 999 parameters per statement
_MODE_RAW = 1  # diskcache.core.MODE_RAW: the row's value column holds the bytes
_MODE_BINARY = 2  # diskcache.core.MODE_BINARY: the bytes are in the file the row's filename names
_COLUMNS = ("rowid", "key", "raw", "store_time", "expire_time", "access_time", "access_count", "tag", "size", "mode",
            "filename", "value")  # fmt: skip


@cache
def bytes_disk() -> type[diskcache.Disk]:
    """diskcache's ``Disk`` that only ever returns bytes (or a str/number stored raw) and never unpickles.

    A pickled or text value, and a value file that is missing or not a regular file inside
    the directory, reads as None (a miss). Made on first use, so that importing this module
    needs no diskcache.
    """
    import diskcache

    class BytesDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache is untyped
        """diskcache's ``Disk`` that only ever returns bytes (see :func:`bytes_disk`)."""

        def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
            """The stored bytes, as ``Disk.fetch`` returns them, or None for anything else."""
            if mode == _MODE_RAW:
                return bytes(value) if type(value) is memoryview else value
            if mode == _MODE_BINARY and not read:
                return _read_value_file(self._directory, filename)
            return None

    return BytesDisk


def _read_value_file(directory: str, filename: object) -> bytes | None:
    """The bytes of a value file named by a row, or None unless it is a regular file inside ``directory``.

    The name comes from the database: a damaged (or hostile) one must not make the store read
    another file, a device or a pipe (which would block for ever).
    """
    if type(filename) is not str or not filename:
        return None
    path = os.path.normpath(os.path.join(directory, filename))
    if path == directory or os.path.commonpath((directory, path)) != directory:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError:  # removed meanwhile by another process: a miss
        return None
    with open(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return file.read()


def knows_layout(connection: Any) -> bool:
    """Whether diskcache's ``Cache`` table and its unique (key, raw) index are the ones this module writes."""
    if not isinstance(connection, sqlite3.Connection):
        return False
    columns = tuple(row[1] for row in connection.execute("PRAGMA table_info(Cache)"))
    unique = any(row[1] == "Cache_key_raw" and row[2] for row in connection.execute("PRAGMA index_list(Cache)"))
    indexed = tuple(row[2] for row in connection.execute("PRAGMA index_info(Cache_key_raw)"))
    return columns == _COLUMNS and unique and indexed == ("key", "raw")


def read_rows(connection: sqlite3.Connection, directory: str, keys: Sequence[str]) -> dict[str, bytes]:
    """The bytes stored under ``keys``, as ``Cache.get`` would return them, hundreds of keys per query.

    Like ``get``: only str keys (``raw = 1``) that have not expired; a value in a file is read
    from it (a file removed meanwhile by another process is a miss). Unlike ``get``, only bytes
    values count: a str, number or pickled object stored by other code is a miss, and a
    pickle is never loaded.
    """
    found: dict[str, bytes] = {}
    now = time.time()
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        rows = connection.execute(
            "SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN "
            f"({','.join('?' * len(chunk))}) AND (expire_time IS NULL OR expire_time > ?)",
            (*chunk, now),
        ).fetchall()
        for key, mode, filename, value in rows:
            if mode == _MODE_RAW:  # nearly every row
                if type(value) is bytes:
                    found[key] = value
            elif mode == _MODE_BINARY:
                data = _read_value_file(directory, filename)
                if data is not None:
                    found[key] = data
    return found


def iter_rows(connection: sqlite3.Connection, directory: str) -> Iterator[tuple[str, bytes]]:
    """Every ``(key, bytes)`` entry :func:`read_rows` would return, in the order they were stored: for tools
    that list a cache (``fw-rollouts cache``). Read a few hundred rows per query, so a long listing holds no
    transaction that would keep writers' changes from being checkpointed."""
    last = 0
    while True:
        rows = connection.execute(
            "SELECT rowid, key, mode, filename, value FROM Cache WHERE raw = 1 AND rowid > ? "
            f"AND (expire_time IS NULL OR expire_time > ?) ORDER BY rowid LIMIT {_KEYS_PER_QUERY}",
            (last, time.time()),
        ).fetchall()
        if not rows:
            return
        for rowid, key, mode, filename, value in rows:
            last = rowid
            data = None
            if mode == _MODE_RAW:
                data = value
            elif mode == _MODE_BINARY:
                data = _read_value_file(directory, filename)
            if type(key) is str and type(data) is bytes:
                yield key, data


def write_rows(cache: diskcache.Cache, items: dict[str, bytes]) -> None:
    """Store ``items`` as ``Cache.set(key, value)`` would, in the transaction the caller holds.

    Rows small enough for the database go in with one upsert statement: an INSERT, or for an
    existing key an UPDATE to the same column values ``set`` writes. (Not INSERT OR REPLACE:
    REPLACE deletes without firing the triggers that keep diskcache's entry count and size.)
    An existing entry whose value is a file is left to ``set``, which removes the old file
    after the commit; so is a value of ``MAX_ROW_BYTES`` or more, which ``set`` writes to a file.
    """
    connection: sqlite3.Connection = cache._con
    now = time.time()
    rows = []
    large = []
    for key, value in items.items():
        if len(value) < MAX_ROW_BYTES:
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


def read_public(cache: diskcache.Cache, keys: Sequence[str]) -> dict[str, bytes]:
    """What :func:`read_rows` returns, through diskcache's public ``get``, one key at a time (the fallback)."""
    found: dict[str, bytes] = {}
    for key in keys:
        value = cache.get(key)
        if type(value) is bytes:
            found[key] = value
    return found
