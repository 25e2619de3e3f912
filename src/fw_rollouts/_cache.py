"""The cache: one diskcache entry per sample, keyed by everything that shapes the output.

The key is a SHA-256 over the endpoint and the exact request body (model, the exact
prompt string, every sampling parameter, stop, logprobs, echo) plus the seed. The API
key is never part of it, nor stored. Only successful samples are written, each in its
own SQLite transaction, so an interrupted run leaves complete entries only; several
processes may share a directory (SQLite locking). diskcache is synchronous, so the
async core runs these methods on a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import pickle
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import diskcache

from ._logprobs import Logprobs
from ._models import FwResponse, Usage

__all__ = ["CacheKeyer", "SampleCache", "WriteBehind", "decode_sample", "encode_sample"]

log = logging.getLogger("fw_rollouts.cache")

_MAX_ROW_BYTES = 2**22
_MODE_RAW = 1  # diskcache.core.MODE_RAW: the value is the row's bytes
_KEYS_PER_QUERY = 500  # under SQLite's default limit of 999 parameters per statement
_FORMAT = 2  # 1: logprobs state inline, unpacked eagerly; 2: logprobs packed, unpacked on first use
_KEY_VERSION = "fw_rollouts/1"


class CacheKeyer:
    """Cache keys for the samples of one request: hash the output-shaping body once, then add each seed.

    ``body`` must hold every field that changes the output and nothing else (no seed, no n).
    """

    __slots__ = ("_prefix",)

    def __init__(self, endpoint: str, body: Mapping[str, Any]) -> None:
        canonical = json.dumps(
            {"v": _KEY_VERSION, "endpoint": endpoint, "body": body},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        self._prefix = hashlib.sha256(canonical.encode("utf-8"))

    def __call__(self, seed: int, choice: int | None = None) -> str:
        """The key of the sample sent with ``seed`` (and, with ``n`` > 1, of its ``choice``)."""
        h = self._prefix.copy()
        h.update(b"|seed=%d" % seed if choice is None else b"|seed=%d|choice=%d" % (seed, choice))
        return h.hexdigest()


def encode_sample(response: FwResponse) -> bytes:
    """Serialise a sample for the cache (without the prompt, which the key already fixes)."""
    usage = response.usage
    fields = (
        response.full,
        response.content,
        response.reasoning,
        response.finish_reason,
        response.completed_reasoning,
        (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens),
        response.seed,
        response.model,
        response.response_id,
        response.created,
        None if response.logprobs is None else response.logprobs.packed(),
        response.echo,
        response.index,
    )
    return pickle.dumps((_FORMAT, fields), protocol=pickle.HIGHEST_PROTOCOL)


def decode_sample(data: bytes, prompt: str) -> FwResponse:
    """Inverse of :func:`encode_sample`; ``prompt`` is the prompt string of the request."""
    version, fields = pickle.loads(data)
    if version not in (1, _FORMAT):
        raise ValueError(f"cache entry format {version} is not {_FORMAT}")
    (full, content, reasoning, finish, completed, usage, seed, model, rid, created, lp_state, echo, index) = fields
    logprobs = None
    if isinstance(lp_state, bytes):
        logprobs = Logprobs.from_packed(lp_state)
    elif lp_state is not None:
        logprobs = Logprobs.__new__(Logprobs)
        logprobs.__setstate__(lp_state)
    return FwResponse(
        full=full,
        content=content,
        reasoning=reasoning,
        finish_reason=finish,
        completed_reasoning=completed,
        usage=Usage(*usage),
        seed=seed,
        model=model,
        response_id=rid,
        created=created,
        logprobs=logprobs,
        echo=echo,
        prompt=prompt,
        index=index,
        cached=True,
    )


class SampleCache:
    """A directory of cached samples (a ``diskcache.Cache`` that never evicts)."""

    __slots__ = ("_cache", "directory")

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        # eviction_policy "none": a research cache must never drop samples to save space.
        # disk_min_file_size: samples with long logprobs stay rows of the database, not files of their own.
        self._cache = diskcache.Cache(
            self.directory, eviction_policy="none", statistics=0, timeout=120, disk_min_file_size=_MAX_ROW_BYTES
        )

    def get_many(self, keys: Sequence[str], prompt: str) -> list[FwResponse | None]:
        """The cached sample for each key, or None where there is none (or it is unreadable)."""
        found = self._read(keys)
        out: list[FwResponse | None] = []
        for key in keys:
            data = found.get(key)
            if data is None:
                out.append(None)
                continue
            try:
                out.append(decode_sample(data, prompt))
            except Exception as exc:  # a corrupt or foreign entry is a miss, not a crash
                log.warning("ignoring unreadable cache entry %s: %r", key[:12], exc)
                out.append(None)
        return out

    def _read(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Raw entries for ``keys``, hundreds per query.

        diskcache reads one key per query (about 15 us each); a cache-hit re-run of thousands
        of samples is dominated by that, so this reads its ``Cache`` table with ``IN`` through
        diskcache's own connection, decoding values with its own ``Disk``. Should diskcache
        ever change those internals, it falls back to one ``get`` per key.
        """
        cache = self._cache
        try:
            sql: Callable[..., Any] = cache._sql
            fetch: Callable[..., Any] = cache._disk.fetch
        except AttributeError:  # pragma: no cover - another diskcache layout
            return {key: value for key in keys if (value := cache.get(key)) is not None}
        found: dict[str, bytes] = {}
        now = time.time()
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = list(keys[start : start + _KEYS_PER_QUERY])
            rows = sql(
                "SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN "
                f"({','.join('?' * len(chunk))}) AND (expire_time IS NULL OR expire_time > ?)",
                (*chunk, now),
            ).fetchall()
            for key, mode, filename, value in rows:
                try:
                    found[key] = fetch(mode, filename, value, False)
                except OSError:  # removed meanwhile by another process: a miss
                    continue
        return found

    def set_many(self, items: Sequence[tuple[str, FwResponse]]) -> None:
        """Store samples, all in one transaction: each entry is complete or absent.

        Like :meth:`_read`, rows go into diskcache's ``Cache`` table in one statement through
        its own connection (diskcache's ``set`` costs about 40 us per entry in Python); an entry
        stored before under the same key is replaced. Entries too large for a row go through
        ``set``, as does everything should diskcache's internals differ.
        """
        cache = self._cache
        encoded = [(key, encode_sample(response)) for key, response in items]
        try:
            connection = cache._con
        except AttributeError:  # pragma: no cover - another diskcache layout
            connection = None
        with cache.transact():
            if connection is None:
                for key, data in encoded:
                    cache.set(key, data)
                return
            now = time.time()
            rows = []
            for key, data in encoded:
                if len(data) >= _MAX_ROW_BYTES:
                    cache.set(key, data)
                else:
                    rows.append((key, now, now, sqlite3.Binary(data)))
            # An upsert, not INSERT OR REPLACE: REPLACE deletes without firing the triggers that keep
            # diskcache's entry count.
            connection.executemany(
                "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count,"
                f" tag, size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, {_MODE_RAW}, NULL, ?)"
                " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time,"
                " access_time = excluded.access_time, size = 0, mode = excluded.mode, filename = NULL,"
                " value = excluded.value",
                rows,
            )

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
    every batch; it runs before a call returns or is abandoned, so that an interrupted run
    still leaves what it fetched.
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
