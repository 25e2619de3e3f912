"""A rate budget shared by many processes through Redis: :class:`RedisBudget`.

Every process (on any machine) made with the same Redis and ``name`` shares one account of the
per-minute limits, kept by one Lua script so that each step is atomic and timed by Redis's own clock
(``TIME``: the machines' clocks do not matter). Redis keeps a log of reservations. A request, when it
may start, reserves what it may spend (its choices as requests; its prompt estimate and ``max_tokens``
per choice as tokens, or a running estimate when ``max_tokens`` is None, as
:class:`~fw_rollouts._ratelimit.Limiter` reserves them). While it is in flight its reservation counts
as long as its worker's lease lasts (renewed every few tenths of a second while the worker has requests
in flight), so a worker that dies leaks nothing for longer than the window or the lease (2 s), whichever
ends later. When the request is over, the reservation is settled to what the server reported (a failed
request keeps its request count and gives its tokens back) and counts for ``window + margin`` seconds
from then: the service saw the request before it replied, so it is counted at least a window after the
service counted it, however late it went out after admission (a first request's imports and
connection, a loaded machine, a server's queue). The price: each request holds its part of a limit for
the window plus its own latency, so long requests leave a little of a request limit unused (a 60 s
window and 2 s requests: about 96% of it is used). A 429/503 seen by one worker sets a cool-down in
Redis that every worker waits out. The service's own lower limits, read from ``x-ratelimit-*``
headers, are shared the same way. Every key carries a TTL: a namespace nobody uses disappears.

Per process, a concurrency window of ``max_concurrency`` (halved on an overload, widened on success,
as the Limiter's) and one Redis client per event loop. A request that does not fit sleeps (asyncio)
for as long as the script says it must, or less if this process gives room back meanwhile: no busy
loop.

When Redis cannot be reached (down, restarting), one warning is logged and the process falls back to
an in-process Limiter with the same limits until Redis answers again (probed every second), then goes
back to the shared budget. While N workers are on their own limiters they may together go over the
account's limits; the 429s that follow are retried like any other, so no sample is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._budget import Budget, Cost, Spent
from ._exceptions import InvalidTypeError, ValidationError
from ._loop_local import LoopLocal
from ._options import DEFAULT_MAX_CONCURRENCY
from ._ratelimit import METERS, GenerationEstimate, Limiter, read_ratelimit_headers
from ._redact import REDACTED, remember_secret

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SCHEMES", "RedisBudget", "parse_budget_url"]

log = logging.getLogger("fw_rollouts.ratelimit")

SCHEMES: Final = ("redis", "rediss", "unix")
"""URL schemes a Redis budget accepts (as ``redis.asyncio.from_url`` reads them)."""

_REQUESTS, _PROMPT, _UNCACHED, _GENERATED, _TOKENS = range(len(METERS))
_LIMIT_NAMES: Final = ("requests_per_minute", "prompt_tokens_per_minute", "generated_tokens_per_minute",
                       "tokens_per_minute")  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
_OURS: Final = ("name", "window", "margin")  # query parameters of the URL read here, not passed to redis
_DEFAULT_NAME = "default"
_MARGIN = 0.5  # as the Limiter's: the service counts a request a little after we let it start
_PROBE = 1.0  # seconds between pings while Redis is down
_CONNECT_TIMEOUT = 1.0
_TIMEOUT = 5.0
_CLOSE_TIMEOUT = 2.0  # seconds aclose waits for settles still on their way
_WALK = 512  # most reservations the script reads to find when a request fits (a later retry reads on)
_LEASE = 2.0  # seconds a worker's reservations in flight outlive its last word (it renews every third of it)
_KEY_SLACK = 10.0  # seconds a namespace's keys outlive their last reservation
_MIN_WAIT = 1e-3
_NO_COST = Cost(0, 0, 1)  # what the local window limiter is asked for: a place, no rate

# One script for every operation, so each is atomic and sees one clock (Redis's TIME, seconds).
# KEYS: the log (sorted set: "<id> <5 amounts>" by admission time), the reservations (hash: id -> log member),
# the state (hash: "cool" = time the cool-down ends, t1..t5 = what the log holds, s1..s5 = the service's limits).
# ARGV: op, span (s), key ttl (ms), then per op. Floats come back as strings (Redis truncates Lua numbers).
_SCRIPT: Final = """
local op = ARGV[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local span = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local M = 5
local LOG, RES, STATE, OPEN, LEASES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function amounts(member)
  local out, i = {}, 0
  for word in string.gmatch(member, '%S+') do
    if i > 0 then out[i] = tonumber(word) end
    i = i + 1
  end
  return out
end

local function totals()
  local v = redis.call('HMGET', STATE, 't1', 't2', 't3', 't4', 't5')
  local out = {}
  for m = 1, M do out[m] = tonumber(v[m]) or 0 end
  return out
end

local function save(tot)
  redis.call('HSET', STATE, 't1', tot[1], 't2', tot[2], 't3', tot[3], 't4', tot[4], 't5', tot[5])
end

local function keep(extra_ms)
  redis.call('PEXPIRE', LOG, ttl)
  redis.call('PEXPIRE', OPEN, ttl)
  redis.call('PEXPIRE', LEASES, ttl)
  redis.call('PEXPIRE', RES, ttl)
  redis.call('PEXPIRE', STATE, math.max(ttl, extra_ms))
end

local function cool_left()
  return (tonumber(redis.call('HGET', STATE, 'cool')) or 0) - now
end

local function drop(key, before, tot)
  local old = redis.call('ZRANGEBYSCORE', key, '-inf', before)
  if #old == 0 then return false end
  for _, member in ipairs(old) do
    local a = amounts(member)
    for m = 1, M do tot[m] = tot[m] - a[m] end
    redis.call('HDEL', RES, string.match(member, '^%S+'))
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', before)
  return true
end

local function owner(member)
  return string.match(member, '^([^- ]+)')
end

-- Open reservations (in flight) count while their worker's lease lasts, and at least span after admission.
local function drop_open(tot)
  local old = redis.call('ZRANGEBYSCORE', OPEN, '-inf', now - span)
  local dropped = false
  for _, member in ipairs(old) do
    if (tonumber(redis.call('HGET', LEASES, owner(member))) or 0) <= now then
      local a = amounts(member)
      for m = 1, M do tot[m] = tot[m] - a[m] end
      redis.call('HDEL', RES, string.match(member, '^%S+'))
      redis.call('ZREM', OPEN, member)
      dropped = true
    end
  end
  return dropped
end

-- Settled reservations count for span after their reply.
local function expire(tot)
  local a = drop(LOG, now - span, tot)
  local b = drop_open(tot)
  if (a or b) and redis.call('ZCARD', LOG) + redis.call('ZCARD', OPEN) == 0 then
    for m = 1, M do tot[m] = 0 end
  end
  return a or b
end

if op == 'acquire' then
  -- ARGV[5] id, ARGV[6..10] our limits (0: none), ARGV[11..15] the reservation, ARGV[16] most entries to read
  local left = cool_left()
  if left > 0 then return {0, tostring(left), 'cool'} end
  local tot = totals()
  local changed = expire(tot)
  local service = redis.call('HMGET', STATE, 's1', 's2', 's3', 's4', 's5')
  local limit, want = {}, {}
  for m = 1, M do
    local ours, theirs = tonumber(ARGV[5 + m]), tonumber(service[m])
    if ours ~= nil and ours <= 0 then ours = nil end
    if ours and theirs then limit[m] = math.min(ours, theirs) else limit[m] = ours or theirs end
    want[m] = tonumber(ARGV[10 + m])
  end
  -- A request larger than a whole limit goes when nothing else is counted, rather than never.
  local function fits(t)
    for m = 1, M do
      if limit[m] and want[m] > 0 and t[m] > 0 and t[m] + want[m] > limit[m] then return false end
    end
    return true
  end
  redis.call('HSET', LEASES, owner(ARGV[5]), tostring(now + lease))
  if fits(tot) then
    local id = ARGV[5]
    local member = id .. ' ' .. table.concat({ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15]}, ' ')
    redis.call('ZADD', OPEN, now, member)
    redis.call('HSET', RES, id, member)
    for m = 1, M do tot[m] = tot[m] + want[m] end
    save(tot)
    keep(0)
    return {1, tostring(now), 'ok'}
  end
  if changed then save(tot) end
  -- When enough of the reservations will have expired for this one to fit (settled or not, soonest first).
  local n = tonumber(ARGV[16])
  local due = {}
  local settled = redis.call('ZRANGE', LOG, 0, n - 1, 'WITHSCORES')
  for i = 1, #settled, 2 do due[#due + 1] = {tonumber(settled[i + 1]) + span, settled[i]} end
  local open = redis.call('ZRANGE', OPEN, 0, n - 1, 'WITHSCORES')
  for i = 1, #open, 2 do due[#due + 1] = {tonumber(open[i + 1]) + span, open[i]} end
  table.sort(due, function(x, y) return x[1] < y[1] end)
  local at = now + span
  for _, entry in ipairs(due) do
    local a = amounts(entry[2])
    for m = 1, M do tot[m] = tot[m] - a[m] end
    at = entry[1]
    if fits(tot) then break end
  end
  return {0, tostring(math.max(at - now, 0)), 'full'}
elseif op == 'settle' then
  -- ARGV[5] id, ARGV[6..10] what it used (or '' to keep), ARGV[11..15] the service's limits ('' : not said),
  -- The request reached the service before its reply came: counted from now, it counts a window after it
  -- arrived however late it went out after admission (a first request's connection, a loaded machine).
  local id = ARGV[5]
  local member = redis.call('HGET', RES, id)
  local score = member and tonumber(redis.call('ZSCORE', OPEN, member))
  if score then
    local new = member
    if ARGV[6] ~= '' then
      local old, tot = amounts(member), totals()
      new = id .. ' ' .. table.concat({ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]}, ' ')
      for m = 1, M do tot[m] = tot[m] + tonumber(ARGV[5 + m]) - old[m] end
      save(tot)
    end
    redis.call('ZREM', OPEN, member)
    redis.call('ZADD', LOG, now, new)
    redis.call('HSET', RES, id, new)
  end
  for m = 1, M do
    if ARGV[10 + m] ~= '' then redis.call('HSET', STATE, 's' .. m, ARGV[10 + m]) end
  end
  keep(math.max(cool_left(), 0) * 1000 + 1000)
  return {1, tostring(now), 'ok'}
elseif op == 'lease' then
  -- ARGV[5] the worker: its open reservations are in flight for lease seconds more
  redis.call('HSET', LEASES, ARGV[5], tostring(now + lease))
  keep(0)
  return {1, tostring(now), 'ok'}
elseif op == 'cool' then
  -- ARGV[5] seconds nobody starts a request for
  local until_ = now + tonumber(ARGV[5])
  local cool = tonumber(redis.call('HGET', STATE, 'cool')) or 0
  if until_ > cool then redis.call('HSET', STATE, 'cool', tostring(until_)) end
  keep(math.max(until_, cool) * 1000 - now * 1000 + 1000)
  return {1, tostring(now), 'ok'}
elseif op == 'used' then
  local tot = totals()
  if expire(tot) then save(tot) end
  local out = {}
  for m = 1, M do out[m] = tostring(tot[m]) end
  out[M + 1] = tostring(math.max(cool_left(), 0))
  return out
end
return redis.error_reply('unknown op ' .. tostring(op))
"""


# -- the URL -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetURL:
    """A budget URL read: what redis is given, what may be shown, and the options it carried."""

    connect: str
    """The URL for ``redis.asyncio.from_url`` (password included, our own query parameters removed)."""
    location: str
    """The URL with any password replaced: the only form ever shown."""
    password: str | None
    name: str | None
    window: float | None
    margin: float | None


def _redacted(url: str) -> str:
    """``url`` with the password of its user part replaced (best effort for any string)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def parse_budget_url(url: object, argument: str = "budget", *, also: str = "") -> BudgetURL:
    """Read a Redis budget URL (``redis://[[user]:password@]host[:port][/db][?name=...&window=...]``).

    Raises :class:`ValidationError` naming ``argument`` for anything else (the password never shown).
    """
    allowed = "a Redis URL: redis://[[user]:password@]host[:port][/db][?name=...], rediss://... or unix://..." + also
    if not isinstance(url, str):
        raise InvalidTypeError(argument, type(url).__name__, allowed)
    shown = _redacted(url)
    try:
        parts = urlsplit(url)
        password = parts.password
        parts.port  # noqa: B018 -- reading it checks it
    except ValueError:
        raise ValidationError(argument, shown, allowed) from None
    if parts.scheme not in SCHEMES or (parts.scheme != "unix" and not parts.hostname):
        raise ValidationError(argument, shown, allowed)
    if parts.scheme != "unix":
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValidationError(argument, shown, allowed + " (the database is a number)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {key: value for key, value in query if key in _OURS}
    rest = [(key, value) for key, value in query if key not in _OURS]
    window = margin = None
    if "window" in ours:
        window = _seconds(ours["window"], f"{argument} (window=)", shown)
    if "margin" in ours:
        margin = _seconds(ours["margin"], f"{argument} (margin=)", shown, zero=True)
    return BudgetURL(
        connect=urlunsplit(parts._replace(query=urlencode(rest))),
        location=_redacted(urlunsplit(parts._replace(query=urlencode(query)))),
        password=password,
        name=ours.get("name"),
        window=window,
        margin=margin,
    )


def _seconds(text: str, argument: str, shown: str, *, zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValidationError(argument, shown, f"a number of seconds {'>= 0' if zero else '> 0'}, not {text!r}")
    return value


def _check_limit(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(name, value, "a number > 0, or None for no limit")
    if not (math.isfinite(value) and value > 0):
        raise ValidationError(name, value, "a number > 0, or None for no limit")
    return float(value)


# -- tickets ----------------------------------------------------------------------------------------------


class _Reservation:
    """A request admitted by the shared budget: its id in Redis and what it reserved."""

    __slots__ = ("amounts", "id", "local", "released", "state")

    def __init__(self, state: _LoopState, rid: str, amounts: list[int], local: object) -> None:
        self.state = state
        self.id = rid
        self.amounts = amounts
        self.local = local
        self.released = False


class _OnItsOwn:
    """A request admitted by the in-process fallback while Redis was unreachable."""

    __slots__ = ("inner", "local", "released", "state")

    def __init__(self, state: _LoopState, inner: object, local: object) -> None:
        self.state = state
        self.inner = inner
        self.local = local
        self.released = False


# -- one event loop's part ------------------------------------------------------------------------------


def _unavailable() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)


class _LoopState:
    """What a :class:`RedisBudget` holds on one event loop: the Redis client, the window, the fallback."""

    def __init__(self, budget: RedisBudget) -> None:
        from redis.asyncio import from_url
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.budget_repr = budget.location
        self._password = budget._url.password
        self._limits = budget._limits_list
        self._keys = budget._keys
        self._span = budget.window + budget.margin
        self.open = 0  # reservations of this loop admitted and not settled yet
        self._renewer: asyncio.Task[None] | None = None
        self._ttl = int((self._span + _LEASE + _KEY_SLACK) * 1000)
        # The longest sleep before asking again: another worker's settle may give tokens back sooner than the
        # script could know (a request limit's wait is exact).
        self._poll = min(1.0, max(0.25, budget.window / 60))
        # One retry without delay: the first command after a restart finds its pooled connection dead.
        self.client: Redis = from_url(
            budget._url.connect,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_timeout=_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        self.script = self.client.register_script(_SCRIPT)
        self.local = Limiter(max_concurrency=budget.max_concurrency)
        # The Limiter counts per minute: a limit per shorter window is that many times more per minute.
        per_minute = 60.0 / budget.window
        self._limiter_args: dict[str, Any] = {
            "max_concurrency": budget.max_concurrency,
            **{name: None if (v := getattr(budget, name)) is None else v * per_minute for name in _LIMIT_NAMES},
        }
        self.fallback: Limiter | None = None
        self.down = False
        self.warnings = 0
        self._probe: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self._queue = asyncio.Lock()
        self._wake: asyncio.Future[None] | None = None
        self._estimate = GenerationEstimate()
        self._told: list[str] = [""] * len(METERS)  # the service limits last written to Redis
        self._ids = count()
        self._prefix = os.urandom(6).hex()
        self.unavailable = _unavailable()

    # -- accounting --------------------------------------------------------

    def amounts(self, cost: Cost) -> list[int]:
        choices = max(cost.choices, 1)
        prompt = max(cost.prompt_tokens, 0) * choices
        per_choice = max(cost.max_tokens, 0) if cost.max_tokens is not None else self._estimate.expected()
        generated = per_choice * choices
        return [choices, prompt, prompt, generated, prompt + generated]

    async def _call(self, op: str, *args: str | int | float) -> Any:
        return await self.script(keys=self._keys, args=[op, repr(self._span), self._ttl, _LEASE, *args])

    async def admit(self, amounts: list[int]) -> str:
        """Wait until the shared budget admits ``amounts``; the reservation's id."""
        rid = f"{self._prefix}-{next(self._ids)}"
        limits = [0.0 if limit is None else limit for limit in self._limits]
        async with self._queue:  # first come, first served in this process: only the head asks Redis
            while True:
                ok, value, _why = await self._call("acquire", rid, *limits, *amounts, _WALK)
                if int(ok):
                    self.open += 1
                    if self._renewer is None or self._renewer.done():
                        self._renewer = asyncio.get_running_loop().create_task(self._renew())
                    return rid
                await self._sleep_or_wake(max(min(float(value), self._poll), _MIN_WAIT))

    async def _renew(self) -> None:
        """Renew this worker's lease while it has requests in flight: a worker that dies stops, and its
        reservations expire a lease later (or a window after admission, whichever is later)."""
        while self.open > 0:
            await asyncio.sleep(_LEASE / 3)
            if self.down or self.open <= 0:
                continue
            try:
                await self._call("lease", self._prefix)
            except self.unavailable as exc:
                self.went_down(exc)

    async def _sleep_or_wake(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wake = wake
        handle = asyncio.get_running_loop().call_later(seconds, lambda: None if wake.done() else wake.set_result(None))
        try:
            await wake
        finally:
            self._wake = None
            handle.cancel()

    def room_changed(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def settle(self, ticket: _Reservation, spent: Spent | None, headers: Mapping[str, str] | None) -> bool:
        """Send the reservation's settling (and any new service limit) to Redis; whether the reply said over-limit."""
        self.open -= 1
        used: list[str] = [""] * len(METERS)
        if spent is None:
            actual = [ticket.amounts[_REQUESTS], 0, 0, 0, 0]
        elif spent.prompt_tokens or spent.completion_tokens:
            self._estimate.learn(spent)
            prompt = max(spent.prompt_tokens, 0)
            uncached = max(prompt - max(spent.cached_tokens, 0), 0)
            generated = max(spent.completion_tokens, 0)
            actual = [ticket.amounts[_REQUESTS], prompt, uncached, generated, prompt + generated]
        else:
            actual = ticket.amounts  # no usage reported: the reservation is the best count there is
        if actual != ticket.amounts:
            used = [str(a) for a in actual]
        service: list[str] = [""] * len(METERS)
        over_limit = False
        said = read_ratelimit_headers(headers) if headers else None
        if said is not None:
            over_limit = bool(said.over_limit)
            for m, limit in enumerate(said.limits):
                if limit is not None and (text := repr(float(limit))) != self._told[m]:
                    self._told[m] = service[m] = text
        self.spawn(self._settle(ticket.id, used, service, gives_back=any(used)))
        return over_limit

    async def _settle(self, rid: str, used: list[str], service: list[str], *, gives_back: bool) -> None:
        if self.down:
            return  # the reservation expires on its own; the limits are read again from the next reply
        try:
            await self._call("settle", rid, *used, *service)
        except self.unavailable as exc:
            self.went_down(exc)
            return
        if gives_back:
            self.room_changed()

    def cool(self, seconds: float) -> None:
        if not self.down:
            self.spawn(self._cool(seconds))

    async def _cool(self, seconds: float) -> None:
        try:
            await self._call("cool", repr(float(seconds)))
        except self.unavailable as exc:
            self.went_down(exc)

    def spawn(self, work: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # no running loop (released outside it): the reservation expires on its own
            work.close()
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- Redis down and back ---------------------------------------------------

    def on_its_own(self) -> Limiter:
        if self.fallback is None:
            self.fallback = Limiter(**self._limiter_args)
        return self.fallback

    def scrub(self, text: str) -> str:
        password = self._password
        return text.replace(password, REDACTED) if password else text

    def went_down(self, exc: BaseException) -> None:
        if self.down:
            return
        self.down = True
        self.warnings += 1
        log.warning(
            "the shared rate budget at %s is unreachable (%s: %s): this process keeps the limits on its own "
            "until Redis answers again (workers together may go over them meanwhile; their 429s are retried)",
            self.budget_repr, type(exc).__name__, self.scrub(str(exc)),
        )  # fmt: skip
        if self._probe is None or self._probe.done():
            with contextlib.suppress(RuntimeError):  # no running loop: the next acquire finds Redis down and probes
                self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis())
        self.room_changed()

    async def _wait_for_redis(self) -> None:
        while self.down:
            await asyncio.sleep(_PROBE)
            try:
                await self.client.ping()
            except self.unavailable:
                continue
            self.down = False
            log.info("the shared rate budget at %s answers again: back to sharing it", self.budget_repr)

    async def aclose(self) -> None:
        for task in (self._probe, self._renewer):
            if task is not None:
                task.cancel()
        if self.tasks:
            # Settles still on their way give tokens back to the others: worth a moment.
            await asyncio.wait(list(self.tasks), timeout=_CLOSE_TIMEOUT)
            for task in list(self.tasks):
                task.cancel()
        try:
            await self.client.aclose()
        except Exception:  # closing must not mask the error that led here
            log.debug("error closing the Redis client of %s", self.budget_repr, exc_info=True)


async def _close_state(state: _LoopState) -> None:
    await state.aclose()


# -- the budget ----------------------------------------------------------------------------------------------


class RedisBudget:
    """A :class:`~fw_rollouts.Budget` shared through Redis by every process with the same URL and ``name``.

    ``requests_per_minute``, ``tokens_per_minute``, ``prompt_tokens_per_minute`` and
    ``generated_tokens_per_minute`` are the limits all of them together keep (per ``window`` seconds:
    the service's minute; shorter only for tests); ``max_concurrency`` is this process's own window of
    requests in flight. ``name`` (or ``?name=`` in the URL) is the namespace; ``window`` and ``margin``
    may be given in the URL too (``?window=5``). The URL's password is never shown (``location`` and
    ``repr`` replace it). See the module docstring for how the budget is kept, and for the fallback
    to an in-process limiter while Redis is unreachable (the N workers may then go over the limits:
    their 429s are retried). Usable on several event loops (one Redis client each); ``aclose`` closes
    the running loop's, the others close when their loops shut down.

    ``AsyncFireworks(budget="redis://host:6379/0")`` makes one with the client's own limits and
    ``max_concurrency``, and closes it with the client.
    """

    def __init__(
        self,
        url: str,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        prompt_tokens_per_minute: float | None = None,
        generated_tokens_per_minute: float | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        name: str | None = None,
        window: float | None = None,
        margin: float | None = None,
    ) -> None:
        parsed = parse_budget_url(url, "url")
        remember_secret(parsed.password)  # the log filter scrubs it from any record, whoever logs it
        self._url = parsed
        self.requests_per_minute = _check_limit("requests_per_minute", requests_per_minute)
        self.tokens_per_minute = _check_limit("tokens_per_minute", tokens_per_minute)
        self.prompt_tokens_per_minute = _check_limit("prompt_tokens_per_minute", prompt_tokens_per_minute)
        self.generated_tokens_per_minute = _check_limit("generated_tokens_per_minute", generated_tokens_per_minute)
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise InvalidTypeError("max_concurrency", max_concurrency, "an integer >= 1")
        if max_concurrency < 1:
            raise ValidationError("max_concurrency", max_concurrency, "an integer >= 1")
        self.max_concurrency = max_concurrency
        chosen = name if name is not None else parsed.name if parsed.name is not None else _DEFAULT_NAME
        if not isinstance(chosen, str) or not _NAME.fullmatch(chosen):
            raise ValidationError("name", chosen, "1 to 128 characters of letters, digits and _ . : / -")
        self.name = chosen
        self.window = self._seconds("window", window, parsed.window, 60.0, zero=False)
        self.margin = self._seconds("margin", margin, parsed.margin, _MARGIN, zero=True)
        limits: list[float | None] = [None] * len(METERS)
        limits[_REQUESTS], limits[_TOKENS] = self.requests_per_minute, self.tokens_per_minute
        limits[_PROMPT], limits[_GENERATED] = self.prompt_tokens_per_minute, self.generated_tokens_per_minute
        self._limits_list = tuple(limits)
        # One hash tag: a cluster keeps the keys in one slot, as a multi-key script needs.
        prefix = f"fw_rollouts:budget:{{{chosen}}}"
        self._keys = tuple(f"{prefix}:{key}" for key in ("log", "reservations", "state", "open", "leases"))
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._states: LoopLocal[_LoopState] = LoopLocal(self._make_state, _close_state)

    @staticmethod
    def _seconds(argument: str, given: object, in_url: float | None, default: float, *, zero: bool) -> float:
        if given is None:
            return default if in_url is None else in_url
        if isinstance(given, bool) or not isinstance(given, (int, float)):
            raise InvalidTypeError(argument, given, "a number of seconds")
        if not math.isfinite(given) or given < 0 or (given == 0 and not zero):
            raise ValidationError(argument, given, f"a number of seconds {'>= 0' if zero else '> 0'}")
        return float(given)

    def _make_state(self) -> _LoopState:
        state = _LoopState(self)
        self._by_loop[asyncio.get_running_loop()] = state
        return state

    def _state(self) -> _LoopState | None:
        try:
            return self._by_loop.get(asyncio.get_running_loop())
        except RuntimeError:
            return None

    @property
    def location(self) -> str:
        """The Redis URL, its password replaced: safe to show."""
        return self._url.location

    # -- the protocol ---------------------------------------------------------

    async def acquire(self, cost: Cost) -> object:
        """Wait for a place in this process's window, the end of any shared cool-down, and room in the shared
        budget (or, while Redis is unreachable, in the fallback limiter's); return the ticket."""
        state = await self._states.get()
        local = await state.local.acquire(_NO_COST)
        try:
            if not state.down:
                amounts = state.amounts(cost)
                try:
                    return _Reservation(state, await state.admit(amounts), amounts, local)
                except state.unavailable as exc:
                    state.went_down(exc)
            return _OnItsOwn(state, await state.on_its_own().acquire(cost), local)
        except BaseException:
            state.local.release(local)
            raise

    def release(self, ticket: object, spent: Spent | None = None, headers: Mapping[str, str] | None = None) -> None:
        """The request is over (once per :meth:`acquire`): settle its reservation in Redis (sent on its own task),
        and give back its place in the window. Never raises."""
        if not isinstance(ticket, (_Reservation, _OnItsOwn)) or ticket.released:
            return
        ticket.released = True
        state = ticket.state
        over_limit = False
        try:
            if isinstance(ticket, _Reservation):
                over_limit = state.settle(ticket, spent, headers)
            elif state.fallback is not None:
                state.fallback.release(ticket.inner, spent, headers)
        except Exception:  # a bug here must not leak a place in the window
            log.exception("the shared budget could not settle a request")
        finally:
            # The window limiter has no limits to read: only over-limit narrows it, as it does the Limiter's.
            state.local.release(ticket.local, spent, {"x-ratelimit-over-limit": "yes"} if over_limit else None)

    def overloaded(self, seconds: float) -> None:
        """The service said 429/503: no worker sharing this budget starts a request for ``seconds`` (and this
        process's window narrows)."""
        state = self._state()
        if state is None:
            return
        state.local.overloaded(seconds)
        if state.fallback is not None:
            state.fallback.overloaded(seconds)
        state.cool(seconds)

    async def aclose(self) -> None:
        """Wait briefly for settles on their way and close the running loop's Redis client; not used afterwards."""
        await self._states.aclose()

    # -- looking in ----------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Whether this loop's requests are admitted by Redis now (False while on the fallback limiter)."""
        state = self._state()
        return state is None or not state.down

    async def used(self) -> dict[str, float]:
        """What the shared log holds now (by :data:`~fw_rollouts._ratelimit.METERS` name), and ``cooling_down``:
        seconds left of the shared cool-down. Raises the Redis error when Redis is unreachable."""
        state = await self._states.get()
        values = await state._call("used")
        out = {name: float(value) for name, value in zip(METERS, values, strict=False)}
        out["cooling_down"] = float(values[len(METERS)])
        return out

    def __repr__(self) -> str:
        given = ((name, getattr(self, name)) for name in _LIMIT_NAMES)
        limits = ", ".join(f"{name}={value:g}" for name, value in given if value is not None)
        state = self._state()
        mode = "" if state is None else ", on its own: Redis unreachable" if state.down else ", shared"
        return (
            f"<RedisBudget({self.location!r}, name={self.name!r}, window={self.window:g}, margin={self.margin:g}, "
            f"max_concurrency={self.max_concurrency}{', ' if limits else ''}{limits}){mode}>"
        )


if TYPE_CHECKING:

    def _redis_budget_is_a_budget(budget: RedisBudget) -> Budget:
        return budget  # mypy checks here that RedisBudget satisfies the protocol
