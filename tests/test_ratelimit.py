"""The limiter on its own: the concurrency window, the cool-down, AIMD and the buckets."""

from __future__ import annotations

import asyncio
import time

import pytest

from _virtual_time import VirtualTime
from fw_rollouts._ratelimit import Limiter


async def hold(limiter: Limiter, entered: list[int], release: asyncio.Event, ident: int) -> None:
    async with limiter.slot():
        entered.append(ident)
        await release.wait()


def test_window_admits_at_most_max_concurrency() -> None:
    async def main() -> None:
        limiter = Limiter(max_concurrency=2)
        entered: list[int] = []
        release = asyncio.Event()
        tasks = [asyncio.create_task(hold(limiter, entered, release, i)) for i in range(5)]
        await asyncio.sleep(0.01)
        assert entered == [0, 1]
        release.set()
        await asyncio.gather(*tasks)
        assert sorted(entered) == [0, 1, 2, 3, 4]
        assert entered[:2] == [0, 1] and entered[2:] == [2, 3, 4]  # first come, first served

    asyncio.run(main())


def test_cancelled_waiters_do_not_leak_places() -> None:
    async def main() -> None:
        limiter = Limiter(max_concurrency=1)
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
        again: list[int] = []
        done = asyncio.Event()
        done.set()
        await asyncio.wait_for(hold(limiter, again, done, 9), 1)
        assert again == [9] and limiter._in_flight == 0

    asyncio.run(main())


def test_overload_halves_the_window_once_per_cool_down_and_success_widens_it() -> None:
    clock = VirtualTime()

    async def main() -> None:
        limiter = Limiter(max_concurrency=16, clock=clock.clock, sleep=clock.sleep)
        for _ in range(10):  # a whole wave of 429s during one cool-down
            limiter.overloaded(2.0)
        assert limiter.window == 8 and limiter.cooling_down_for == pytest.approx(2.0)
        clock.now += 2.0
        limiter.overloaded(1.0)  # a new cool-down: halve again
        assert limiter.window == 4
        for _ in range(100):
            limiter.succeeded()
        assert limiter.window == 16  # never above max_concurrency
        for _ in range(10):
            clock.now += 5
            limiter.overloaded(1.0)
        assert limiter.window == 1  # never below one

    asyncio.run(main())


def test_nobody_starts_during_a_cool_down() -> None:
    clock = VirtualTime()

    async def main() -> None:
        limiter = Limiter(max_concurrency=4, clock=clock.clock, sleep=clock.sleep)
        limiter.overloaded(3.0)
        async with limiter.slot():
            started = clock.now
        assert started >= 3.0

    asyncio.run(main())


def test_tokens_are_estimated_from_what_requests_really_generated() -> None:
    limiter = Limiter(max_concurrency=1)
    assert limiter.estimate_tokens(100, 4096) == 4196  # nothing seen yet: the worst case
    for _ in range(50):
        limiter.observe_completion(200)
    assert limiter.estimate_tokens(100, 4096) == 300
    assert limiter.estimate_tokens(100, 50) == 150  # never more than max_tokens


def test_requests_per_minute_bucket() -> None:
    async def main() -> float:
        limiter = Limiter(max_concurrency=1000, requests_per_minute=120)
        started = time.perf_counter()
        for _ in range(121):  # a bucket of 120 per minute: the 121st waits about half a second
            async with limiter.slot():
                pass
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    assert 0.3 < elapsed < 3.0


def test_tokens_per_minute_bucket_never_refuses_a_big_request() -> None:
    async def main() -> None:
        limiter = Limiter(max_concurrency=4, tokens_per_minute=1000)
        async with limiter.slot(tokens=50_000):  # larger than the bucket: charged the whole bucket
            pass

    asyncio.run(main())


def test_limiter_is_usable_on_the_loop_that_made_it() -> None:
    # Created inside each loop by the client; a fresh loop gets a fresh limiter and works.
    for _ in range(2):

        async def main() -> None:
            limiter = Limiter(max_concurrency=1, requests_per_minute=60)
            async with limiter.slot(tokens=1):
                pass

        asyncio.run(main())
