"""Interrupting a large generate: task cancellation, ``asyncio.wait_for`` timeouts and Ctrl-C in the sync facade.

Every test stops a run part way through, over real loopback HTTP to the simulated server (with latency, and
with ``Fault.slow`` replies so that requests are surely in flight), then checks what the issue asks for: the
call ends within a second, the abandoned requests' connections are closed and no request starts afterwards,
the cache holds only complete entries, and a re-run fetches exactly the missing seeds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from _helpers import client_options
from _helpers import read_cache as shared_read_cache
from fw_rollouts import AsyncFireworks, Fireworks, FwResponse, FwRollouts, Settings
from fw_rollouts._cache_key import CacheKeyer
from fw_rollouts._runner import CANCEL_GRACE
from fw_rollouts.testing import Fault, FireworksSimulator, RecordedRequest

LATENCY = 0.2
"""Seconds the simulator takes per reply: long enough that a full window of requests is always in flight."""
CONCURRENCY = 16
SLOW = 4
"""Requests that get a ``Fault.slow`` reply after the first two rounds: surely still in flight when we interrupt."""
STOPPED_WITHIN = 1.0
"""The issue's bound: in-flight requests stop within a second of the interruption."""
PROMPT = "Name a prime number and say why it is prime."
RENDERED = f"<｜begin▁of▁sentence｜><｜User｜>{PROMPT}<｜Assistant｜><think>\n"
"""The prompt string sent for PROMPT (qwen-15b's chat template), which the prompt's cached part is of."""


@pytest.fixture
def sim() -> Iterator[FireworksSimulator]:
    with FireworksSimulator(latency=LATENCY) as server:
        yield server


@contextmanager
def restarted_without_latency(sim: FireworksSimulator) -> Iterator[FireworksSimulator]:
    """The server restarted on the same address (the cache key holds the endpoint), now without latency:
    the re-run checks which seeds are requested, and need not wait for them."""
    port = sim.port
    sim.stop()
    with FireworksSimulator(port=port) as again:
        yield again


def slow_after_two_rounds(sim: FireworksSimulator) -> None:
    """Answer the first two rounds normally, then hold the next ``SLOW`` requests for far longer than a test."""
    sim.faults.push(*[Fault.ok()] * (2 * CONCURRENCY), *[Fault.slow(60)] * SLOW)


def completions(sim: FireworksSimulator) -> list[RecordedRequest]:
    return [r for r in sim.requests if r.path.endswith("/completions")]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.01)


def count_entries(cache_dir: Path) -> int:
    """Samples in the cache (not the prompt's echoed part, stored once beside them), read through a read-only
    SQLite connection: the test must not take any lock the client it watches could wait for."""
    database = cache_dir / "cache.db"
    if not database.exists():
        return 0
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        ((count,),) = connection.execute(
            "SELECT count(*) FROM Cache WHERE value IS NULL OR substr(value, 1, 4) != X'46575052'"
        ).fetchall()
    finally:
        connection.close()
    return int(count)


def read_cache(cache_dir: Path) -> dict[str, FwResponse]:
    """Every entry of the cache, each one whole sample, with no seed twice."""
    entries: dict[str, FwResponse] = shared_read_cache(cache_dir, RENDERED)
    assert len({sample.seed for sample in entries.values()}) == len(entries)
    return entries


def assert_resumed(
    sim: FireworksSimulator, settings: Settings, before: dict[str, FwResponse], rollouts: FwRollouts, n: int
) -> None:
    """The re-run asked the server for exactly the seeds missing from ``before`` and returned all ``n`` in order."""
    cached: dict[int, FwResponse] = {}
    for sample in before.values():
        assert sample.seed is not None  # the client seeds every sample it caches
        cached[sample.seed] = sample
    assert 0 < len(cached) < n
    keyer = CacheKeyer(settings.resolved_base_url, settings.key_body(rollouts.prompt_text))
    assert set(before) == {keyer(seed) for seed in cached}  # each entry sits under its own seed's key
    requested = sorted(r.body["seed"] for r in completions(sim) if r.body is not None)
    assert requested == sorted(set(range(n)) - set(cached))
    assert len(rollouts) == n and [r.seed for r in rollouts] == list(range(n))
    for response in rollouts:
        if response.seed in cached:
            # The same sample as the entry (read_cache decodes with the user's prompt, not the rendered one).
            assert response.cached and response == dataclasses.replace(cached[response.seed], prompt=response.prompt)
        else:
            assert not response.cached and response.logprobs is not None
    assert count_entries(Path(settings.cache_dir)) == n


def held_requests_ended(sim: FireworksSimulator) -> bool:
    """Whether every held request has ended (the simulator records a request when it ends)."""
    return len([r for r in sim.requests if r.fault == "slow"]) == SLOW


def assert_abandoned_requests_closed(sim: FireworksSimulator) -> None:
    """The held requests ended because the client hung up, not because their reply went out, and only
    requests in flight at the interruption were abandoned."""
    slow = [r for r in sim.requests if r.fault == "slow"]
    assert len(slow) == SLOW and all(r.status == 0 for r in slow)
    counts = sim.status_counts
    assert set(counts) <= {200, "client_closed"} and SLOW <= counts["client_closed"] <= CONCURRENCY


def test_cancelling_an_async_generate_stops_at_once_and_a_rerun_resumes(
    sim: FireworksSimulator, tmp_path: Path
) -> None:
    n = 200
    cache_dir = tmp_path / "cache"
    slow_after_two_rounds(sim)

    async def interrupted() -> tuple[float, float, int, int]:
        client = AsyncFireworks(**client_options(sim, cache_dir, CONCURRENCY))
        task = asyncio.create_task(client.generate(PROMPT, n_samples=n))
        await until(lambda: sim.faults.pending == 0, "the held requests to reach the server")
        await until(lambda: count_entries(cache_dir) >= 2 * CONCURRENCY, "the first two rounds in the cache")
        assert not task.done()
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - cancelled_at
        # The held replies are a minute away: only the client hanging up ends those requests now.
        await until(lambda: held_requests_ended(sim), "the held requests to end", timeout=10)
        closed = time.monotonic() - cancelled_at
        answered = sim.status_counts[200]
        # Longer than a reply takes: a request sent after the cancel, or left open by it, would be answered.
        await asyncio.sleep(3 * LATENCY)
        later = sim.status_counts[200]
        await client.aclose()
        return took, closed, answered, later

    took, closed, answered, later = asyncio.run(interrupted())
    assert took < STOPPED_WITHIN
    assert closed < STOPPED_WITHIN  # by the cancel itself, before aclose
    assert later == answered == sim.status_counts[200]
    assert_abandoned_requests_closed(sim)

    before = read_cache(cache_dir)
    assert 2 * CONCURRENCY <= len(before) <= sim.status_counts[200]
    opts = client_options(sim, cache_dir, CONCURRENCY)

    async def rerun() -> tuple[FwRollouts, Settings]:
        async with AsyncFireworks(**opts) as client:
            return await client.generate(PROMPT, n_samples=n), client.settings

    with restarted_without_latency(sim) as again:
        rollouts, settings = asyncio.run(rerun())
        assert_resumed(again, settings, before, rollouts, n)


def reply_arrived(spawned: set[asyncio.Task[Any]]) -> bool:
    """Whether a task the call spawned has finished with a result (a worker returns None): a reply is in."""
    return any(t.done() and not t.cancelled() and t.exception() is None and t.result() is not None for t in spawned)


def test_cancel_that_lands_as_a_reply_arrives_is_not_lost(tmp_path: Path) -> None:
    """Cancel in the very loop pass a request's reply is in but its worker has not resumed yet, again and again.

    Before 3.12, ``asyncio.wait_for`` (around each request) then returns the reply instead of raising the
    cancel; the worker that loses its cancel that way must still stop, not go on draining the queue.
    """
    trials = 8
    latency = 0.05
    durations: list[float] = []

    async def main(sim: FireworksSimulator) -> tuple[int, int]:
        async with AsyncFireworks(
            model="qwen-15b", base_url=sim.base_url, api_key=sim.api_key, use_cache=False,
            max_concurrency=CONCURRENCY, max_tokens=16, progress_bar=False,
        ) as client:  # fmt: skip
            for trial in range(trials):
                task = asyncio.create_task(client.generate(PROMPT, n_samples=4 * CONCURRENCY, seed=1000 * trial))
                ours = {task, asyncio.current_task()}
                spawned: set[asyncio.Task[Any]] = set()
                answered = sim.status_counts[200]
                # Spin, looking at the call's tasks on every pass (or, where requests run in no task of
                # their own, at least cancel as a round of replies comes back).
                deadline = time.monotonic() + 30
                while not reply_arrived(spawned) and sim.status_counts[200] < answered + CONCURRENCY:
                    if task.done():
                        task.result()  # raises what ended the call early
                        pytest.fail("the call finished before it could be cancelled")
                    assert time.monotonic() < deadline, f"no reply in 30s; server counts {sim.status_counts}"
                    spawned |= asyncio.all_tasks() - ours
                    await asyncio.sleep(0)
                cancelled_at = time.monotonic()
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=STOPPED_WITHIN)
                durations.append(time.monotonic() - cancelled_at if done else float("inf"))
                if not done:  # report below, without waiting for the lost cancel to drain the queue
                    task.cancel()
                    await asyncio.wait({task}, timeout=10)
                assert task.cancelled()
            answered = sim.status_counts[200]
            await asyncio.sleep(3 * latency)
            return answered, sim.status_counts[200]

    with FireworksSimulator(latency=latency, record=False) as fast:
        answered, later = asyncio.run(main(fast))
    slow = [d for d in durations if d >= STOPPED_WITHIN]
    assert not slow, f"{len(slow)} of {trials} cancels did not end the call within {STOPPED_WITHIN:g}s"
    assert later == answered  # the connections were closed, not left to be answered


@pytest.mark.filterwarnings("error::ResourceWarning")
@pytest.mark.parametrize("closing", ["async with", "at asyncio.run shutdown"])
def test_wait_for_timeout_cancels_cleanly(
    sim: FireworksSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    closing: str,
) -> None:  # fmt: skip
    n = 200
    timeout = 1.0
    cache_dir = tmp_path / "cache"
    # One round answered, then every worker waits on a held reply: connections are open when the timeout fires.
    sim.faults.push(*[Fault.ok()] * CONCURRENCY, *[Fault.slow(60)] * CONCURRENCY)
    unraisable: list[Any] = []  # what __del__ methods raised: ResourceWarning is an error here
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    loop_errors: list[dict[str, Any]] = []  # "Task was destroyed but it is pending!", "Unclosed client session"...

    async def main() -> float:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: loop_errors.append(context))
        client = AsyncFireworks(**client_options(sim, cache_dir, CONCURRENCY))
        started = time.monotonic()
        call: Awaitable[FwRollouts] = asyncio.wait_for(client.generate(PROMPT, n_samples=n), timeout)
        with pytest.raises(asyncio.TimeoutError):
            if closing == "async with":
                async with client:
                    await call
            else:  # never closed by hand: the client's pool closes when asyncio.run shuts the loop down
                await call
        return time.monotonic() - started - timeout

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        overrun = asyncio.run(main())
        gc.collect()
        # Every request that reached the server (each took one scripted fault) ends, answered or hung up on...
        received = 2 * CONCURRENCY - sim.faults.pending
        wait_until(lambda: len(completions(sim)) == received, "the abandoned requests to end", timeout=10)
        # ...and none comes after: it would take the next scripted fault.
        time.sleep(3 * LATENCY)
        gc.collect()
    assert overrun < STOPPED_WITHIN
    if closing != "async with":
        # Never closed, the client leaves its cache's SQLite connection to the garbage collector (Python 3.13
        # warns about that): closing it is the caller's part. What the loop's shutdown must close is the HTTP side.
        unraisable = [u for u in unraisable if not isinstance(u.object, sqlite3.Connection)]
    assert not unraisable, [f"{u.exc_type.__name__}: {u.exc_value} ({u.object!r})" for u in unraisable]
    assert not loop_errors, [c.get("message") for c in loop_errors]
    assert not [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert 2 * CONCURRENCY - sim.faults.pending == received == len(completions(sim))
    assert all(r.status == 0 for r in completions(sim) if r.fault == "slow")
    counts = sim.status_counts
    assert set(counts) <= {200, "client_closed"} and counts[200] <= CONCURRENCY
    assert len(read_cache(cache_dir)) <= counts[200]


CHILD = textwrap.dedent(
    """
    import json, signal, sys
    from fw_rollouts import Fireworks

    # Ctrl-C as in a terminal, whatever this test was started from: a shell runs a background job (`cmd &`,
    # nohup) with SIGINT ignored, and the child would inherit that.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    options, prompt, n, style = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    print("generating", flush=True)
    if style == "with":
        with Fireworks(**options) as client:
            client.generate(prompt, n_samples=n)
    else:
        Fireworks(**options).generate(prompt, n_samples=n)
    print("finished", flush=True)
    """
)

LEAKS = (
    "Task was destroyed",
    "Unclosed client session",
    "unclosed transport",
    "was never awaited",
    "Exception ignored",
)
"""What a Ctrl-C must not print, even when the script never closes its client: an abandoned task, an unclosed
HTTP session or transport, an unawaited coroutine. (An unclosed SQLite connection is the script's to close.)"""


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(signal, "SIGINT"), reason="needs POSIX SIGINT")
@pytest.mark.parametrize("style", ["plain", "with"])
def test_ctrl_c_in_the_sync_facade_stops_requests_and_a_rerun_resumes(
    sim: FireworksSimulator, tmp_path: Path, style: str
) -> None:
    n = 300
    cache_dir = tmp_path / "cache"
    opts = client_options(sim, cache_dir, CONCURRENCY)
    slow_after_two_rounds(sim)
    child = subprocess.Popen(
        [sys.executable, "-W", "always::ResourceWarning", "-c", CHILD, json.dumps(opts), PROMPT, str(n), style],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: sim.faults.pending == 0 or child.poll() is not None, "the held requests")
        wait_until(lambda: count_entries(cache_dir) >= CONCURRENCY or child.poll() is not None, "cache entries")
        assert child.poll() is None, child.communicate()
        time.sleep(LATENCY / 2)  # mid-round
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        # Watch the server while the child unwinds, and for longer than a reply takes after that: when did
        # the held requests end (only the client can end them), when did the last reply go out?
        answered, last_answer, closed, exited = sim.status_counts[200], sent, None, None
        while exited is None or closed is None or time.monotonic() - sent < STOPPED_WITHIN + 3 * LATENCY:
            time.sleep(0.01)
            now = time.monotonic()
            if exited is None and child.poll() is not None:
                exited = now
            if closed is None and held_requests_ended(sim):
                closed = now
            if sim.status_counts[200] != answered:
                answered, last_answer = sim.status_counts[200], now
            assert now - sent < 60, "the child did not exit, or left requests open, after Ctrl-C"
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()

    assert out == "generating\n", err
    assert child.returncode == -signal.SIGINT, err
    assert "\nKeyboardInterrupt\n" in err and err.count("Traceback") == 1, err
    if style == "with":  # closed by hand: nothing at all besides the traceback
        assert err.endswith("\nKeyboardInterrupt\n"), err
    assert not [leak for leak in LEAKS if leak in err], err
    # A cancel that did not take would wait out CANCEL_GRACE, with requests going on meanwhile.
    assert exited - sent < CANCEL_GRACE
    assert closed - sent < STOPPED_WITHIN, f"in-flight requests were closed {closed - sent:.2f}s after Ctrl-C"
    assert last_answer - sent < STOPPED_WITHIN, f"requests went on for {last_answer - sent:.2f}s after Ctrl-C"
    assert_abandoned_requests_closed(sim)

    before = read_cache(cache_dir)
    assert CONCURRENCY <= len(before) <= sim.status_counts[200]
    with restarted_without_latency(sim) as again, Fireworks(**opts) as client:
        rollouts = client.generate(PROMPT, n_samples=n)
        assert_resumed(again, client.settings, before, rollouts, n)
