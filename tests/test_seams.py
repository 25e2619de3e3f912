"""The client's seams end to end: a user's transport, budget, cache store and clock, and ``with_options``.

Each test uses the SDK as a user would, over real loopback HTTP to the simulated server, on virtual
time (tests/_virtual_time.py): the user objects below implement the protocols from scratch (the
transport wraps the default :class:`HTTPTransport`), record what the client asks of them, and the
tests check what the client did through them and at the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from _virtual_time import VirtualTime
from fw_rollouts import (
    AsyncFireworks,
    AuthenticationError,
    BadRequestError,
    Budget,
    ConfigurationError,
    Cost,
    DiskStore,
    Fireworks,
    FireworksClient,
    FwRollouts,
    HTTPTransport,
    Reply,
    SampleStore,
    StoreStats,
    Transport,
    ValidationError,
)
from fw_rollouts._budget import Spent
from fw_rollouts._runner import get_runner
from fw_rollouts.testing import Fault, FireworksSimulator

PROMPT = "What is 2+2?"


# -- user implementations of the seams -------------------------------------------------------------


class Gauge:
    """How many requests are in flight at once, and the most there ever were (shared by several transports)."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


class RecordingTransport:
    """A user transport: the default HTTP transport to ``sim``, recording every body it sends."""

    def __init__(self, sim: FireworksSimulator, gauge: Gauge | None = None) -> None:
        self._inner = HTTPTransport(base_url=sim.base_url, api_key=sim.api_key, max_connections=16)
        self.gauge = gauge if gauge is not None else Gauge()
        self.bodies: list[dict[str, Any]] = []
        self.closed = False

    @property
    def url(self) -> str:
        return self._inner.url

    async def post_completions(
        self, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Reply:
        self.bodies.append(json.loads(body))
        self.gauge.enter()
        try:
            return await self._inner.post_completions(body, timeout=timeout, headers=headers)
        finally:
            self.gauge.leave()

    async def aclose(self) -> None:
        self.closed = True
        await self._inner.aclose()

    @property
    def seeds(self) -> list[int]:
        return sorted(body["seed"] for body in self.bodies)


class RecordingBudget:
    """A user budget: at most ``limit`` requests in flight, every call recorded."""

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._in_flight = 0
        self._waiters: list[asyncio.Future[None]] = []
        self.costs: list[Cost] = []
        self.tickets: list[object] = []
        self.released: list[object] = []
        self.spent: list[Spent] = []
        self.failed = 0
        self.headers: list[Mapping[str, str]] = []
        self.overloads: list[float] = []
        self.closed = False

    async def acquire(self, cost: Cost) -> object:
        while self._in_flight >= self._limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self._in_flight += 1
        ticket = object()
        self.costs.append(cost)
        self.tickets.append(ticket)
        return ticket

    def release(self, ticket: object, spent: Spent | None = None, headers: Mapping[str, str] | None = None) -> None:
        self.released.append(ticket)
        if spent is None:
            self.failed += 1
        else:
            self.spent.append(spent)
        if headers is not None:
            self.headers.append(headers)
        self._in_flight -= 1
        if self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)

    def overloaded(self, seconds: float) -> None:
        self.overloads.append(seconds)

    async def aclose(self) -> None:
        self.closed = True

    def balanced(self) -> bool:
        """Every ticket handed out came back exactly once."""
        # The tickets are distinct live objects, so equal multisets of ids mean each came back once.
        return sorted(map(id, self.tickets)) == sorted(map(id, self.released))


class DictStore:
    """A user cache store in memory; ``fail`` makes every write raise."""

    def __init__(self, *, fail: bool = False) -> None:
        self.location = "memory://test"
        self.data: dict[str, bytes] = {}
        self.written: list[str] = []
        self.reads = 0
        self.fail = fail
        self.closed = False

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.reads += 1
        return [self.data.get(key) for key in keys]

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        if self.fail:
            raise OSError("disk full (simulated)")
        for key, value in items:
            self.written.append(key)
            self.data[key] = value

    async def stats(self) -> StoreStats:
        return StoreStats(entries=len(self.data), size_bytes=sum(map(len, self.data.values())), location=self.location)

    async def aclose(self) -> None:
        self.closed = True


if TYPE_CHECKING:  # the type checker holds the user classes above to the protocols

    def _protocols(sim: FireworksSimulator) -> tuple[Transport, Budget, SampleStore]:
        return RecordingTransport(sim), RecordingBudget(), DictStore()


# -- helpers ------------------------------------------------------------------------------------------


def completions(sim: FireworksSimulator) -> list[Any]:
    return [r for r in sim.requests if r.path.endswith("/completions")]


def options(sim: FireworksSimulator, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Constructor options for a client of ``sim`` on virtual time."""
    settings: dict[str, Any] = {
        "model": "qwen-15b",
        "base_url": sim.base_url,
        "api_key": sim.api_key,
        "cache_dir": str(tmp_path / "cache"),
        "max_tokens": 8,
        "progress_bar": False,
        "clock": VirtualTime(),
    }
    settings.update(overrides)
    return settings


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- transport= ---------------------------------------------------------------------------------------


def test_a_given_transport_carries_every_request_needs_no_key_and_stays_open(
    sim: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)

    async def main() -> tuple[RecordingTransport, FwRollouts]:
        transport = RecordingTransport(sim)
        client = AsyncFireworks(**options(sim, tmp_path, api_key=None, base_url=None, transport=transport))
        async with client:
            rollouts = await client.generate(PROMPT, n_samples=5)
        assert not transport.closed  # the user's to close
        # ... and still usable after the client has gone.
        reply = await transport.post_completions(
            json.dumps({"model": "accounts/fireworks/models/x", "prompt": "hi", "max_tokens": 2, "seed": 99}).encode(),
            timeout=30,
        )
        assert json.loads(reply.content)["choices"]
        await transport.aclose()
        return transport, rollouts

    transport, rollouts = run(main())
    assert [r.seed for r in rollouts] == [0, 1, 2, 3, 4]
    assert transport.seeds == [0, 1, 2, 3, 4, 99]  # the five samples, and the test's own request at the end
    assert len(completions(sim)) == 6
    assert all(body["prompt"] == rollouts.prompt_text for body in transport.bodies[:5])


def test_a_given_transport_is_used_for_retries_too(sim: FireworksSimulator, tmp_path: Path) -> None:
    sim.faults.push(Fault.status(503), Fault.reset())

    async def main() -> RecordingTransport:
        transport = RecordingTransport(sim)
        async with AsyncFireworks(**options(sim, tmp_path, transport=transport, max_concurrency=1)) as client:
            await client.generate(PROMPT, n_samples=2, use_cache=False)
        await transport.aclose()
        return transport

    transport = run(main())
    assert transport.seeds == [0, 0, 0, 1]
    assert len(completions(sim)) == 4


def test_a_given_transport_works_under_the_sync_facade(
    sim: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)
    transport = RecordingTransport(sim)
    with Fireworks(**options(sim, tmp_path, api_key=None, transport=transport)) as client:
        rollouts = client.generate(PROMPT, n_samples=3)
        again = client.generate(PROMPT, n_samples=3)
    assert len(rollouts) == 3 and all(r.cached for r in again)
    assert transport.seeds == [0, 1, 2]
    assert not transport.closed
    get_runner().run(transport.aclose())  # its pool lives on the facade's loop


# -- budget= ------------------------------------------------------------------------------------------


def test_a_given_budget_sees_every_attempt_balanced_and_is_told_of_overload(
    sim: FireworksSimulator, tmp_path: Path
) -> None:
    budget = RecordingBudget()

    async def main() -> BaseException:
        async with AsyncFireworks(**options(sim, tmp_path, budget=budget, max_tokens=12)) as client:
            sim.faults.push(Fault.status(503), Fault.status(429, retry_after="1"))
            await client.generate(PROMPT, n_samples=6)
            sim.faults.push(Fault.status(400))  # fails for good: ends the call
            with pytest.raises(BadRequestError) as info:
                await client.generate("Another prompt", n_samples=1)
        return info.value

    run(main())
    attempts = len(completions(sim))
    assert attempts == 6 + 2 + 1
    assert len(budget.tickets) == len(budget.released) == attempts and budget.balanced()
    assert len(budget.spent) == 6 and budget.failed == 3  # what each successful request used
    assert all(s.prompt_tokens > 0 and 0 < s.completion_tokens <= 12 and s.choices == 1 for s in budget.spent)
    # Only successful replies' headers, names lower-cased as the service sent them.
    assert len(budget.headers) == 6 and all(h.get("x-ratelimit-over-limit") == "no" for h in budget.headers)
    assert len(budget.overloads) == 2  # the 503 and the 429
    assert max(budget.overloads) >= 1.0  # Retry-After is a floor for the cool-down
    assert all(cost == Cost(cost.prompt_tokens, 12, 1) and cost.prompt_tokens > 0 for cost in budget.costs)
    assert not budget.closed  # the user's to close


def test_samples_per_request_are_charged_as_choices(sim: FireworksSimulator, tmp_path: Path) -> None:
    budget = RecordingBudget()

    async def main() -> None:
        async with AsyncFireworks(**options(sim, tmp_path, budget=budget, samples_per_request=4)) as client:
            await client.generate(PROMPT, n_samples=8)

    run(main())
    assert [cost.choices for cost in budget.costs] == [4, 4]
    assert [s.choices for s in budget.spent] == [4, 4] and budget.balanced()
    # Totals over the choices: the generated tokens of all four, the prompt as the server reported it.
    assert all(4 <= s.completion_tokens <= 4 * 4096 for s in budget.spent)


def test_one_budget_shared_by_two_clients_limits_both(tmp_path: Path) -> None:
    # The simulator's latency keeps requests in flight long enough to overlap when nothing stops them.
    with FireworksSimulator(latency=0.02) as sim:

        async def both(budgets: tuple[RecordingBudget, RecordingBudget]) -> Gauge:
            gauge = Gauge()
            transports = RecordingTransport(sim, gauge), RecordingTransport(sim, gauge)
            clients = [
                AsyncFireworks(**options(sim, tmp_path, budget=b, transport=t, use_cache=False))
                for b, t in zip(budgets, transports, strict=True)
            ]
            results = await asyncio.gather(*(c.generate(PROMPT, n_samples=3) for c in clients))
            assert [len(r) for r in results] == [3, 3]
            for client in clients:
                await client.aclose()
            for transport in transports:
                await transport.aclose()
            return gauge

        shared = RecordingBudget(limit=1)
        assert run(both((shared, shared))).peak == 1
        assert len(shared.tickets) == 6 and shared.balanced()
        # The control: a budget each, so the two clients do overlap.
        assert run(both((RecordingBudget(limit=1), RecordingBudget(limit=1)))).peak == 2


# -- cache= -------------------------------------------------------------------------------------------


def test_a_given_store_gets_every_sample_once_and_serves_a_rerun(sim: FireworksSimulator, tmp_path: Path) -> None:
    store = DictStore()

    async def main() -> tuple[FwRollouts, FwRollouts]:
        async with AsyncFireworks(**options(sim, tmp_path, cache=store)) as client:
            first = await client.generate(PROMPT, n_samples=5)
            again = await client.generate(PROMPT, n_samples=5)
            return first, again

    first, again = run(main())
    assert len(completions(sim)) == 5
    assert len(store.written) == len(set(store.written)) == 5 + 1  # and the prompt's echoed part, once
    assert all(r.cached for r in again) and [r.full for r in again] == [r.full for r in first]
    assert again[0].logprobs == first[0].logprobs
    assert first.cache_dir == again.cache_dir == "memory://test"
    assert not (tmp_path / "cache").exists()  # the directory store was never made


def test_a_given_store_never_gets_errors_written(sim: FireworksSimulator, tmp_path: Path) -> None:
    store = DictStore()
    sim.faults.push(Fault.ok(), Fault.status(400))

    async def main() -> BadRequestError:
        async with AsyncFireworks(**options(sim, tmp_path, cache=store, max_concurrency=1)) as client:
            with pytest.raises(BadRequestError) as info:
                await client.generate(PROMPT, n_samples=3)
        return info.value

    error = run(main())
    assert error.rollouts is not None and [r.seed for r in error.rollouts] == [0]
    assert list(error.errors) == [1]
    # Seed 0 and the prompt's echoed part only: seed 1 failed, seed 2 was never requested.
    assert len(store.written) == 2
    assert len(completions(sim)) == 2


def test_a_store_that_cannot_write_loses_no_sample(sim: FireworksSimulator, tmp_path: Path) -> None:
    store = DictStore(fail=True)

    async def main() -> tuple[FwRollouts, FwRollouts]:
        async with AsyncFireworks(**options(sim, tmp_path, cache=store)) as client:
            return await client.generate(PROMPT, n_samples=5), await client.generate(PROMPT, n_samples=5)

    first, again = run(main())
    assert [r.seed for r in first] == [0, 1, 2, 3, 4] and not any(r.cached for r in first)
    assert [r.seed for r in again] == [0, 1, 2, 3, 4] and not any(r.cached for r in again)
    assert len(completions(sim)) == 10
    assert store.data == {}


# -- clock= -------------------------------------------------------------------------------------------


def test_a_long_retry_after_passes_on_the_clock_not_in_real_time(sim: FireworksSimulator, tmp_path: Path) -> None:
    clock = VirtualTime()
    sim.faults.push(Fault.status(429, retry_after="30"))

    async def main() -> FwRollouts:
        async with AsyncFireworks(**options(sim, tmp_path, clock=clock, use_cache=False)) as client:
            return await client.generate(PROMPT, n_samples=1)

    start = time.perf_counter()
    rollouts = run(main())
    assert time.perf_counter() - start < 5
    assert len(rollouts) == 1 and len(completions(sim)) == 2
    assert clock.time >= 30


def test_the_rate_buckets_run_on_the_clock(sim: FireworksSimulator, tmp_path: Path) -> None:
    clock = VirtualTime()

    async def main() -> FwRollouts:
        client = AsyncFireworks(**options(sim, tmp_path, clock=clock, use_cache=False, requests_per_minute=60))
        async with client:
            return await client.generate(PROMPT, n_samples=70, max_tokens=2)

    start = time.perf_counter()
    rollouts = run(main())
    assert time.perf_counter() - start < 8
    assert len(rollouts) == 70
    # The bucket holds 3 s of its rate (2.8 requests), then lets one in every 63.5 / 60 s: 70 take 71 virtual s.
    assert 70.0 <= clock.time <= 72.0


# -- with_options ---------------------------------------------------------------------------------------


def test_a_sibling_shares_the_given_transport_and_budget(
    sim: FireworksSimulator, tmp_path: Path
) -> None:
    budget = RecordingBudget()

    async def main() -> RecordingTransport:
        transport = RecordingTransport(sim)
        parent = AsyncFireworks(**options(sim, tmp_path, budget=budget, transport=transport, use_cache=False))
        sibling = parent.with_options(max_retries=0, timeout=5)
        assert sibling.settings.max_retries == 0 and sibling.settings.timeout == 5
        await sibling.generate(PROMPT, n_samples=2)
        assert len(budget.tickets) == 2 and transport.seeds == [0, 1]
        # The given budget sets the limits: a sibling cannot bypass it with limits of its own ...
        with pytest.raises(ConfigurationError, match="requests_per_minute cannot change for a client given budget="):
            parent.with_options(requests_per_minute=600)
        # ... but it may run more or fewer workers under it, through the same connections.
        limited = parent.with_options(max_concurrency=2)
        await limited.generate(PROMPT, n_samples=3, seed=10)
        assert len(budget.tickets) == 5
        assert transport.seeds == [0, 1, 10, 11, 12]
        for client in (limited, sibling, parent):
            await client.aclose()
        assert not transport.closed and not budget.closed
        await transport.aclose()
        return transport

    run(main())
    assert len(completions(sim)) == 5


def test_a_sibling_with_other_concurrency_keeps_the_given_transport(
    sim: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIREWORKS_API_KEY", raising=False)

    async def main() -> RecordingTransport:
        transport = RecordingTransport(sim)
        parent = AsyncFireworks(**options(sim, tmp_path, api_key=None, transport=transport, use_cache=False))
        sibling = parent.with_options(max_concurrency=2)
        try:
            await sibling.generate(PROMPT, n_samples=2)
        finally:
            await sibling.aclose()
            await parent.aclose()
            await transport.aclose()
        return transport

    assert run(main()).seeds == [0, 1]


def test_a_given_store_is_left_open_for_its_owner(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> None:
        async with DiskStore(tmp_path / "common") as store:
            first = AsyncFireworks(**options(sim, tmp_path, cache=store))
            second = AsyncFireworks(**options(sim, tmp_path, cache=store))
            await first.generate(PROMPT, n_samples=2)
            await first.aclose()
            again = await second.generate(PROMPT, n_samples=2)
            assert all(r.cached for r in again)
            await second.aclose()

    run(main())


def test_a_sibling_with_another_cache_dir_writes_there(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> int:
        async with AsyncFireworks(**options(sim, tmp_path, cache_dir=str(tmp_path / "a"))) as parent:
            sibling = parent.with_options(cache_dir=str(tmp_path / "b"))
            rollouts = await sibling.generate(PROMPT, n_samples=3)
            assert rollouts.cache_dir == str(tmp_path / "b")
            await sibling.aclose()
            again = await parent.generate(PROMPT, n_samples=3)  # not in the parent's cache
            assert not any(r.cached for r in again)
        async with DiskStore(tmp_path / "b") as b, DiskStore(tmp_path / "a") as a:
            assert (await a.stats()).entries == 3 + 1  # and the prompt's echoed part
            return (await b.stats()).entries

    assert run(main()) == 3 + 1
    assert len(completions(sim)) == 6


def test_closing_a_sibling_leaves_the_parent_usable_and_closing_the_parent_closes_the_shared_cache(
    sim: FireworksSimulator, tmp_path: Path
) -> None:
    async def main() -> None:
        parent = AsyncFireworks(**options(sim, tmp_path))
        sibling = parent.with_options(max_retries=1)
        await sibling.generate(PROMPT, n_samples=2)
        await sibling.aclose()
        again = await parent.generate(PROMPT, n_samples=3)  # the shared cache is still open
        assert [r.cached for r in again] == [True, True, False]
        with pytest.raises(ConfigurationError, match="closed"):
            await sibling.generate(PROMPT)
        other = parent.with_options(timeout=60)
        await parent.aclose()
        with pytest.raises(ConfigurationError, match="cache store is closed"):
            await other.generate(PROMPT, n_samples=1)
        await other.aclose()

    run(main())
    assert len(completions(sim)) == 3


def test_with_options_checks_names_and_values(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncFireworks(**options(sim, tmp_path)) as client:
            with pytest.raises(ValidationError, match="did you mean 'temperature'"):
                client.with_options(temprature=1)
            with pytest.raises(ValidationError, match="max_retries"):
                client.with_options(max_retries=-1)
            with pytest.raises(ConfigurationError, match="cache_dir"):
                client.with_options(cache_dir=str(tmp_path / "file.txt"))
            warmer = client.with_options(temperature=1.5)
            assert warmer.settings.temperature == 1.5 and client.settings.temperature == 0.7
            await warmer.generate(PROMPT)
            await warmer.aclose()

    (tmp_path / "file.txt").write_text("not a directory")
    run(main())
    assert [r.body["temperature"] for r in completions(sim)] == [1.5]


def test_the_sync_facade_with_options_returns_a_sync_client(sim: FireworksSimulator, tmp_path: Path) -> None:
    with Fireworks(**options(sim, tmp_path)) as client:
        sibling = client.with_options(max_tokens=4, max_retries=0)
        assert type(sibling) is Fireworks
        rollouts = sibling.generate(PROMPT, n_samples=2)
        assert len(rollouts) == 2 and rollouts.max_tokens == 4
        sibling.close()
        assert len(client.generate(PROMPT, n_samples=1)) == 1
    assert [r.body["max_tokens"] for r in completions(sim)] == [4, 4, 8]


# -- client options per call ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("api_key", "another-key"),
        ("cache_dir", "elsewhere"),
        ("max_concurrency", 2),
        ("base_url", "http://127.0.0.1:1/v1"),
        ("timeout", 5.0),
        ("max_retries", 0),
        ("requests_per_minute", 10),
    ],
)
def test_a_client_option_per_call_points_at_with_options_before_any_request(
    sim: FireworksSimulator, tmp_path: Path, name: str, value: Any
) -> None:
    async def main() -> None:
        async with AsyncFireworks(**options(sim, tmp_path)) as client:
            with pytest.raises(ValidationError, match=rf"with_options\({name}=") as info:
                await client.generate(PROMPT, **{name: value})
            assert info.value.argument == name

    run(main())
    assert sim.requests == []
    assert not (tmp_path / "elsewhere").exists()


def test_the_rollouts_drop_in_still_takes_a_key_per_call(sim: FireworksSimulator, tmp_path: Path) -> None:
    client = FireworksClient(
        "qwen-15b",
        api_key="not-the-simulator-key",
        base_url=sim.base_url,
        cache_dir=str(tmp_path / "cache"),
        max_tokens=8,
        progress_bar=False,
        clock=VirtualTime(),
    )
    try:
        with pytest.raises(AuthenticationError):
            client.generate(PROMPT, n_samples=2)
        rollouts = client.generate(PROMPT, n_samples=2, api_key=sim.api_key)
        assert len(rollouts) == 2
        more = client.generate(PROMPT, n_samples=3, api_key=sim.api_key)  # the same sibling, the same cache
        assert [r.cached for r in more] == [True, True, False]
    finally:
        client.close()
    statuses = [r.status for r in completions(sim)]
    assert statuses.count(401) >= 1 and statuses.count(200) == 3


# -- configuration checked up front --------------------------------------------------------------------------


def test_a_bad_cache_dir_fails_at_construction_before_any_request(sim: FireworksSimulator, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for bad in (a_file, a_file / "under"):
        with pytest.raises(ConfigurationError, match="cache_dir") as info:
            AsyncFireworks(**options(sim, tmp_path, cache_dir=str(bad)))
        assert os.fspath(bad) in str(info.value)

    async def main() -> None:
        # Without the cache nothing is checked until a call wants it.
        async with AsyncFireworks(**options(sim, tmp_path, cache_dir=str(a_file), use_cache=False)) as client:
            assert len(await client.generate(PROMPT)) == 1
            with pytest.raises(ConfigurationError, match="cache_dir"):
                await client.generate(PROMPT, use_cache=True, seed=5)

    run(main())
    assert [r.body["seed"] for r in completions(sim)] == [0]


def test_a_model_name_close_to_an_alias_gets_a_hint_first(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncFireworks(**options(sim, tmp_path, model="qwen-1.5b")) as client:
            with pytest.raises(ConfigurationError) as info:
                await client.generate(PROMPT)
        message = str(info.value)
        assert "did you mean 'qwen-15b'?" in message
        assert message.index("did you mean") < message.index("raw=True")

    run(main())
    assert sim.requests == []


def test_a_sibling_that_outlives_its_parent_opens_no_pool_of_its_own(sim: FireworksSimulator, tmp_path: Path) -> None:
    async def main() -> None:
        parent = AsyncFireworks(**options(sim, tmp_path, use_cache=False))
        sibling = parent.with_options(max_retries=1)
        await parent.generate(PROMPT)
        await parent.aclose()
        with pytest.raises(ConfigurationError, match="closed with the client it was derived from"):
            await sibling.generate(PROMPT)
        await sibling.aclose()

    run(main())
