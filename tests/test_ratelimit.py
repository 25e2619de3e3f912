"""The limiter on its own, on virtual time: the window and its AIMD, the cool-down, the aiolimiter buckets that keep
every rolling minute under its limit, with reservations settled from usage, the service's x-ratelimit-* headers,
cancellation."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
from aiolimiter import AsyncLimiter

from fw_rollouts._bucket import Bucket as _Bucket
from fw_rollouts._budget import Budget, Cost, Spent
from fw_rollouts._clock import SYSTEM_CLOCK, Clock, SystemClock
from fw_rollouts._ratelimit import (
    _MARGIN,
    METERS,
    PERIOD,
    WINDOW,
    Limiter,
    ServiceLimits,
    read_ratelimit_headers,
)

T = TypeVar("T")

START = 1000.0
"""Virtual time starts here, far from the event loop's own clock: a reading of the wrong clock shows."""

_SETTLE = 20
"""Loop turns that let every runnable task run until it waits (our hand-offs take a few turns at most)."""
_HORIZON = 1000.0
"""Virtual seconds after which a test has run away (a bucket that never drips, say): fail, do not hang."""


class VirtualClock:
    """A Clock on virtual time: sleepers wake in order of their deadlines, and time jumps to the next
    deadline only once every task is waiting, so nothing ever waits for real time. ``sleep(0)`` thus
    returns once every other task waits."""

    def __init__(self, start: float = START) -> None:
        self._now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._now + max(0.0, seconds), next(self._order), wake))
        await wake

    def _wake_next(self) -> bool:
        while self._timers:
            deadline, _, wake = heapq.heappop(self._timers)
            if not wake.done():  # a cancelled sleeper
                self._now = max(self._now, deadline)
                wake.set_result(None)
                return True
        return False

    async def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main``, moving time on whenever every task waits; fail (never hang) if nothing could move."""
        task = asyncio.ensure_future(main)
        while True:
            for _ in range(_SETTLE):
                await asyncio.sleep(0)
                if task.done():
                    return task.result()
            if not self._wake_next():
                task.cancel()
                raise AssertionError("deadlock: every task waits and no timer is due")
            if self._now > START + _HORIZON:
                task.cancel()
                raise AssertionError(f"still waiting after {_HORIZON} virtual seconds")


def run(main: Callable[[VirtualClock], Coroutine[Any, Any, T]]) -> T:
    clock = VirtualClock()
    return asyncio.run(clock.run(main(clock)))


async def start_times(limiter: Limiter, clock: VirtualClock, costs: list[Cost]) -> list[float]:
    """Acquire each cost in turn and release it having spent exactly what it reserved; when (relative to
    START) each one was let in."""
    times = []
    for cost in costs:
        ticket = await limiter.acquire(cost)
        times.append(clock.now() - START)
        limiter.release(ticket, reserved(cost))
    return times


def reserved(cost: Cost) -> Spent:
    """What a request of ``cost`` spent when it used all it may."""
    return spent(cost.prompt_tokens * cost.choices, (cost.max_tokens or 0) * cost.choices, cost.choices)


def spent(prompt: int = 1, completion: int = 1, choices: int = 1, cached: int = 0) -> Spent:
    return Spent(prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion, choices=choices)


ONE = Cost(1, 1)


async def succeed(limiter: Limiter, cost: Cost = ONE, used: Spent | None = None, **headers: str) -> None:
    """One request that went through and used ``used`` (by default what it reserved, at most one token each)."""
    ticket = await limiter.acquire(cost)
    limiter.release(ticket, used or spent(), {k.replace("_", "-"): v for k, v in headers.items()})


async def hold(limiter: Limiter, entered: list[int], release: asyncio.Event, ident: int) -> None:
    ticket = await limiter.acquire(Cost(1, 1))
    try:
        entered.append(ident)
        await release.wait()
    finally:
        limiter.release(ticket)


# -- the protocols ----------------------------------------------------------------


def test_the_limiter_is_a_budget_and_the_clocks_are_clocks() -> None:
    assert isinstance(Limiter(max_concurrency=1), Budget)
    assert isinstance(SystemClock(), Clock)
    assert isinstance(SYSTEM_CLOCK, SystemClock) and repr(SYSTEM_CLOCK) == "SystemClock()"
    assert isinstance(VirtualClock(), Clock)
    assert not isinstance(object(), Budget)


def test_the_system_clock_is_monotonic_and_sleeps_on_the_loop() -> None:
    async def main() -> None:
        before = SYSTEM_CLOCK.now()
        await SYSTEM_CLOCK.sleep(0)
        assert SYSTEM_CLOCK.now() >= before

    asyncio.run(main())


def test_a_window_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        Limiter(max_concurrency=0)


def test_repr_shows_the_limits_and_the_state() -> None:
    async def main(clock: VirtualClock) -> str:
        limiter = Limiter(max_concurrency=4, tokens_per_minute=1000, clock=clock)
        await succeed(limiter, Cost(10, None), spent(10, 7))
        limiter.release(await limiter.acquire(Cost(1, 1)), spent(), {"x-ratelimit-limit-requests": "600"})
        await limiter.acquire(Cost(10, 10))
        limiter.overloaded(1.5)
        return repr(limiter)

    assert run(main) == (
        "<Limiter(max_concurrency=4, requests_per_minute=None, tokens_per_minute=1000, "
        "prompt_tokens_per_minute=None, generated_tokens_per_minute=None) [window: 2, in flight: 1, waiting: 0, "
        "cooling down: 1.50s, limits in force: requests=600, tokens=1000, expected completion: 5.8 tokens]>"
    )


# -- the window -------------------------------------------------------------------


def test_window_admits_at_most_max_concurrency_first_come_first_served() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=2, clock=clock)
        entered: list[int] = []
        release = asyncio.Event()
        tasks = [asyncio.create_task(hold(limiter, entered, release, i)) for i in range(5)]
        await clock.sleep(0)
        assert entered == [0, 1] and limiter._in_flight == 2 and len(limiter._waiters) == 3
        release.set()
        await asyncio.gather(*tasks)
        assert entered == [0, 1, 2, 3, 4]
        assert limiter._in_flight == 0 and not limiter._waiters

    run(main)


def test_cancelled_waiters_do_not_leak_places() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=1, clock=clock)
        entered: list[int] = []
        release = asyncio.Event()
        holder = asyncio.create_task(hold(limiter, entered, release, 0))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(hold(limiter, entered, release, 1))
        await asyncio.sleep(0)
        waiter.cancel()
        # Hand the place over in the same tick as another cancellation: it must be passed on, not lost.
        late = asyncio.create_task(hold(limiter, entered, release, 2))
        await asyncio.sleep(0)
        release.set()
        await holder
        late_waiter = asyncio.create_task(hold(limiter, entered, asyncio.Event(), 3))
        await asyncio.sleep(0)
        late_waiter.cancel()
        await asyncio.gather(waiter, late, late_waiter, return_exceptions=True)
        assert entered[:2] == [0, 2]
        # Everyone is gone: the full window is free again.
        assert limiter._in_flight == 0 and not limiter._waiters
        again: list[int] = []
        done = asyncio.Event()
        done.set()
        await hold(limiter, again, done, 9)
        assert again == [9] and limiter._in_flight == 0

    run(main)


def test_a_place_handed_over_to_a_cancelled_waiter_is_passed_on() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=1, clock=clock)
        ticket = await limiter.acquire(Cost(1, 1))
        first = asyncio.create_task(limiter.acquire(Cost(1, 1)))
        second = asyncio.create_task(limiter.acquire(Cost(1, 1)))
        await clock.sleep(0)
        limiter.release(ticket)  # hands the place to `first`, which is cancelled before it runs
        first.cancel()
        await clock.sleep(0)
        assert first.cancelled() and second.done() and limiter._in_flight == 1
        limiter.release(second.result())
        assert limiter._in_flight == 0

    run(main)


def test_overload_halves_the_window_once_per_cool_down_and_success_widens_it() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=16, clock=clock)
        for _ in range(10):  # a whole wave of 429s during one cool-down
            limiter.overloaded(2.0)
        assert limiter.window == 8 and limiter.cooling_down_for == pytest.approx(2.0)
        await clock.sleep(2.0)
        assert limiter.cooling_down_for == 0.0
        limiter.overloaded(1.0)  # a new cool-down: halve again
        assert limiter.window == 4
        for _ in range(3):
            await succeed(limiter)
        assert limiter.window == 7  # one wider per success
        for _ in range(100):
            await succeed(limiter)
        assert limiter.window == 16  # never above max_concurrency
        for _ in range(10):
            await clock.sleep(5.0)
            limiter.overloaded(1.0)
        assert limiter.window == 1  # never below one

    run(main)


def test_a_success_lets_a_waiter_into_the_wider_window() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=2, clock=clock)
        limiter.overloaded(1.0)  # window 1
        await clock.sleep(1.0)
        ticket = await limiter.acquire(Cost(1, 1))
        waiters = [asyncio.create_task(limiter.acquire(Cost(1, 1))) for _ in range(2)]
        await clock.sleep(0)
        assert not any(w.done() for w in waiters)
        limiter.release(ticket, spent())  # window 2: both waiters are let in, not only the one a place freed
        await clock.sleep(0)
        assert all(w.done() for w in waiters) and limiter._in_flight == 2
        for w in waiters:
            limiter.release(w.result())
        assert limiter.window == 2  # failures do not widen it

    run(main)


# -- the cool-down ----------------------------------------------------------------


def test_the_cool_down_holds_every_waiter_and_a_later_overload_extends_it() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=8, clock=clock)
        limiter.overloaded(3.0)
        started: list[float] = []

        async def request() -> None:
            ticket = await limiter.acquire(Cost(1, 1))
            started.append(clock.now() - START)
            limiter.release(ticket)

        tasks = [asyncio.create_task(request()) for _ in range(4)]
        await clock.sleep(1.0)
        assert started == []
        limiter.overloaded(5.0)  # during the cool-down: it now ends at 6, not 3
        await asyncio.gather(*tasks)
        assert started == [6.0] * 4

    run(main)


def test_cancelled_during_the_cool_down_leaks_nothing() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=1, clock=clock)
        limiter.overloaded(10.0)
        waiter = asyncio.create_task(limiter.acquire(Cost(1, 1)))
        await clock.sleep(1.0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert limiter._in_flight == 0
        assert await start_times(limiter, clock, [Cost(1, 1)]) == [10.0]

    run(main)


def test_an_overload_reported_while_waiting_for_a_bucket_holds_the_request_too() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=4, requests_per_minute=60, clock=clock)
        await start_times(limiter, clock, [Cost(1, 1)] * 2)  # the bucket holds 2.83: the next waits 0.17 s
        waiter = asyncio.create_task(start_times(limiter, clock, [Cost(1, 1)]))
        await clock.sleep(0.1)
        limiter.overloaded(2.0)  # the bucket has room at 0.17, the cool-down ends at 2.1
        return await waiter

    assert run(main) == pytest.approx([2.1])


# -- the buckets -------------------------------------------------------------------

SPAN = WINDOW + _MARGIN
"""The rolling window each bucket keeps under its limit: a minute, and the margin for the service seeing a request a
little later."""


def capacity(limit: float) -> float:
    """What a bucket for ``limit`` a minute holds: PERIOD seconds of its rate (a limit of 635 holds 30)."""
    return limit * PERIOD / (SPAN + PERIOD)


def rate(limit: float) -> float:
    """What it drips a second: what is left of the limit over a span (635 a minute: 10 a second)."""
    return (limit - capacity(limit)) / SPAN


def in_turn(limit: float, amounts: list[float]) -> list[float]:
    """When each of ``amounts`` (each at most the capacity) starts, taken in turn from an empty bucket that
    never runs empty again: once what was taken before, and it, fit in what dripped and the capacity."""
    times, taken = [], 0.0
    for amount in amounts:
        taken += amount
        times.append(max(0.0, (taken - capacity(limit)) / rate(limit)))
    return times


def test_the_aiolimiter_internals_the_bucket_relies_on() -> None:
    # _Bucket overrides AsyncLimiter._leak, sets _level and calls has_capacity/acquire; see its docstring.
    # An aiolimiter release that changes any of this fails here, not as 429s in production.
    for name in ("_leak", "has_capacity", "acquire"):
        assert callable(getattr(AsyncLimiter, name, None)), name
    assert {"_level", "_last_check", "_rate_per_sec", "max_rate"} <= set(AsyncLimiter.__slots__)
    plain = AsyncLimiter(30, 3)
    assert plain._rate_per_sec == 10 and plain._level == 0

    def finishes_at_once(awaitable: Awaitable[None]) -> bool:
        coro = awaitable.__await__()
        try:
            coro.send(None)
        except StopIteration:
            return True
        coro.close()
        return False

    async def main(clock: VirtualClock) -> None:
        bucket = _Bucket(635, clock)
        assert (bucket.max_rate, bucket._rate_per_sec) == pytest.approx((30, 10))
        with pytest.raises(ValueError):
            await bucket.acquire(31)  # larger than the bucket: refused, which is why take() splits it
        for _ in range(3):
            assert finishes_at_once(bucket.acquire(10))  # capacity: acquire does not wait and adds to _level
        assert bucket._level == 30 and bucket.shortfall(1) == pytest.approx(0.1)
        assert not bucket.has_capacity(1)
        await clock.sleep(0.5)  # virtual time only: the loop's clock has hardly moved
        assert bucket.has_capacity(5) and not bucket.has_capacity(6)  # has_capacity reads our clock via _leak
        bucket._level += 15  # settling sets the level: aiolimiter reads it back
        assert not bucket.has_capacity(1) and bucket.shortfall(1) == pytest.approx(1.1)
        await clock.sleep(1.1)
        # acquire reads time through _leak too: with the capacity back it returns at once.
        assert finishes_at_once(bucket.acquire(1))
        assert bucket._level == pytest.approx(30) and not bucket._waiters

    run(main)


def test_no_rolling_minute_lets_more_than_the_limit_start_and_a_busy_client_gets_most_of_it() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=1000, requests_per_minute=60, clock=clock)
        return await start_times(limiter, clock, [Cost(1, 1)] * 300)

    times = run(main)
    assert times == pytest.approx(in_turn(60, [1] * 300), abs=2e-3)
    # The bucket holds PERIOD seconds of its rate, not a minute: a minute's bucket would let 120 into one.
    busiest = max(bisect.bisect_left(times, at + SPAN) - i for i, at in enumerate(times))
    assert 55 <= busiest <= 60
    assert 300 / (times[-1] / 60) >= 0.94 * 60


def test_each_choice_counts_as_a_request() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=10, requests_per_minute=120, clock=clock)
        return await start_times(limiter, clock, [Cost(1, 1, choices=4)] * 2 + [Cost(1, 1, choices=2)])

    # The bucket holds 5.67: 4 go at once, the next 4 wait for 2.33 to drip, the 2 for 2 more.
    assert run(main) == pytest.approx(in_turn(120, [4, 4, 2]), abs=2e-3)


def test_concurrent_requests_wait_for_the_limits_in_arrival_order() -> None:
    async def main(clock: VirtualClock) -> list[tuple[int, float]]:
        limiter = Limiter(max_concurrency=100, requests_per_minute=60, clock=clock)
        started: list[tuple[int, float]] = []

        async def request(ident: int) -> None:
            ticket = await limiter.acquire(Cost(1, 1))
            started.append((ident, clock.now() - START))
            limiter.release(ticket)

        await asyncio.gather(*(request(i) for i in range(8)))
        return started

    started = run(main)
    assert [ident for ident, _ in started] == list(range(8))
    assert [at for _, at in started] == pytest.approx(in_turn(60, [1] * 8), abs=2e-3)


def test_a_big_request_is_not_overtaken_by_smaller_ones_behind_it() -> None:
    async def main(clock: VirtualClock) -> list[tuple[str, float]]:
        limiter = Limiter(max_concurrency=4, prompt_tokens_per_minute=635, clock=clock)  # 30 held, 10 a second
        await start_times(limiter, clock, [Cost(30, 0)])  # the bucket is full
        started: list[tuple[str, float]] = []

        async def request(name: str, cost: Cost) -> None:
            ticket = await limiter.acquire(cost)
            started.append((name, clock.now() - START))
            limiter.release(ticket, reserved(cost))

        await asyncio.gather(request("big", Cost(20, 0)), request("small", Cost(1, 0)))
        return started

    # First come, first served: the small one would fit after 0.1 s, but waits its turn behind the big one.
    started = run(main)
    assert [name for name, _ in started] == ["big", "small"]
    assert [at for _, at in started] == pytest.approx([2.0, 2.1], abs=2e-3)


def test_less_than_one_request_per_minute_still_admits_requests_at_that_rate() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=1, requests_per_minute=0.5, clock=clock)
        return await start_times(limiter, clock, [Cost(1, 1)] * 3)

    # One request is 42 buckets' worth: it goes once the bucket is empty, then fills it for 127 s.
    every = 1 / (0.5 / (SPAN + PERIOD))
    assert run(main) == pytest.approx([0.0, every, 2 * every], abs=2e-3)


def test_a_request_larger_than_the_bucket_waits_for_it_to_be_empty_as_long_as_its_excess_takes_to_drip() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=4, prompt_tokens_per_minute=635, clock=clock)  # 30 held, 10 a second
        return await start_times(limiter, clock, [Cost(20, 0), Cost(100, 0), Cost(1, 0)])

    # 20 drips by 2 s; 100 is 70 more than the bucket: 7 s of an empty bucket, so no span holds more than
    # 635. Then the bucket holds 100 and the next waits for 71 of them to drip.
    assert run(main) == pytest.approx([0.0, 9.0, 9.0 + 7.1], abs=2e-3)


def test_a_request_larger_than_a_whole_minute_goes_alone_and_counts_as_long_as_it_is_larger() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=4, prompt_tokens_per_minute=635, clock=clock)
        big = Cost(prompt_tokens=635, max_tokens=0, choices=3)  # three minutes' worth
        return await start_times(limiter, clock, [Cost(20, 0), big, Cost(1, 0)])

    # Not refused, no deadlock: it waits until nothing was sent for a span, then holds the limit three minutes.
    assert run(main) == pytest.approx([0.0, SPAN, SPAN + (3 * 635 - 29) / 10], abs=2e-3)


def test_prompt_tokens_are_reserved_per_choice_and_settled_to_what_the_server_reported() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=1, prompt_tokens_per_minute=30 * 635, clock=clock)  # 900 held
        ticket = await limiter.acquire(Cost(prompt_tokens=300, max_tokens=5, choices=3))
        assert limiter.used()["prompt_tokens"] == limiter.levels()["prompt_tokens"] == 900  # the prompt per choice
        limiter.release(ticket, spent(prompt=300, completion=15, choices=3))  # the server counted it once
        assert limiter.used()["prompt_tokens"] == limiter.levels()["prompt_tokens"] == 300
        return await start_times(limiter, clock, [Cost(600, 0), Cost(30, 0)])

    # 300 + 600 fill the bucket; 30 more wait for 30 to drip at 300 a second. Unsettled, 600 would wait 2 s.
    assert run(main) == pytest.approx([0.0, 0.1], abs=2e-3)


def test_generation_reserves_max_tokens_per_choice_and_the_unused_part_comes_back_at_release() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=4, generated_tokens_per_minute=200 * 635, clock=clock)  # 6000 held
        first = await limiter.acquire(Cost(10, max_tokens=4096))
        assert limiter.used()["generated_tokens"] == limiter.levels()["generated_tokens"] == 4096
        second = asyncio.create_task(start_times(limiter, clock, [Cost(10, max_tokens=4096)]))
        await clock.sleep(0.5)
        assert not second.done()  # 4096 + 4096 > 6000: it waits 1.1 s for 2192 to drip ...
        limiter.release(first, spent(10, 10))  # ... or until the first settles at 10 tokens
        return await second

    assert run(main) == pytest.approx([0.5], abs=2e-3)


def test_a_bucket_that_ran_empty_since_a_reservation_gives_nothing_back_for_it() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=4, generated_tokens_per_minute=635, clock=clock)  # 30 held, 10 a second
        early = await limiter.acquire(Cost(0, 20))
        await clock.sleep(3.0)  # the 20 dripped away: the bucket forgot them
        late = await limiter.acquire(Cost(0, 30))
        limiter.release(early, spent(0, 1))  # 19 not generated, but they are not in the bucket to give back
        assert limiter.levels()["generated_tokens"] == 30
        limiter.release(late, spent(0, 5))  # taken since the bucket was last empty: 25 come back
        assert limiter.levels()["generated_tokens"] == 5
        assert limiter.used()["generated_tokens"] == 6  # what was sent is counted as settled either way

    run(main)


def test_an_overrun_is_charged_and_a_failure_gives_its_tokens_back_but_not_its_request() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=4, generated_tokens_per_minute=10 * 635, tokens_per_minute=100 * 635,
                          clock=clock)  # fmt: skip

        def levels() -> dict[str, float]:
            return {name: level for name, level in limiter.levels().items() if level is not None}

        limiter.release(await limiter.acquire(Cost(5, max_tokens=10)), spent(5, 60))  # generated more than reserved
        assert limiter.used() == pytest.approx(dict(zip(METERS, [1, 5, 5, 60, 65], strict=True)))
        assert levels() == pytest.approx({"generated_tokens": 60, "tokens": 65})
        limiter.release(await limiter.acquire(Cost(5, max_tokens=40, choices=2)), None)  # failed
        assert limiter.used() == pytest.approx(dict(zip(METERS, [3, 5, 5, 60, 65], strict=True)))
        assert levels() == pytest.approx({"generated_tokens": 60, "tokens": 65})
        limiter.release(await limiter.acquire(Cost(5, 2)), spent(0, 0))  # no usage: the reservation stands
        assert limiter.used() == pytest.approx(dict(zip(METERS, [4, 10, 10, 62, 72], strict=True)))
        assert levels() == pytest.approx({"generated_tokens": 62, "tokens": 72})
        return await start_times(limiter, clock, [Cost(5, max_tokens=248)])  # 62 + 248: 10 over the 300 held

    assert run(main) == pytest.approx([0.1], abs=2e-3)


def test_without_max_tokens_the_servers_default_is_reserved_until_replies_teach_better() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=1, generated_tokens_per_minute=1e6, clock=clock)
        ticket = await limiter.acquire(Cost(4, None))
        assert limiter.levels()["generated_tokens"] == 16
        limiter.release(ticket, spent(4, 6, choices=2))  # 3 a choice
        ticket = await limiter.acquire(Cost(4, None, choices=2))
        assert limiter.levels()["generated_tokens"] == 6 + 2 * 3
        limiter.release(ticket, spent(4, 40, choices=2))  # 3 + 0.2 * (20 - 3) = 6.4: 6 a choice
        await limiter.acquire(Cost(4, None))
        assert limiter.levels()["generated_tokens"] == 6 + 40 + 6 == limiter.used()["generated_tokens"]

    run(main)


def test_uncached_prompt_tokens_are_counted_from_the_reported_cache_hits() -> None:
    async def main(clock: VirtualClock) -> dict[str, float]:
        limiter = Limiter(max_concurrency=1, clock=clock)
        await succeed(limiter, Cost(100, 1), spent(prompt=100, completion=1, cached=80))
        return limiter.used()

    assert run(main) == dict(zip(METERS, [1.0, 100.0, 20.0, 1.0, 101.0], strict=True))


def test_a_release_wakes_a_waiter_before_its_sleep_is_over_and_cancelling_it_leaks_nothing() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=4, generated_tokens_per_minute=10 * 635, clock=clock)  # 300, 100 a second
        holder = await limiter.acquire(Cost(1, 300))
        waiter = asyncio.create_task(limiter.acquire(Cost(1, 290)))  # waits 2.9 s for the drip
        behind = asyncio.create_task(limiter.acquire(Cost(1, 290)))
        await clock.sleep(1.0)
        waiter.cancel()  # the head of the queue goes: the next takes its place and waits in turn
        await asyncio.gather(waiter, return_exceptions=True)
        await clock.sleep(1.0)
        assert not behind.done() and limiter._in_flight == 2
        limiter.release(holder, spent(1, 10))
        await clock.sleep(0)
        assert behind.done() and clock.now() - START == pytest.approx(2.0)
        limiter.release(behind.result(), None)
        assert limiter._in_flight == 0 and not limiter._queue.locked() and limiter._wake is None
        assert limiter.used()["generated_tokens"] == 10 and limiter.levels()["generated_tokens"] == 0

    run(main)


def test_cancelled_while_waiting_for_a_limit_leaks_neither_place_nor_reservation() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=2, requests_per_minute=60, clock=clock)
        await start_times(limiter, clock, [Cost(1, 1)] * 2)  # the bucket holds 2.83: the next waits 0.17 s
        started: list[str] = []

        async def request(name: str) -> None:
            ticket = await limiter.acquire(Cost(1, 1))
            started.append(f"{name}@{clock.now() - START:.2f}")
            limiter.release(ticket)

        head = asyncio.create_task(request("head"))  # watches the clock
        queued = asyncio.create_task(request("queued"))  # in the window, queued behind it
        outside = asyncio.create_task(request("outside"))  # waits for the window
        last = asyncio.create_task(request("last"))
        await clock.sleep(0.1)
        assert started == [] and limiter._in_flight == 2 and len(limiter._waiters) == 2
        head.cancel()
        queued.cancel()
        await asyncio.gather(outside, last, head, queued, return_exceptions=True)
        outside_at, last_at = in_turn(60, [1] * 4)[2:]
        assert started == [f"outside@{outside_at:.2f}", f"last@{last_at:.2f}"]
        assert limiter._in_flight == 0 and not limiter._waiters and not limiter._queue.locked()
        assert limiter.used()["requests"] == 4

    run(main)


def test_releasing_twice_or_a_foreign_ticket_is_harmless_and_never_raises() -> None:
    class Hostile(dict[str, str]):
        def items(self) -> Any:
            raise RuntimeError("a mapping that cannot be read")

    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=2, generated_tokens_per_minute=100, clock=clock)
        ticket = await limiter.acquire(Cost(1, 50))
        other = await limiter.acquire(Cost(1, 50))
        limiter.release(ticket, spent(1, 5), Hostile())  # settled before the headers failed to read
        assert limiter._in_flight == 1 and limiter.used()["generated_tokens"] == 55
        limiter.release(other, spent(1, 5))
        assert limiter.used()["generated_tokens"] == 10

    run(main)


def test_a_limiter_is_usable_on_each_loop_that_makes_one() -> None:
    # Created inside each loop by the client; a fresh loop gets a fresh limiter and works.
    for _ in range(2):

        async def main(clock: VirtualClock) -> list[float]:
            limiter = Limiter(max_concurrency=1, requests_per_minute=60, tokens_per_minute=100, clock=clock)
            return await start_times(limiter, clock, [Cost(1, 1)] * 2)

        assert run(main) == [0.0, 0.0]


def test_aclose_and_release_are_harmless() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=1, clock=clock)
        limiter.release(await limiter.acquire(Cost(1, 1)))
        await limiter.aclose()
        assert limiter._in_flight == 0

    run(main)


# -- the service's headers ------------------------------------------------------------


def test_the_older_headers_are_per_minute_and_the_newer_per_second() -> None:
    older = read_ratelimit_headers(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-limit-tokens-prompt": "60000",
            "x-ratelimit-limit-tokens-generated": "6000",
            "x-ratelimit-remaining-requests": "599",
            "x-ratelimit-remaining-tokens-prompt": "59000",
            "x-ratelimit-remaining-tokens-generated": "5990",
            "x-ratelimit-over-limit": "no",
            "content-type": "application/json",
        }
    )
    assert older == ServiceLimits(
        (600.0, 60000.0, None, 6000.0, None), (599.0, 59000.0, None, 5990.0, None), over_limit=False
    )
    newer = read_ratelimit_headers(
        {
            "X-Ratelimit-Limit-Tokens-Prompt": "60000",  # tokens a second, names in any case
            "X-Ratelimit-Limit-Tokens-Cache-Adjusted-Prompt": "15000",
            "X-Ratelimit-Limit-Tokens-Generated": "600",
        }
    )
    assert newer == ServiceLimits(
        (None, 3_600_000.0, 900_000.0, 36_000.0, None), (None,) * 5, over_limit=None
    )
    # A remaining count above its limit: the limit can only be per second.
    assert read_ratelimit_headers(
        {"x-ratelimit-limit-tokens-generated": "600", "x-ratelimit-remaining-tokens-generated": "30000"}
    ) == ServiceLimits((None, None, None, 36_000.0, None), (None, None, None, 30_000.0, None), None)
    # What the live probe saw.
    assert read_ratelimit_headers({"x-ratelimit-over-limit": "yes", "x-request-id": "r"}) == ServiceLimits(
        (None,) * 5, (None,) * 5, over_limit=True
    )
    assert read_ratelimit_headers({"x-request-id": "r", "content-length": "12"}) is None


@pytest.mark.parametrize(
    "value",
    ["", "many", "nan", "inf", "-inf", "-5", "0", "0.5", "1e13", "1" * 100, "6,000", "0x10", "\x00", "1e400"],
)
def test_garbled_or_hostile_limits_are_ignored(value: str) -> None:
    said = read_ratelimit_headers(
        {
            "x-ratelimit-limit-requests": value,
            "x-ratelimit-limit-tokens-generated": value,
            "x-ratelimit-over-limit": value,
        }
    )
    assert said is None or (said.limits == (None,) * 5 and said.over_limit is None)


def test_a_name_sent_twice_counts_at_its_lower_value_and_remaining_never_goes_below_zero() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict(
        [("X-RateLimit-Limit-Requests", "600"), ("x-ratelimit-limit-requests", "300"),
         ("x-ratelimit-remaining-requests", "-4")]
    )  # fmt: skip
    assert read_ratelimit_headers(headers) == ServiceLimits((300.0,) + (None,) * 4, (0.0,) + (None,) * 4, None)


def test_a_service_limit_below_ours_becomes_ours_and_one_above_changes_nothing() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=100, requests_per_minute=600, clock=clock)
        await succeed(limiter, x_ratelimit_limit_requests="1000")
        assert limiter.limits["requests"] == 600
        await succeed(limiter, x_ratelimit_limit_requests="120")  # 2 of them spent already
        assert limiter.limits["requests"] == 120 and limiter.levels()["requests"] == 2
        return await start_times(limiter, clock, [Cost(1, 1)] * 4)

    # 120 a minute holds 5.67: 2 + 3 fit, the fourth waits for the drip. Under 600 a minute all four would fit.
    assert run(main) == pytest.approx([0.0, 0.0, 0.0, (6 - capacity(120)) / rate(120)], abs=2e-3)


def test_a_service_limit_applies_without_one_of_ours_and_a_rise_wakes_the_waiter() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=100, generated_tokens_per_minute=10 * 635, clock=clock)  # 300, 100 a s
        await succeed(limiter, Cost(0, 150), spent(0, 150), x_ratelimit_limit_tokens_prompt="50")  # no limit of ours
        assert limiter.limits["prompt_tokens"] == 50 and limiter.limits["generated_tokens"] == 10 * 635
        ticket = await limiter.acquire(Cost(0, 100))
        other = await limiter.acquire(Cost(0, 0))
        waiter = asyncio.create_task(start_times(limiter, clock, [Cost(0, 290)]))  # waits 2.4 s for the drip
        await clock.sleep(1.0)
        assert not waiter.done()
        # The service's limit is lower: the new bucket holds 141.7 and starts with the 200 sent, the waiter is
        # larger than it and would wait till 8.4 s ...
        limiter.release(ticket, spent(0, 50), {"x-ratelimit-limit-tokens-generated": "3000"})
        await clock.sleep(1.0)
        assert not waiter.done() and limiter.limits["generated_tokens"] == 3000
        level = limiter.levels()["generated_tokens"]
        assert level == pytest.approx(200 - rate(3000))
        # ... but when it rises past ours again, ours applies and the waiter is woken to wait only for its drip.
        limiter.release(other, spent(0, 0), {"x-ratelimit-limit-tokens-generated": "1e6"})
        return await waiter

    assert run(main) == pytest.approx([2.0 + (200 - rate(3000) - 10) / 100], abs=2e-3)


def test_a_service_count_above_ours_is_charged_to_our_buckets() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=100, clock=clock)
        # Another client on the account: the service has counted 95 of 100 requests, we 1.
        await succeed(limiter, x_ratelimit_limit_requests="100", x_ratelimit_remaining_requests="5")
        assert limiter.used()["requests"] == limiter.levels()["requests"] == 95
        times = await start_times(limiter, clock, [Cost(1, 1)])  # waits for 91.3 of them to drip
        # Remaining zero with no limit stated: the one announced before is the measure; 97 sent, 3 more counted.
        await succeed(limiter, x_ratelimit_remaining_requests="0")
        assert limiter.used()["requests"] == 100
        return times

    assert run(main) == pytest.approx([(96 - capacity(100)) / rate(100)], abs=2e-3)


def test_over_limit_narrows_the_window_at_most_once_a_second_and_does_not_widen_it() -> None:
    async def main(clock: VirtualClock) -> list[int]:
        limiter = Limiter(max_concurrency=16, clock=clock)
        windows = []
        for _ in range(3):
            await succeed(limiter, x_ratelimit_over_limit="yes")
            windows.append(limiter.window)
        await clock.sleep(1.0)
        await succeed(limiter, x_ratelimit_over_limit="yes")
        windows.append(limiter.window)
        await succeed(limiter, x_ratelimit_over_limit="no")
        windows.append(limiter.window)
        return windows

    assert run(main) == [8, 8, 8, 4, 5]
