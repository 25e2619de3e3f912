"""The limiter on its own, on virtual time: the window and its AIMD, the cool-down, the buckets, cancellation."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
from aiolimiter import AsyncLimiter

from fw_rollouts._budget import Budget, Cost
from fw_rollouts._clock import SYSTEM_CLOCK, Clock, SystemClock
from fw_rollouts._ratelimit import Limiter, _Bucket

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
    """Acquire and release each cost in turn; when (relative to START) each one was let in."""
    times = []
    for cost in costs:
        ticket = await limiter.acquire(cost)
        times.append(clock.now() - START)
        limiter.release(ticket)
    return times


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
        await limiter.acquire(Cost(10, 10))
        limiter.overloaded(1.5)
        limiter.observe(10, 7)
        return repr(limiter)

    assert run(main) == (
        "<Limiter(max_concurrency=4, requests_per_minute=None, tokens_per_minute=1000) "
        "[window: 3, in flight: 1, waiting: 0, cooling down: 1.50s, expected completion: 7.0 tokens]>"
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
            limiter.observe(10, 10)
        assert limiter.window == 7  # one wider per success
        for _ in range(100):
            limiter.observe(10, 10)
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
        waiter = asyncio.create_task(limiter.acquire(Cost(1, 1)))
        await clock.sleep(0)
        assert not waiter.done()
        limiter.observe(1, 1)  # window 2: the waiter is let in without anyone releasing
        await clock.sleep(0)
        assert waiter.done() and limiter._in_flight == 2
        limiter.release(ticket)
        limiter.release(waiter.result())

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
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=4, requests_per_minute=60, clock=clock)
        await start_times(limiter, clock, [Cost(1, 1)] * 60)  # the burst: the bucket is full
        waiter = asyncio.create_task(start_times(limiter, clock, [Cost(1, 1)]))
        await clock.sleep(0.5)
        limiter.overloaded(2.0)  # the bucket has room at 1, the cool-down ends at 2.5
        assert await waiter == [2.5]

    run(main)


# -- the buckets ------------------------------------------------------------------


def test_requests_per_minute_spaces_requests_on_the_clock_after_a_burst_of_one_minute() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=1000, requests_per_minute=60, clock=clock)
        return await start_times(limiter, clock, [Cost(1, 1)] * 70)

    times = run(main)
    # aiolimiter's bucket holds a minute's worth: 60 start at once, then one a second.
    assert times[:60] == [0.0] * 60
    assert times[60:] == pytest.approx([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10], abs=2e-3)


def test_concurrent_requests_wait_for_the_bucket_in_arrival_order() -> None:
    async def main(clock: VirtualClock) -> list[tuple[int, float]]:
        limiter = Limiter(max_concurrency=100, requests_per_minute=60, clock=clock)
        await start_times(limiter, clock, [Cost(1, 1)] * 60)
        started: list[tuple[int, float]] = []

        async def request(ident: int) -> None:
            ticket = await limiter.acquire(Cost(1, 1))
            started.append((ident, clock.now() - START))
            limiter.release(ticket)

        await asyncio.gather(*(request(i) for i in range(5)))
        return started

    started = run(main)
    assert [ident for ident, _ in started] == [0, 1, 2, 3, 4]
    assert [at for _, at in started] == pytest.approx([1.0, 2, 3, 4, 5], abs=2e-3)


def test_a_big_request_is_not_overtaken_by_smaller_ones_behind_it() -> None:
    async def main(clock: VirtualClock) -> list[tuple[str, float]]:
        limiter = Limiter(max_concurrency=4, tokens_per_minute=60, clock=clock)  # one token a second
        await start_times(limiter, clock, [Cost(60, 0)])  # the bucket is full
        started: list[tuple[str, float]] = []

        async def request(name: str, cost: Cost) -> None:
            ticket = await limiter.acquire(cost)
            started.append((name, clock.now() - START))
            limiter.release(ticket)

        await asyncio.gather(request("big", Cost(30, 0)), request("small", Cost(1, 0)))
        return started

    # First come, first served: the small one would fit after 1 s but waits its turn.
    started = run(main)
    assert [name for name, _ in started] == ["big", "small"]
    assert [at for _, at in started] == pytest.approx([30.0, 31.0], abs=2e-3)


def test_less_than_one_request_per_minute_still_admits_requests() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=1, requests_per_minute=0.5, clock=clock)
        return await start_times(limiter, clock, [Cost(1, 1)] * 3)

    assert run(main) == pytest.approx([0.0, 120.0, 240.0], abs=2e-3)


def test_tokens_per_minute_charges_prompt_and_the_expected_completion_per_choice() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=1, tokens_per_minute=1000, clock=clock)  # 1000/60 tokens a second
        cost = Cost(prompt_tokens=100, max_tokens=400, choices=2)
        times = await start_times(limiter, clock, [cost])  # nothing seen yet: 2 * (100 + 400) fills the bucket
        limiter.observe(100, 50)  # the estimate starts at what the first choice generated
        times += await start_times(limiter, clock, [cost])  # 2 * (100 + 50) = 300: 18 s to drip out
        limiter.observe(100, 150)  # 50 + 0.2 * (150 - 50) = 70
        times += await start_times(limiter, clock, [cost])  # 2 * (100 + 70) = 340: 20.4 s
        times += await start_times(limiter, clock, [Cost(100, 10, 1)])  # never more than max_tokens: 110, 6.6 s
        return times

    assert run(main) == pytest.approx([0.0, 18.0, 38.4, 45.0], abs=2e-3)


def test_no_max_tokens_charges_the_servers_default_until_a_success_teaches_better() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=1, tokens_per_minute=60, clock=clock)  # one token a second
        times = await start_times(limiter, clock, [Cost(44, None)])  # 44 + 16 = 60
        times += await start_times(limiter, clock, [Cost(4, None)])  # 4 + 16 = 20 s
        limiter.observe(4, 2)
        times += await start_times(limiter, clock, [Cost(4, None)])  # 4 + 2 = 6 s
        return times

    assert run(main) == pytest.approx([0.0, 20.0, 26.0], abs=2e-3)


def test_a_cost_larger_than_the_bucket_is_charged_the_whole_bucket() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        limiter = Limiter(max_concurrency=4, tokens_per_minute=1000, clock=clock)
        big = Cost(prompt_tokens=50_000, max_tokens=100, choices=4)  # aiolimiter would refuse 200_400
        return await start_times(limiter, clock, [big, Cost(1, 0), big])

    # Not refused; the next request waits for one token (0.06 s); the next big one for a whole bucket.
    assert run(main) == pytest.approx([0.0, 0.06, 60.06], abs=2e-3)


def test_cancelled_while_waiting_for_a_bucket_leaks_neither_place_nor_capacity() -> None:
    async def main(clock: VirtualClock) -> None:
        limiter = Limiter(max_concurrency=2, requests_per_minute=60, clock=clock)
        await start_times(limiter, clock, [Cost(1, 1)] * 60)
        started: list[str] = []

        async def request(name: str) -> None:
            ticket = await limiter.acquire(Cost(1, 1))
            started.append(f"{name}@{clock.now() - START:.1f}")
            limiter.release(ticket)

        head = asyncio.create_task(request("head"))  # watches the clock for the bucket
        queued = asyncio.create_task(request("queued"))  # in the window, queued for the bucket
        outside = asyncio.create_task(request("outside"))  # waits for the window
        last = asyncio.create_task(request("last"))
        await clock.sleep(0.5)
        assert started == [] and limiter._in_flight == 2 and len(limiter._waiters) == 2
        head.cancel()
        queued.cancel()
        await asyncio.gather(outside, last, head, queued, return_exceptions=True)
        # Neither cancelled request took a place or a unit of the bucket: the survivors start at 1 and 2.
        assert started == ["outside@1.0", "last@2.0"]
        assert limiter._in_flight == 0 and not limiter._waiters
        assert limiter._requests is not None and not limiter._requests._queue.locked()

    run(main)


def test_the_aiolimiter_internals_the_bucket_relies_on() -> None:
    # _Bucket overrides AsyncLimiter._leak and calls has_capacity/acquire; see its docstring.
    assert callable(getattr(AsyncLimiter, "_leak", None))

    def finishes_at_once(awaitable: Awaitable[None]) -> bool:
        coro = awaitable.__await__()
        try:
            coro.send(None)
        except StopIteration:
            return True
        coro.close()
        return False

    async def main(clock: VirtualClock) -> None:
        bucket = _Bucket(60, clock)
        for _ in range(60):
            assert finishes_at_once(bucket.acquire(1))  # capacity: acquire does not wait
        assert bucket._level == 60 and bucket.shortfall(1) == pytest.approx(1.0)
        assert not bucket.has_capacity(1)
        await clock.sleep(0.5)  # virtual time only: the loop's clock has hardly moved
        assert bucket.shortfall(1) == pytest.approx(0.5)  # has_capacity/_leak read our clock
        await clock.sleep(0.5)
        # acquire reads time through _leak too: with the capacity back it returns at once.
        assert finishes_at_once(bucket.acquire(1))
        assert bucket._level == pytest.approx(60)

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
