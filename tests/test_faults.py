"""Nothing lost under faults: retries, Retry-After, the shared cool-down, timeouts, partial failure.

Everything runs over real loopback HTTP against the simulated server. Retry waits and
cool-downs run on virtual time (tests/_virtual_time.py) unless a test measures real time.
Every test runs twice: through the default transport and through ``AsyncOpenAI.post``
(``FW_ROLLOUTS_TRANSPORT=openai``), which must fail in exactly the same ways.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from _virtual_time import VirtualTime
from fw_rollouts import (
    APITimeoutError,
    AsyncFireworks,
    BadRequestError,
    FwRollouts,
    MalformedResponseError,
    MissingLogprobsError,
    RateLimitError,
    ServerError,
)
from fw_rollouts._store import DiskStore
from fw_rollouts.testing import DEFAULT_RANDOM_KINDS, Fault, FireworksSimulator

# Every test here runs over both transports.
pytestmark = pytest.mark.usefixtures("transport_path")


def make(sim: FireworksSimulator, tmp_path: Path, clock: VirtualTime | None = None, **options: Any) -> AsyncFireworks:
    options.setdefault("model", "qwen-15b")
    options.setdefault("max_tokens", 16)
    options.setdefault("progress_bar", False)
    options.setdefault("cache_dir", str(tmp_path / "cache"))
    return AsyncFireworks(base_url=sim.base_url, api_key=sim.api_key, clock=clock, **options)


def completions(sim: FireworksSimulator, prompt: str | None = None) -> list[Any]:
    """Completions requests the server saw, for one test's prompt: a previous test's abandoned
    requests may still reach the shared server after it was reset."""
    return [
        r
        for r in sim.requests
        if r.path.endswith("/completions") and (prompt is None or prompt in (r.body or {}).get("prompt", ""))
    ]


def cache_entries(directory: Path) -> int:
    async def count() -> int:
        async with DiskStore(directory) as store:
            return (await store.stats()).entries

    return asyncio.run(count())


def test_2000_samples_through_a_20_percent_fault_storm(sim: FireworksSimulator, tmp_path: Path) -> None:
    kinds = (*DEFAULT_RANDOM_KINDS, Fault.slow(1.0))  # slow past the client's timeout, too
    sim.faults.random(0.2, kinds=kinds, seed=7)
    clock = VirtualTime()
    client = make(sim, tmp_path, clock, max_retries=12, timeout=0.3, max_concurrency=128)

    async def main() -> FwRollouts:
        async with client:
            return await client.generate("Storm", n_samples=2000)

    started = time.perf_counter()
    rollouts = asyncio.run(main())
    elapsed = time.perf_counter() - started
    sim.faults.clear()

    assert len(rollouts) == 2000
    assert [r.seed for r in rollouts] == list(range(2000))  # every sample, once, in order
    assert all(r.logprobs is not None and len(r.logprobs) > 0 for r in rollouts)
    counts = sim.status_counts
    faulted = sum(n for status, n in counts.items() if status != 200)
    total = sum(counts.values())
    assert 0.1 < faulted / total < 0.3, counts
    assert counts[429] > 0 and counts["reset"] > 0 and counts[503] > 0
    # Faults of every class were met and survived; retries waited on virtual time only.
    assert clock.sleeps and elapsed < 60
    assert cache_entries(tmp_path / "cache") == 2000 + 1  # exactly the successes and the prompt's part, nothing else

    sim.reset()

    async def again() -> FwRollouts:
        async with make(sim, tmp_path) as second:
            return await second.generate("Storm", n_samples=2000)

    rerun = asyncio.run(again())
    assert completions(sim, "Storm") == []  # all from the cache
    assert [r.full for r in rerun] == [r.full for r in rollouts]


def test_failures_are_never_cached_and_a_rerun_fetches_only_the_missing(
    sim: FireworksSimulator, tmp_path: Path
) -> None:
    sim.faults.random(0.3, kinds=[500, 503, "reset", "truncated", "malformed"], seed=3)
    clock = VirtualTime()

    async def first() -> BaseException:
        async with make(sim, tmp_path, clock, max_retries=0) as client:
            with pytest.raises((ServerError, MalformedResponseError, Exception)) as info:
                await client.generate("Partial", n_samples=200)
            return info.value

    error = asyncio.run(first())
    assert error.rollouts is not None and error.errors  # type: ignore[attr-defined]
    succeeded = {r.seed for r in error.rollouts}  # type: ignore[attr-defined]
    failed = set(error.errors)  # type: ignore[attr-defined]
    assert succeeded | failed == set(range(200)) and not succeeded & failed
    assert 20 < len(failed) < 120
    assert cache_entries(tmp_path / "cache") == len(succeeded) + 1  # and the prompt's echoed part, once
    assert "samples failed" in str(error) and "re-run" in str(error)

    sim.reset()

    async def second() -> FwRollouts:
        async with make(sim, tmp_path, clock, max_retries=0) as client:
            return await client.generate("Partial", n_samples=200)

    rollouts = asyncio.run(second())
    assert sorted(r.body["seed"] for r in completions(sim, "Partial")) == sorted(failed)
    assert len(rollouts) == 200 and [r.cached for r in rollouts] == [s in succeeded for s in range(200)]


def test_storm_of_429s_cools_the_whole_client_down(tmp_path: Path) -> None:
    # Every request is refused for 0.8 s; the server asks for 1 s. With the shared cool-down only the
    # first wave meets the 429s: nobody else starts until the Retry-After has passed.
    with FireworksSimulator() as server:
        server.faults.random(1.0, kinds=[Fault.status(429, retry_after="1")])
        timer = threading.Timer(0.8, server.faults.clear)
        timer.start()

        async def main() -> list[FwRollouts]:
            # Four calls share the client's 16 slots: a request sleeping before its retry frees its slot.
            async with make(server, tmp_path, max_concurrency=16, use_cache=False) as client:
                return await asyncio.gather(*(client.generate(f"Cool down {i}", n_samples=16) for i in range(4)))

        started = time.perf_counter()
        results = asyncio.run(main())
        elapsed = time.perf_counter() - started
        timer.join()
        count_429 = server.status_counts[429]
    assert [len(r) for r in results] == [16] * 4
    # Without the cool-down every one of the 64 samples meets the storm at least once.
    assert 1 <= count_429 <= 24, f"{count_429} 429s: the storm turned into a storm of retries"
    assert elapsed >= 1.0  # everybody waited for the Retry-After


@pytest.mark.parametrize(
    ("fault", "minimum_wait"),
    [
        (Fault.status(429, retry_after="2"), 2.0),
        (Fault.status(429, retry_after="1.5", shape="string"), 1.5),
        (Fault.status(503, retry_after_ms="700"), 0.7),
        (Fault.status(429, retry_after=timedelta(seconds=30)), 25.0),
    ],
)
def test_retry_after_in_every_form_is_a_floor(
    sim: FireworksSimulator, tmp_path: Path, fault: Fault, minimum_wait: float
) -> None:
    sim.faults.push(fault)
    clock = VirtualTime()

    async def main() -> FwRollouts:
        async with make(sim, tmp_path, clock, use_cache=False) as client:
            return await client.generate("Wait for it", n_samples=1)

    assert len(asyncio.run(main())) == 1
    assert len(completions(sim, "Wait for it")) == 2
    assert clock.sleeps and max(clock.sleeps) >= minimum_wait
    assert max(clock.sleeps) <= minimum_wait + 10  # a floor, not an invitation to wait forever


def test_a_retry_after_longer_than_we_wait_is_raised_at_once(sim: FireworksSimulator, tmp_path: Path) -> None:
    sim.faults.push(Fault.status(429, retry_after="86400"))

    async def main() -> None:
        async with make(sim, tmp_path, VirtualTime(), use_cache=False) as client:
            await client.generate("Come back tomorrow", n_samples=3)

    with pytest.raises(RateLimitError) as info:
        asyncio.run(main())
    assert "86400" in str(info.value) and "not retried" in str(info.value)
    assert len(completions(sim, "Come back tomorrow")) <= 3  # nothing retried; the call stopped


def test_x_should_retry_overrides_the_status(sim: FireworksSimulator, tmp_path: Path) -> None:
    sim.faults.push(Fault.status(400, should_retry=True))

    async def retried() -> FwRollouts:
        async with make(sim, tmp_path, VirtualTime(), use_cache=False) as client:
            return await client.generate("Retry a 400", n_samples=1)

    assert len(asyncio.run(retried())) == 1 and len(completions(sim, "Retry a 400")) == 2

    sim.reset()
    sim.faults.push(Fault.status(503, should_retry=False))

    async def not_retried() -> None:
        async with make(sim, tmp_path, VirtualTime(), use_cache=False) as client:
            await client.generate("Do not retry a 503", n_samples=1)

    with pytest.raises(ServerError) as info:
        asyncio.run(not_retried())
    assert info.value.attempts == 1 and len(completions(sim, "Do not retry a 503")) == 1


def test_slow_responses_time_out_per_attempt_and_are_retried(sim: FireworksSimulator, tmp_path: Path) -> None:
    sim.faults.push(Fault.slow(3.0), Fault.slow(3.0))

    async def main() -> FwRollouts:
        async with make(sim, tmp_path, VirtualTime(), use_cache=False, timeout=0.25) as client:
            return await client.generate("Slow", n_samples=1)

    started = time.perf_counter()
    assert len(asyncio.run(main())) == 1
    assert time.perf_counter() - started < 2.0
    assert len(completions(sim, "Slow")) == 3

    sim.reset()
    sim.faults.push(*[Fault.slow(3.0)] * 3)

    async def gives_up() -> None:
        async with make(sim, tmp_path, VirtualTime(), use_cache=False, timeout=0.2, max_retries=2) as client:
            await client.generate("Too slow", n_samples=1)

    with pytest.raises(APITimeoutError) as info:
        asyncio.run(gives_up())
    assert info.value.attempts == 3 and "0.2" in str(info.value)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("nested", "exceeded your usage limits"),
        ("flat", "exceeded your usage limits"),
        ("string", "Too Many Requests: You have exceeded"),
        ("html", "HTTP 429"),
        ("empty", "HTTP 429"),
    ],
)
def test_final_error_carries_status_request_id_attempts_and_message(
    sim: FireworksSimulator, tmp_path: Path, shape: str, expected: str
) -> None:
    sim.faults.push(*[Fault.status(429, shape=shape)] * 3)  # type: ignore[arg-type]

    async def main() -> None:
        async with make(sim, tmp_path, VirtualTime(), use_cache=False, max_retries=2) as client:
            await client.generate("Shapes", n_samples=1)

    with pytest.raises(RateLimitError) as info:
        asyncio.run(main())
    error = info.value
    assert error.status_code == 429 and error.attempts == 3
    assert error.request_id  # from x-request-id
    assert expected in str(error) and "after 3 attempts" in str(error)
    assert type(error).__module__ == "fw_rollouts"  # ours, never tenacity.RetryError


def test_every_fault_class_is_retried(sim: FireworksSimulator, tmp_path: Path) -> None:
    faults = [
        Fault.status(408), Fault.status(409), Fault.status(425), Fault.status(500), Fault.status(502, shape="html"),
        Fault.status(504, shape="empty"), Fault.reset(), Fault.reset_mid_body(), Fault.truncated(),
        Fault.malformed("html"), Fault.malformed("wrong_shape"), Fault.malformed("empty"),
    ]  # fmt: skip
    sim.faults.push(*faults)

    async def main() -> FwRollouts:
        async with make(sim, tmp_path, VirtualTime(), use_cache=False, max_retries=len(faults)) as client:
            return await client.generate("Every fault", n_samples=1)

    assert len(asyncio.run(main())) == 1
    assert len(completions(sim, "Every fault")) == len(faults) + 1


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422])
def test_client_errors_are_never_retried(sim: FireworksSimulator, tmp_path: Path, status: int) -> None:
    sim.faults.push(Fault.status(status))

    async def main() -> None:
        async with make(sim, tmp_path, VirtualTime(), use_cache=False) as client:
            await client.generate(f"No {status}", n_samples=5)

    with pytest.raises(Exception) as info:
        asyncio.run(main())
    assert getattr(info.value, "status_code", None) == status
    assert info.value.attempts == 1  # type: ignore[attr-defined]
    # The call stops at once: the other samples are not sent after the first permanent error.
    assert len(completions(sim, f"No {status}")) <= 5


class _NoLogprobsHandler(http.server.BaseHTTPRequestHandler):
    """A completions server that ignores ``logprobs`` (as some OpenAI-compatible servers do)."""

    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps(
            {"id": "x", "object": "text_completion", "created": 0, "model": "m",
             "choices": [{"index": 0, "text": " four", "finish_reason": "stop", "logprobs": None}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
        ).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_server_without_logprobs_stops_the_call_after_one_sample(tmp_path: Path) -> None:
    _NoLogprobsHandler.requests = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoLogprobsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:

        async def main() -> None:
            client = AsyncFireworks(
                model="tiny", base_url=base_url, api_key="k", raw=True, use_cache=False, progress_bar=False,
                max_retries=2, max_concurrency=1, clock=VirtualTime(),
            )  # fmt: skip
            async with client:
                await client.generate("2+2=", n_samples=50)

        with pytest.raises(MissingLogprobsError) as info:
            asyncio.run(main())
    finally:
        server.shutdown()
    assert info.value.attempts == 3
    assert _NoLogprobsHandler.requests == 3  # one sample's retries, then the call stopped
    assert "does this server support logprobs" in str(info.value)


def test_bad_bodies_exhaust_into_a_clear_error(sim: FireworksSimulator, tmp_path: Path) -> None:
    sim.faults.push(*[Fault.malformed("html")] * 3)

    async def main() -> None:
        async with make(sim, tmp_path, VirtualTime(), use_cache=False, max_retries=2) as client:
            await client.generate("Garbage", n_samples=1)

    with pytest.raises(MalformedResponseError) as info:
        asyncio.run(main())
    assert info.value.attempts == 3 and "not valid JSON" in str(info.value)


def test_status_errors_raise_our_classes(sim: FireworksSimulator, tmp_path: Path) -> None:
    sim.faults.push(Fault.status(400, message="prompt too long"))

    async def main() -> None:
        async with make(sim, tmp_path, use_cache=False) as client:
            await client.generate("x-status-errors")

    with pytest.raises(BadRequestError, match="prompt too long"):
        asyncio.run(main())
    assert Counter(r.status for r in completions(sim, "x-status-errors")) == Counter({400: 1})
