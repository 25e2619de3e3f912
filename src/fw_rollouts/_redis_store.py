"""The Redis cache store: :class:`RedisStore`, a :class:`~._store.SampleStore` many processes and machines share.

The store moves the client's record bytes under the client's keys (``prefix`` + key), so an
entry written by one worker is a hit for every other, and the records are those a
:class:`~._store.DiskStore` holds. Each value is one tag byte then the record: ``0`` as is,
``1`` zlib-compressed (only when that makes it smaller). Reading never runs anything from the
data: an unknown tag, a value that does not inflate, or one that would inflate past
``max_record_bytes`` is a miss (the client fetches the sample again), never a MemoryError.

A cache is a convenience, so a Redis that goes away (or restarts) degrades to "no cache" with
one warning naming the server and the cause: reads are misses, writes wait in a bounded buffer
(``buffer_bytes``), and the store tries the server again after a short backoff (skipping it
meanwhile, so that a run against a dead server is not slowed by connect timeouts). When the
server answers again, the buffer is written and the store goes on, saying so once. It also writes
again the prompt records it wrote or read lately (the last 256): a server that restarted empty has lost them,
and the samples that share their prompt's part cannot be read without one.

The in-flight claim (:class:`~._store.ClaimingStore`): ``claim`` sets ``prefix + "claim:" + key``
with ``SET NX PX`` (the claim expires after ``claim_timeout``, so a dead worker's claim does
not block anyone for long); ``unclaim`` deletes only the caller's own claims (compare and
delete, one Lua script).

redis.asyncio connections belong to the event loop that made them, so the store keeps one
client per loop (:class:`~._loop_local.LoopLocal`). ``redis`` is imported when a store is made.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from ._exceptions import ConfigurationError, ValidationError
from ._loop_local import LoopLocal
from ._record import PROMPT_MAGIC
from ._redact import REDACTED, remember_secret
from ._store import StoreStats

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["REDIS_SCHEMES", "RedisStore", "is_redis_url", "redact_url"]

log = logging.getLogger("fw_rollouts.cache")

REDIS_SCHEMES = ("redis", "rediss", "unix")
"""The URL schemes a :class:`RedisStore` takes."""

ALLOWED_URLS = "a Redis URL (redis://[[user]:password@]host[:port][/db], rediss://... for TLS, unix:///path?db=N)"

_RAW, _ZLIB = 0, 1  # the tag byte ahead of each value
_COMPRESS_FROM = 128  # bytes: shorter records seldom shrink
_MGET_CHUNK = 512  # keys per MGET (several per round trip, in one pipeline)
_SET_CHUNK = 2048  # claims per pipeline, and keys per unclaim script call
_SCAN_COUNT = 1000
_PROMPTS_KEPT = 256  # prompt records written again when a server comes back
_BACKOFF_FIRST, _BACKOFF_MAX = 0.25, 5.0  # seconds before trying a server that went away again

# Deletes each KEYS[i] that still holds ARGV[1] (the caller's own claim, not one taken over since).
_UNCLAIM = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    n = n + redis.call('DEL', key)
  end
end
return n
"""


def is_redis_url(value: object) -> bool:
    """Whether ``value`` is a string that names a Redis server by its scheme (checked no further)."""
    return isinstance(value, str) and value.partition("://")[0].lower() in REDIS_SCHEMES and "://" in value


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if password is not None and "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{k}={REDACTED if k.lower() == 'password' else urllib.parse.quote(v, safe='')}" for k, v in pairs
        )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _check_url(url: object) -> tuple[str, tuple[str, ...]]:
    """The redacted form of a valid Redis URL and the secrets it holds; ValidationError naming ``cache`` else."""
    if not isinstance(url, str):
        raise ValidationError("cache", type(url).__name__, ALLOWED_URLS)
    shown = redact_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port  # raises for a port that is not a number
        secrets = tuple(s for s in (parts.password, *_query_passwords(parts.query)) if s)
    except ValueError as exc:
        raise ValidationError("cache", shown, ALLOWED_URLS, message=f"invalid cache={shown!r}: {exc}; "
                              f"expected {ALLOWED_URLS}") from None  # fmt: skip
    if scheme not in REDIS_SCHEMES:
        raise ValidationError("cache", shown, ALLOWED_URLS)
    if scheme == "unix":
        if not parts.path:
            raise ValidationError("cache", shown, f"{ALLOWED_URLS}: a unix:// URL needs the socket's path")
    elif not parts.hostname:
        raise ValidationError("cache", shown, f"{ALLOWED_URLS}: the URL has no host")
    elif port is not None and not 0 < port < 65536:
        raise ValidationError("cache", shown, f"{ALLOWED_URLS}: port {port} is out of range")
    db = parts.path.strip("/") if scheme != "unix" else ""
    if db and not db.isdigit():
        raise ValidationError("cache", shown, f"{ALLOWED_URLS}: the database must be a number, not {db!r}")
    return shown, secrets


def _query_passwords(query: str) -> list[str]:
    return [v for k, v in urllib.parse.parse_qsl(query) if k.lower() == "password"]


def _pack(record: bytes) -> bytes:
    """The stored form of a record: compressed when that pays."""
    if len(record) >= _COMPRESS_FROM:
        packed = zlib.compress(record, 1)
        if len(packed) < len(record):
            return b"\x01" + packed
    return b"\x00" + record


def _unpack(value: bytes | None, limit: int) -> bytes | None:
    """The record a stored value holds, or None (a miss) for anything that is not one within ``limit`` bytes."""
    if not value:
        return None
    tag = value[0]
    if tag == _RAW:
        return value[1:]
    if tag != _ZLIB:
        return None
    inflater = zlib.decompressobj()
    try:
        record = inflater.decompress(memoryview(value)[1:], limit + 1)
    except zlib.error:
        return None
    if len(record) > limit or not inflater.eof or inflater.unused_data:
        return None  # inflates past the limit (a bomb), or trails bytes after the stream: not ours
    return record


class _Down(Exception):
    """The server is known to be down: skip it until the next retry time."""


class RedisStore:
    """A :class:`~fw_rollouts.SampleStore` in Redis, shared by every process and machine that uses the same URL.

    ``url`` is ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS or
    ``unix:///path/to/socket?db=N``; a malformed one is a :class:`~fw_rollouts.ValidationError`
    naming ``cache``, raised here, before any request. Nothing connects until first use.
    ``location`` (and every message) shows the URL with its password redacted.

    Keys are ``prefix`` + the client's cache key; ``ttl`` (seconds, None: kept until deleted)
    sets how long an entry lives. ``connect_timeout`` and ``socket_timeout`` bound each
    command; kept short, so an unreachable server costs little. A server that goes away is
    skipped (reads miss, writes wait in a buffer of up to ``buffer_bytes``) and tried again
    after a backoff; see the module docstring. ``claim_timeout`` is how long an in-flight
    claim lives, and how long another worker waits for the claimed sample before fetching it
    itself. ``max_record_bytes`` bounds what a compressed value may inflate to.
    """

    __slots__ = (
        "_buffer",
        "_buffered_bytes",
        "_clients",
        "_closed",
        "_connect_timeout",
        "_down_since",
        "_dropped",
        "_failures",
        "_options",
        "_probes",
        "_probing",
        "_prompts",
        "_retry_at",
        "_socket_timeout",
        "_ttl_ms",
        "_url",
        "buffer_bytes",
        "claim_timeout",
        "location",
        "max_record_bytes",
        "prefix",
    )

    location: str
    """The URL with its password redacted."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "fw_rollouts:",
        ttl: float | None = None,
        connect_timeout: float = 1.0,
        socket_timeout: float = 5.0,
        claim_timeout: float = 120.0,
        buffer_bytes: int = 64 * 2**20,
        max_record_bytes: int = 256 * 2**20,
    ) -> None:
        import redis.asyncio  # noqa: F401  (a missing extra is an error now, not at the first lookup)

        self.location, secrets = _check_url(url)
        for secret in secrets:
            remember_secret(secret)  # log records are scrubbed of it too
        if not isinstance(prefix, str):
            raise ValidationError("prefix", prefix, "a string")
        for name, value in (("connect_timeout", connect_timeout), ("socket_timeout", socket_timeout),
                            ("claim_timeout", claim_timeout)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValidationError(name, value, "a number of seconds above 0")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0):
            raise ValidationError("ttl", ttl, "a number of seconds above 0, or None (kept until deleted)")
        for name, size in (("buffer_bytes", buffer_bytes), ("max_record_bytes", max_record_bytes)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ValidationError(name, size, "a number of bytes (an int, 0 or more)")
        self._url = url
        self._options = {"prefix": prefix, "ttl": ttl, "connect_timeout": connect_timeout,
                         "socket_timeout": socket_timeout, "claim_timeout": claim_timeout,
                         "buffer_bytes": buffer_bytes, "max_record_bytes": max_record_bytes}  # fmt: skip
        self.prefix = prefix
        self._ttl_ms = None if ttl is None else max(1, int(ttl * 1000))
        self._connect_timeout = float(connect_timeout)
        self._socket_timeout = float(socket_timeout)
        self.claim_timeout = float(claim_timeout)
        self.buffer_bytes = buffer_bytes
        self.max_record_bytes = max_record_bytes
        self._clients: LoopLocal[tuple[redis.asyncio.Redis, Any]] = LoopLocal(self._make_client, _close_client)
        self._closed = False
        # Outage state, shared by the store's clients on every loop.
        self._retry_at: float | None = None  # monotonic time of the next try while down; None: up
        self._down_since = 0.0
        self._failures = 0
        self._buffer: OrderedDict[str, bytes] = OrderedDict()  # writes kept while down (stored form)
        self._buffered_bytes = 0
        self._dropped = 0  # buffered writes dropped to keep the buffer bounded
        # The prompt records written or read lately (stored form). Samples that share their prompt's part cannot be
        # read without it, so a server that comes back (perhaps restarted empty) gets them again.
        self._prompts: OrderedDict[str, bytes] = OrderedDict()
        self._probing = False  # a task is trying the server (see _use)
        self._probes: set[asyncio.Task[bool]] = set()

    def __reduce__(self) -> tuple[Any, ...]:
        # A new store in the process that unpickles it (a worker of a pool or of Ray): connections and the
        # outage state belong to the process that made them.
        return (_rebuild, (self._url, self._options))

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ", down" if self._retry_at is not None else ""
        return f"RedisStore({self.location!r}, prefix={self.prefix!r}{state})"

    # -- clients, one per event loop ----------------------------------------------------------

    def _make_client(self) -> tuple[redis.asyncio.Redis, Any]:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = redis.asyncio.Redis.from_url(
            self._url,
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=self._socket_timeout,
            # The store has its own backoff for a server that went away: the client's retries would only
            # multiply the timeouts a dead server costs.
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        return client, client.register_script(_UNCLAIM)

    async def _client(self) -> tuple[redis.asyncio.Redis, Any]:
        if self._closed:
            raise ConfigurationError(f"cache store is closed (cache={self.location!r})")
        return await self._clients.get()

    async def _use(self) -> tuple[redis.asyncio.Redis, Any]:
        """The running loop's client, unless the server is known to be down (then :class:`_Down`).

        Past the retry time, a background task tries the server (and writes the buffer to one that
        answers), so that no caller waits for the timeouts of a server that is still down.
        """
        pair = await self._client()
        retry_at = self._retry_at
        if retry_at is None:
            return pair
        if time.monotonic() >= retry_at and not self._probing:
            self._probing = True
            task = asyncio.ensure_future(self._probe(pair[0]))
            self._probes.add(task)  # a strong reference: the loop keeps only weak ones
            task.add_done_callback(self._probes.discard)
        raise _Down

    async def _probe(self, client: redis.asyncio.Redis) -> bool:
        """Whether the server answers again (its buffer then written); never raises."""
        try:
            await client.ping()
            await self._came_back(client)
            return True
        except _Down:
            return False
        except Exception as exc:
            self._went_down(exc)
            return False
        finally:
            self._probing = False

    def _backoff(self) -> float:
        return float(min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** min(self._failures, 8)))

    def _is_outage(self, exc: BaseException) -> bool:
        from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

        # BusyLoadingError: a restarted server still loading its data.
        return isinstance(exc, (ConnectionError, TimeoutError, BusyLoadingError, OSError, asyncio.TimeoutError))

    def _went_down(self, exc: BaseException) -> None:
        first = self._retry_at is None
        if first:
            self._down_since = time.monotonic()
            self._failures = 0
            log.warning(
                "the Redis cache at %s cannot be reached (%s): reads are misses and writes are kept (up to %d MiB) "
                "until it answers again; retrying in the background",
                self.location,
                self._describe(exc),
                self.buffer_bytes // 2**20,
            )
        self._failures += 1
        self._retry_at = time.monotonic() + self._backoff()

    async def _came_back(self, client: redis.asyncio.Redis) -> None:
        """The server answers again: write what was kept meanwhile, then go on as before."""
        buffered, self._buffer = self._buffer, OrderedDict()
        dropped, self._dropped = self._dropped, 0
        self._buffered_bytes = 0
        prompts = [(key, value) for key, value in self._prompts.items() if key not in buffered]
        try:
            await self._write(client, prompts + list(buffered.items()))
        except Exception as exc:
            # Gone again before the buffer was written: keep it for the next try.
            for key, value in buffered.items():
                self._keep(key, value)
            self._dropped += dropped
            self._went_down(exc)
            raise _Down from None
        down_for = time.monotonic() - self._down_since
        self._retry_at = None
        self._failures = 0
        log.info(
            "the Redis cache at %s answers again after %.1f s: wrote the %d entr%s kept meanwhile%s",
            self.location,
            down_for,
            len(buffered),
            "y" if len(buffered) == 1 else "ies",
            f" ({dropped} more were dropped to keep the buffer under {self.buffer_bytes} bytes)" if dropped else "",
        )

    def _keep(self, key: str, value: bytes) -> None:
        """Buffer one write (stored form) while the server is down, dropping the oldest beyond the bound."""
        old = self._buffer.pop(key, None)
        if old is not None:
            self._buffered_bytes -= len(old)
        self._buffer[key] = value
        self._buffered_bytes += len(value)
        while self._buffered_bytes > self.buffer_bytes and self._buffer:
            _, dropped = self._buffer.popitem(last=False)
            self._buffered_bytes -= len(dropped)
            self._dropped += 1

    def _failure(self, what: str, exc: BaseException) -> ConfigurationError:
        return ConfigurationError(f"cannot {what} the Redis cache at {self.location}: {self._describe(exc)}")

    def _describe(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        text = text.replace(self._url, self.location)
        try:
            password = urllib.parse.urlsplit(self._url).password
        except ValueError:
            password = None
        if password:
            text = text.replace(password, REDACTED)
        return f"{type(exc).__name__}: {text}"

    # -- the protocol -----------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The record of each key, in order, or None where there is none (or it is not a readable value)."""
        if not keys:
            await self._client()
            return []
        try:
            client, _ = await self._use()
            async with client.pipeline(transaction=False) as pipe:
                for start in range(0, len(keys), _MGET_CHUNK):
                    pipe.mget([self.prefix + k for k in keys[start : start + _MGET_CHUNK]])
                chunks = await pipe.execute()
        except _Down:
            return [self._buffered(k) for k in keys]
        except Exception as exc:
            if not self._is_outage(exc):
                raise self._failure("read", exc) from None
            self._went_down(exc)
            return [self._buffered(k) for k in keys]
        limit = self.max_record_bytes
        values = [value for chunk in chunks for value in chunk]
        records = [_unpack(value, limit) for value in values]
        for key, value, record in zip(keys, values, records, strict=True):
            if record is not None and record.startswith(PROMPT_MAGIC):
                self._remember_prompt(key, value)  # this process's new samples may need it after a restart
        return records

    def _remember_prompt(self, key: str, stored: bytes) -> None:
        self._prompts.pop(key, None)
        self._prompts[key] = stored
        if len(self._prompts) > _PROMPTS_KEPT:
            self._prompts.popitem(last=False)

    def _buffered(self, key: str) -> bytes | None:
        value = self._buffer.get(key)
        return None if value is None else _unpack(value, self.max_record_bytes)

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(key, record)`` pairs in one MULTI/EXEC transaction; the last pair wins for a repeated key.

        While the server is down the pairs are kept (in a bounded buffer) and written when it answers.
        """
        latest: dict[str, bytes] = {}
        for key, value in items:
            if type(key) is not str or type(value) is not bytes:
                raise TypeError(f"a store entry is (str, bytes), not ({type(key).__name__}, {type(value).__name__})")
            latest[key] = value
        if not latest:
            await self._client()
            return
        packed = [(key, _pack(value)) for key, value in latest.items()]
        for (key, value), (_, stored) in zip(latest.items(), packed, strict=True):
            if value.startswith(PROMPT_MAGIC):
                self._remember_prompt(key, stored)
        try:
            client, _ = await self._use()
            await self._write(client, packed)
        except _Down:
            for key, value in packed:
                self._keep(key, value)
        except Exception as exc:
            if not self._is_outage(exc):
                raise self._failure("write to", exc) from None
            self._went_down(exc)
            for key, value in packed:
                self._keep(key, value)

    async def _write(self, client: redis.asyncio.Redis, packed: Sequence[tuple[str, bytes]]) -> None:
        prefix, ttl = self.prefix, self._ttl_ms
        if not packed:
            return
        async with client.pipeline(transaction=True) as pipe:
            if ttl is None:
                pipe.mset({prefix + key: value for key, value in packed})
            else:
                for key, value in packed:
                    pipe.set(prefix + key, value, px=ttl)
            await pipe.execute()

    async def stats(self) -> StoreStats:
        """The prefix's entries (a SCAN; claims not counted) and the bytes their values take."""
        client, _ = await self._client()
        entries = size = 0
        try:
            batch: list[bytes] = []
            async for name in client.scan_iter(match=self._pattern(""), count=_SCAN_COUNT):
                batch.append(name)
                if len(batch) >= _SCAN_COUNT:
                    entries, size = entries + len(batch), size + await _lengths(client, batch)
                    batch = []
            entries, size = entries + len(batch), size + await _lengths(client, batch)
        except Exception as exc:
            raise self._failure("count the entries of", exc) from None
        return StoreStats(entries=entries, size_bytes=size, location=self.location)

    def _pattern(self, kind: str) -> str:
        # Only keys of our shape (the prefix, then a SHA-256 in hex): another user of the database (a shared
        # budget, whose keys begin "fw_rollouts:budget:") is neither counted nor cleared.
        return _glob(self.prefix + kind) + "[0-9a-f]" * 64

    async def entries(self) -> AsyncIterator[tuple[str, bytes]]:
        """Every ``(key, record)`` the store holds (a SCAN, then MGETs; claims and unreadable values left out), in
        no particular order: what ``fw-rollouts cache export --cache-url`` reads. Nothing is written."""
        client, _ = await self._client()
        limit, cut = self.max_record_bytes, len(self.prefix.encode())

        async def read(names: list[bytes]) -> list[tuple[str, bytes]]:
            values = await client.mget(names)
            return [
                (name[cut:].decode("ascii"), record)
                for name, value in zip(names, values, strict=True)
                if isinstance(value, bytes) and (record := _unpack(value, limit)) is not None
            ]

        try:
            batch: list[bytes] = []
            async for name in client.scan_iter(match=self._pattern(""), count=_SCAN_COUNT):
                batch.append(name)
                if len(batch) >= _MGET_CHUNK:
                    for entry in await read(batch):
                        yield entry
                    batch = []
            for entry in await read(batch) if batch else []:
                yield entry
        except Exception as exc:
            raise self._failure("read the entries of", exc) from None

    async def clear(self) -> int:
        """Delete every entry (and claim) under the prefix; how many keys were deleted."""
        client, _ = await self._client()
        deleted = 0
        try:
            for kind in ("", "claim:"):
                batch: list[bytes] = []
                async for name in client.scan_iter(match=self._pattern(kind), count=_SCAN_COUNT):
                    batch.append(name)
                    if len(batch) >= _SCAN_COUNT:
                        deleted += await client.unlink(*batch)
                        batch = []
                if batch:
                    deleted += await client.unlink(*batch)
        except Exception as exc:
            raise self._failure("clear", exc) from None
        return deleted

    async def aclose(self) -> None:
        """Write what was kept while the server was down (if it answers now) and close this loop's client.

        Clients of other event loops close when their loops shut down. Idempotent.
        """
        if self._closed:
            return
        if self._buffer and not self._closed:
            try:  # one last try, now
                client, _ = await self._clients.get()
                written = await self._probe(client)
            except ConfigurationError:
                written = False
            if not written:
                log.info("%d cache entries kept while %s was down were not written", len(self._buffer), self.location)
        self._closed = True
        await self._clients.aclose()

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the in-flight claim ------------------------------------------------------------------------

    async def claim(self, keys: Sequence[str], owner: str) -> list[bool]:
        """Claim each key for ``owner`` (SET NX PX ``claim_timeout``): True where the claim is now the
        caller's, False where another holds it. While the server is down every claim is granted (no one
        can wait for a sample then: each fetches its own)."""
        if not keys:
            return []
        try:
            client, _ = await self._use()
        except _Down:
            return [True] * len(keys)
        claims = self.prefix + "claim:"
        px = max(1, int(self.claim_timeout * 1000))
        try:
            results: list[Any] = []
            for start in range(0, len(keys), _SET_CHUNK):
                async with client.pipeline(transaction=False) as pipe:
                    for key in keys[start : start + _SET_CHUNK]:
                        pipe.set(claims + key, owner, nx=True, px=px)
                    results.extend(await pipe.execute())
        except Exception as exc:
            if not self._is_outage(exc):
                raise self._failure("claim in", exc) from None
            self._went_down(exc)
            return [True] * len(keys)
        return [bool(r) for r in results]

    async def unclaim(self, keys: Sequence[str], owner: str) -> None:
        """Drop ``owner``'s claims of ``keys`` (a claim another holds now is left alone); never raises for an
        unreachable server (the claims expire by themselves)."""
        if not keys:
            return
        try:
            _, script = await self._use()
            claims = self.prefix + "claim:"
            for start in range(0, len(keys), _SET_CHUNK):
                await script(keys=[claims + k for k in keys[start : start + _SET_CHUNK]], args=[owner])
        except _Down:
            return
        except Exception as exc:
            if not self._is_outage(exc):
                raise self._failure("unclaim in", exc) from None
            self._went_down(exc)


def _rebuild(url: str, options: dict[str, Any]) -> RedisStore:
    return RedisStore(url, **options)


async def _close_client(pair: tuple[redis.asyncio.Redis, Any]) -> None:
    await pair[0].aclose()


async def _lengths(client: redis.asyncio.Redis, names: list[bytes]) -> int:
    if not names:
        return 0
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.strlen(name)
        return sum(int(n) for n in await pipe.execute())


def _glob(text: str) -> str:
    """``text`` with Redis glob characters escaped, for a MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
