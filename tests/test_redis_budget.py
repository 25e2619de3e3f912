"""The rate budget shared through Redis: real redis-server, real simulator, real worker processes.

The workers (tests/_budget_worker.py) are separate processes, each its own client with ``budget=`` the Redis
URL; the simulator, in this process, enforces the same limits over the same short window (``rate_window``),
so a few seconds cover several windows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from _helpers import SRC, client_for
from _redis import RedisServer
from fw_rollouts import AsyncFireworks, ConfigurationError, Cost, InvalidTypeError, RedisBudget, Spent, ValidationError
from fw_rollouts.testing import Fault, FireworksSimulator

WORKER = Path(__file__).with_name("_budget_worker.py")
WINDOW = 2.0
MARGIN = 0.1


def _environ() -> dict[str, str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return environ


class Workers:
    """Worker processes (tests/_budget_worker.py), started once for the module, each running one job at a time."""

    def __init__(self, count: int) -> None:
        pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        self.procs = [
            subprocess.Popen([sys.executable, str(WORKER)], text=True, env=_environ(), **pipes) for _ in range(count)
        ]

    def _line(self, proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            assert proc.stderr is not None
            pytest.fail("a worker died: " + proc.stderr.read()[-3000:])
        return line

    def _send(self, proc: subprocess.Popen[str], line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    def start(self, configs: list[dict[str, Any]]) -> None:
        """Give each of the first workers its job and wait until they are all ready; then :meth:`go`."""
        self._busy = self.procs[: len(configs)]
        for proc, cfg in zip(self._busy, configs, strict=True):
            self._send(proc, json.dumps(cfg))
        for proc in self._busy:
            assert self._line(proc).strip() == "ready"

    def go(self) -> None:
        for proc in self._busy:
            self._send(proc, "go")

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(self._line(proc)) for proc in self._busy]

    def run(self, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run one job a worker, all let go at once; what each printed at the end."""
        self.start(configs)
        self.go()
        return self.results()

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture(scope="module")
def workers() -> Any:
    fleet = Workers(4)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="module")
def warm() -> Any:
    with FireworksSimulator(record=False) as server:
        yield server


def _config(
    sim: FireworksSimulator, url: str, tmp_path: Path, tag: str, warm: FireworksSimulator | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "warm_url": None if warm is None else warm.base_url,
        "base_url": sim.base_url,
        "api_key": sim.api_key,
        "budget": url,
        "cache_dir": str(tmp_path / tag),
        "tag": tag,
        **extra,
    }


def _rate(results: list[dict[str, Any]], total: float, limit: float, window: float) -> float:
    """What the workers got, as a share of the limit: over the run's windows, the last one begun counted whole
    (a limiter that let through a whole window's worth at once gets no credit for it)."""
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    return float(total / (elapsed / window + 1) / limit)


class _Peak:
    """The most the simulator counted in its window while the workers ran (sampled every 20 ms, on a thread)."""

    def __init__(self, sim: FireworksSimulator, meter: str) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sim, meter), daemon=True)

    def _run(self, sim: FireworksSimulator, meter: str) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, sim.limits_used()[meter])

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def redis() -> Any:
    with RedisServer() as server:
        yield server


# -- many processes, one budget ------------------------------------------------------------------------------


def test_four_workers_share_a_request_budget_without_a_429(
    redis: RedisServer, warm: FireworksSimulator, workers: Workers, tmp_path: Path
) -> None:
    limit = 24  # requests per WINDOW seconds, for the four together
    url = f"{redis.url}?name=rpm&window={WINDOW}&margin={MARGIN}"
    with FireworksSimulator(requests_per_minute=limit, rate_window=WINDOW, record=False) as sim:
        # Three windows' worth: the run covers three windows (two of waiting), as the first goes at once.
        configs = [
            _config(sim, url, tmp_path, f"w{i}", warm, prompts=3 * limit // 4, n=1, max_concurrency=4,
                    limits={"requests_per_minute": limit})
            for i in range(4)
        ]  # fmt: skip
        with _Peak(sim, "requests") as peak:
            results = workers.run(configs)
        counts = sim.limits_counts()
    assert sum(r["samples"] for r in results) == 3 * limit
    assert counts == {"admitted": 3 * limit, "refused": 0}
    assert sim.status_counts[429] == 0
    # The budget fills most of the server's window: each request holds its place from admission to a window after
    # its reply, so the latency on two loaded cores is lost here (bench.shared_budget measures the rate over the
    # real 60 s window: 0.94).
    assert peak.peak >= 0.75 * limit
    # A request counts from its reply, so each holds its place a window plus its own latency, long here where
    # the simulator answers one request at a time on two loaded cores: a floor against pointless waiting only.
    assert _rate(results, counts["admitted"], limit, WINDOW) >= 0.3
    # Not faster than the limit either: three windows' worth needs two windows of waiting.
    assert max(r["end"] for r in results) - min(r["start"] for r in results) >= 2 * WINDOW


def test_a_generated_token_budget_is_shared_too_counting_each_choice(
    redis: RedisServer, warm: FireworksSimulator, workers: Workers, tmp_path: Path
) -> None:
    tokens = 8
    limit = 16 * tokens  # generated tokens per WINDOW: 16 choices of max_tokens
    url = f"{redis.url}?name=tpm&window={WINDOW}&margin={MARGIN}"
    with FireworksSimulator(generated_tokens_per_minute=limit, rate_window=WINDOW, record=False) as sim:
        # Three windows' worth, two choices a request.
        configs = [
            _config(sim, url, tmp_path, f"t{i}", warm, prompts=6, n=2, k=2, max_tokens=tokens, max_concurrency=4,
                    limits={"generated_tokens_per_minute": limit})
            for i in range(4)
        ]  # fmt: skip
        with _Peak(sim, "generated_tokens") as peak:
            results = workers.run(configs)
        counts = sim.limits_counts()
    assert sum(r["samples"] for r in results) == 48
    assert counts == {"admitted": 24, "refused": 0}  # two choices a request
    assert sim.status_counts[429] == 0
    assert peak.peak >= 0.75 * limit
    assert _rate(results, 48 * tokens, limit, WINDOW) >= 0.3


def test_one_workers_429_makes_every_worker_wait(redis: RedisServer, workers: Workers, tmp_path: Path) -> None:
    url = f"{redis.url}?name=cool&window={WINDOW}"

    async def waits() -> tuple[float, float]:
        # This process shares the worker's namespace: its cool-down holds us back; another namespace's does not.
        shared, other = RedisBudget(url), RedisBudget(url, name="elsewhere")
        try:
            start = time.monotonic()
            other.release(await other.acquire(Cost(1, 1)))
            free = time.monotonic() - start
            shared.release(await shared.acquire(Cost(1, 1)))
            return free, time.monotonic() - seen  # when we got in, from when the 429 was seen
        finally:
            await shared.aclose()
            await other.aclose()

    with FireworksSimulator(record=False) as sim:
        sim.faults.push(Fault.status(429, retry_after=3))
        workers.start([_config(sim, url, tmp_path, "c", prompts=1, n=1, limits={})])
        workers.go()
        deadline = time.monotonic() + 20
        while sim.status_counts[429] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sim.status_counts[429] == 1
        seen = time.monotonic()
        time.sleep(0.3)  # the worker's cool-down reaches Redis a moment after its 429 (on a loaded machine)
        free, held = asyncio.run(waits())
        (result,) = workers.results()
    assert free < 0.5
    assert 2.0 < held < 4.5  # the worker's 3 s, counted from when the simulator had sent its 429
    assert result["samples"] == 1


KILLED = """
import asyncio, sys
from fw_rollouts import RedisBudget
from fw_rollouts import Cost

async def main():
    budget = RedisBudget(sys.argv[1], requests_per_minute=20, max_concurrency=64)
    tickets = [await budget.acquire(Cost(10, 5)) for _ in range(20)]
    print("held", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_killed_worker_leaks_nothing_beyond_the_window(redis: RedisServer) -> None:
    window = 1.5
    url = f"{redis.url}?name=killed&window={window}&margin=0.1"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environ()
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        killed_at = time.monotonic()
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    async def main() -> tuple[dict[str, float], float, dict[str, float], list[int]]:
        import redis.asyncio

        budget = RedisBudget(url, requests_per_minute=20, max_concurrency=64)
        try:
            held = await budget.used()
            # The whole limit is taken by the dead worker: the next request waits for its reservations to expire.
            budget.release(await budget.acquire(Cost(10, 5)), Spent(10, 0, 5, 1))
            waited = time.monotonic() - killed_at
            after = await budget.used()
            client = redis.asyncio.from_url(redis_url)
            try:
                ttls = [await client.pttl(key) for key in budget._keys]
            finally:
                await client.aclose()
            return held, waited, after, ttls
        finally:
            await budget.aclose()

    redis_url = redis.url
    held, waited, after, ttls = asyncio.run(main())
    assert held["requests"] == 20 and held["generated_tokens"] == 100
    assert waited < window + 0.1 + 2.0 + 1.5  # the window, the margin, the dead worker's lease, slack
    assert after["requests"] == 1  # only ours: the dead worker's are gone
    assert all(0 < ttl <= (window + 0.1 + 2 + 10) * 1000 for ttl in ttls if ttl != -2)  # an idle namespace disappears


def test_a_redis_restart_mid_run_warns_once_loses_nothing_and_shares_again(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    window, limit = 1.0, 20
    url = f"{redis_server.url}?name=restart&window={window}&margin=0.1"

    async def main(sim: FireworksSimulator) -> tuple[int, bool, float, dict[str, float]]:
        async with client_for(
            sim, tmp_path, budget=url, requests_per_minute=limit, use_cache=False, max_tokens=4, max_concurrency=4
        ) as client:
            restart = asyncio.create_task(asyncio.to_thread(redis_server.restart, down_for=1.0))
            await asyncio.sleep(0.3)
            results = await client.generate_many([f"p{i}" for i in range(50)])
            await restart
            budget = await client._services.budget.get()
            assert isinstance(budget, RedisBudget)
            on_its_own = budget.shared
            deadline = time.monotonic() + 10
            while not budget.shared and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            # Back to sharing: the next requests are counted in Redis again.
            await client.generate_many([f"q{i}" for i in range(5)])
            used = await budget.used()
            return sum(len(r) for r in results), on_its_own, time.monotonic(), used

    with caplog.at_level(logging.WARNING, logger="fw_rollouts"), FireworksSimulator(
        requests_per_minute=limit, rate_window=window, record=False
    ) as sim:
        samples, _, _, used = asyncio.run(main(sim))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "fw_rollouts.ratelimit"]
    assert samples == 50
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unreachable" in warnings[0].getMessage()
    assert used["requests"] >= 5


# -- arguments, URLs, the password -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"tokens_per_minute": -1.0}, "tokens_per_minute"),
        ({"prompt_tokens_per_minute": float("nan")}, "prompt_tokens_per_minute"),
        ({"generated_tokens_per_minute": "10"}, "generated_tokens_per_minute"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 2.5}, "max_concurrency"),
        ({"name": ""}, "name"),
        ({"name": "a b"}, "name"),
        ({"window": 0}, "window"),
        ({"window": float("inf")}, "window"),
        ({"margin": -0.1}, "margin"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValidationError) as info:
        RedisBudget("redis://127.0.0.1:6379/0", **kwargs)
    assert info.value.argument == argument
    assert argument in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/0",
        "redis://",
        "redis://:hunter2secret@127.0.0.1:notaport/0",
        "redis://:hunter2secret@127.0.0.1:6379/zero",
        "redis://:hunter2secret@127.0.0.1:6379/0?window=-1",
        "redis://:hunter2secret@127.0.0.1:6379/0?margin=x",
        "sqlite:///tmp/x",
    ],
)
def test_bad_urls_are_refused_before_any_request_without_the_password(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as direct:
        RedisBudget(url)
    with pytest.raises(ValidationError) as info:
        AsyncFireworks("qwen-15b", api_key="k", cache_dir=str(tmp_path), budget=url)
    assert info.value.argument.startswith("budget")
    if "?" not in url:
        assert "Redis URL" in str(info.value) and "Budget" in str(info.value)
    for error in (direct.value, info.value):
        assert "hunter2secret" not in str(error) and "hunter2secret" not in repr(error.value)


def test_budget_must_be_a_budget_a_redis_url_or_none(tmp_path: Path) -> None:
    with pytest.raises(InvalidTypeError) as info:
        AsyncFireworks("qwen-15b", api_key="k", cache_dir=str(tmp_path), budget=42)  # type: ignore[arg-type]
    assert info.value.argument == "budget" and "Redis URL" in str(info.value)


def test_the_password_never_shows(redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-pass-word"
    # A server that is not there: the warning names the location, never the password.
    url = f"redis://user:{secret}@127.0.0.1:1/0?name=pw"
    budget = RedisBudget(url, requests_per_minute=10)
    assert secret not in budget.location and "user:[REDACTED]@127.0.0.1:1/0" in budget.location
    assert secret not in repr(budget)

    async def main() -> None:
        try:
            budget.release(await budget.acquire(Cost(1, 1)), None)  # falls back to the in-process limiter
            assert not budget.shared
            assert secret not in repr(budget)
            with pytest.raises(Exception) as info:
                await budget.used()
            assert secret not in str(info.value)
        finally:
            await budget.aclose()

    with caplog.at_level(logging.DEBUG, logger="fw_rollouts"):
        asyncio.run(main())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "unreachable" in text and "127.0.0.1:1" in text and secret not in text


def test_a_client_given_a_url_makes_and_closes_a_shared_budget_with_its_limits(
    redis: RedisServer, tmp_path: Path
) -> None:
    url = f"{redis.url}?name=client&window=2"

    async def main(sim: FireworksSimulator) -> None:
        async with client_for(sim, tmp_path, budget=url, requests_per_minute=7, max_concurrency=3) as client:
            await client.generate("hi", n_samples=2, max_tokens=2, use_cache=False)
            budget = await client._services.budget.get()
            assert isinstance(budget, RedisBudget)
            assert (budget.name, budget.window, budget.requests_per_minute, budget.max_concurrency) == (
                "client", 2.0, 7.0, 3
            )
            assert (await budget.used())["requests"] == 2
            # A sibling with other limits keeps the URL (a new budget in the same namespace); one without shares it.
            same = client.with_options(temperature=0.1)
            assert await same._services.budget.get() is budget
            other = client.with_options(requests_per_minute=5)
            theirs = await other._services.budget.get()
            assert isinstance(theirs, RedisBudget) and theirs is not budget and theirs.requests_per_minute == 5.0
            await other.aclose()
            plain = client.with_options(budget=None, requests_per_minute=4)
            assert isinstance(await plain._services.budget.get(), RedisBudget)
            await plain.aclose()
        with pytest.raises(ConfigurationError):
            await client._services.budget.get()

    with FireworksSimulator() as sim:
        asyncio.run(main(sim))


def test_the_sync_client_takes_a_url(redis: RedisServer, tmp_path: Path) -> None:
    from fw_rollouts import Fireworks

    url = f"{redis.url}?name=sync&window=2"
    with FireworksSimulator() as sim, Fireworks(
        "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, cache_dir=str(tmp_path), progress_bar=False,
        budget=url, requests_per_minute=50,
    ) as client:  # fmt: skip
        assert len(client.generate("hi", n_samples=3, max_tokens=2, use_cache=False)) == 3

    async def used() -> float:
        budget = RedisBudget(url)
        try:
            return (await budget.used())["requests"]
        finally:
            await budget.aclose()

    assert asyncio.run(used()) == 3


def test_the_services_lower_limit_from_its_headers_binds_every_worker(redis: RedisServer, tmp_path: Path) -> None:
    url = f"{redis.url}?name=headers&window=3"

    async def main(sim: FireworksSimulator) -> int:
        # One client learns the service's limit (10 a window, below our 1000) from a reply's x-ratelimit-* headers.
        async with client_for(sim, tmp_path, budget=url, requests_per_minute=1000) as client:
            await client.generate("hi", n_samples=1, max_tokens=2, use_cache=False)
        await asyncio.sleep(0.2)  # the settle that carries it goes on its own task; aclose waited for it
        # Another budget of the namespace, itself allowing 1000, gets only what is left of the service's 10.
        other = RedisBudget(url, requests_per_minute=1000)
        admitted = 0
        try:
            while True:
                try:
                    await asyncio.wait_for(other.acquire(Cost(1, 1)), 0.5)
                except asyncio.TimeoutError:
                    return admitted
                admitted += 1
        finally:
            await other.aclose()

    with FireworksSimulator(requests_per_minute=10, rate_window=3, ratelimit_headers=True, record=False) as sim:
        assert asyncio.run(main(sim)) == 9
