"""The in-flight claim: two workers asking a shared Redis cache for the same missing samples pay for each once.

Real redis-server, real processes, the simulator over loopback HTTP (with latency, so that the workers
overlap). A claim left by a dead worker holds the others back only for ``claim_timeout``; one that
disappears without a record is taken over at once; waiting for claimed samples does not stall the
other items of the run (the request feed hands out what it holds while the source waits).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

from _helpers import SRC, client_options, run_together
from _redis import RedisServer
from fw_rollouts import AsyncFireworks, RedisStore
from fw_rollouts._cache_key import CacheKeyer
from fw_rollouts.testing import FireworksSimulator

PROMPT = "Write one sentence about the sea."
CLAIMS = b"fw_rollouts:claim:"

CHILD = """
import json, sys
from fw_rollouts import Fireworks
options, n = json.loads(sys.argv[1]), int(sys.argv[2])
with Fireworks(**options) as client:
    print("ready", flush=True)
    sys.stdin.readline()
    rollouts = client.generate(sys.argv[3], n_samples=n)
    print(json.dumps({"cached": sum(r.cached for r in rollouts), "full": [r.full for r in rollouts],
                      "tokens": [r.logprobs.tokens for r in rollouts]}), flush=True)
"""


def _seeds(sim: FireworksSimulator) -> list[int]:
    return sorted(r.body["seed"] for r in sim.requests if r.path.endswith("/completions") and r.body)


def _keys(client: AsyncFireworks, prompt: str, seeds: range) -> list[bytes]:
    settings = client.settings
    keyer = CacheKeyer(settings.resolved_base_url, settings.key_body(client.render(prompt)))
    return [keyer(seed).encode() for seed in seeds]


def _claim_by_hand(server: RedisServer, keys: list[bytes]) -> redis.Redis:
    raw = redis.Redis(port=server.port)
    for key in keys:
        raw.set(CLAIMS + key, b"a worker that died", px=3_600_000)
    return raw


def test_two_processes_asking_for_the_same_samples_at_once_pay_for_each_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    n = 40
    with FireworksSimulator(latency=0.1) as sim:
        options = {**client_options(sim, tmp_path, 8), "cache": redis_server.url}
        environ = {**os.environ, "PYTHONPATH": str(SRC)}
        reports = run_together([[sys.executable, "-c", CHILD, json.dumps(options), str(n), PROMPT]] * 2, env=environ)
        assert _seeds(sim) == list(range(n))  # each sample was requested once, by one of the two
    assert sum(r["cached"] for r in reports) == n  # the other had it as a cache hit
    # The same samples, echoed prompt included (the waiter read the prompt's part the other stored once).
    assert reports[0]["full"] == reports[1]["full"] and reports[0]["tokens"] == reports[1]["tokens"]
    assert not list(redis.Redis(port=redis_server.port).scan_iter(match=CLAIMS + b"*"))  # no claim left


def test_a_dead_workers_claim_is_taken_over_after_the_claim_timeout(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with FireworksSimulator() as sim:

        async def main() -> tuple[float, Any, list[bytes]]:
            store = RedisStore(redis_server.url, claim_timeout=1.0)
            async with AsyncFireworks(**client_options(sim, tmp_path, 4), cache=store) as client:
                keys = _keys(client, PROMPT, range(6))
                _claim_by_hand(redis_server, keys[:3])
                await client.generate(PROMPT, 1, seed=100)  # warm (the first call loads the chat template)
                sim.reset()
                started = time.perf_counter()
                rollouts = await client.generate(PROMPT, 6)
                took = time.perf_counter() - started
            await store.aclose()
            return took, rollouts, keys

        took, rollouts, keys = asyncio.run(main())
        assert _seeds(sim) == list(range(6))
    assert [r.seed for r in rollouts] == list(range(6)) and not any(r.cached for r in rollouts)
    assert 1.0 <= took < 5.0, took  # waited for the claim, then fetched the samples itself
    left = set(redis.Redis(port=redis_server.port).scan_iter(match=CLAIMS + b"*"))
    assert left == {CLAIMS + k for k in keys[:3]}  # the dead worker's claims are not ours to drop; ours are gone


def test_a_claim_gone_without_a_record_is_taken_over_at_once(redis_server: RedisServer, tmp_path: Path) -> None:
    with FireworksSimulator() as sim:

        async def main() -> tuple[float, Any]:
            store = RedisStore(redis_server.url, claim_timeout=60.0)
            async with AsyncFireworks(**client_options(sim, tmp_path, 4), cache=store) as client:
                keys = _keys(client, PROMPT, range(4))
                raw = _claim_by_hand(redis_server, keys)
                # The other worker gives up (its fetch failed) without storing anything.
                giving_up = threading.Timer(0.3, lambda: raw.delete(*[CLAIMS + k for k in keys]))
                giving_up.start()
                started = time.perf_counter()
                rollouts = await client.generate(PROMPT, 4)
                took = time.perf_counter() - started
                giving_up.join()
            await store.aclose()
            return took, rollouts

        took, rollouts = asyncio.run(main())
        assert _seeds(sim) == list(range(4))
    assert [r.seed for r in rollouts] == [0, 1, 2, 3]
    assert 0.3 <= took < 5.0, took  # not the minute of the claim's timeout


def test_samples_another_worker_stores_meanwhile_are_cache_hits(redis_server: RedisServer, tmp_path: Path) -> None:
    with FireworksSimulator() as sim:

        async def main() -> Any:
            store = RedisStore(redis_server.url, claim_timeout=60.0)
            options = client_options(sim, tmp_path, 4)
            async with AsyncFireworks(**options, cache=store) as client, AsyncFireworks(
                **options, cache=redis_server.url_for(1)
            ) as other:
                keys = _keys(client, PROMPT, range(5))
                raw = _claim_by_hand(redis_server, keys)
                await other.generate(PROMPT, 5)  # what the other worker fetches, stored on database 1
                moved = redis.Redis(port=redis_server.port, db=1)

                def store_them() -> None:  # ... then lands in the shared database, and its claims go
                    for name in moved.keys(b"fw_rollouts:*"):
                        raw.set(name, moved.get(name) or b"")
                    raw.delete(*[CLAIMS + k for k in keys])

                timer = threading.Timer(0.3, store_them)
                timer.start()
                sim.reset()
                rollouts = await client.generate(PROMPT, 5)
                timer.join()
            await store.aclose()
            return rollouts

        rollouts = asyncio.run(main())
        assert _seeds(sim) == []  # none fetched: all five came from the other worker
    assert [r.seed for r in rollouts] == list(range(5)) and all(r.cached for r in rollouts)
    assert all(r.echo and r.get_prompt_logprobs() is not None for r in rollouts)  # with the prompt's shared part


def test_waiting_for_a_claimed_sample_does_not_stall_the_other_items(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    timeout = 3.0
    with FireworksSimulator(latency=0.02) as sim:

        async def main() -> dict[tuple[int, int], float]:
            store = RedisStore(redis_server.url, claim_timeout=timeout)
            arrived: dict[tuple[int, int], float] = {}
            async with AsyncFireworks(**client_options(sim, tmp_path, 4), cache=store) as client:
                _claim_by_hand(redis_server, _keys(client, "first", range(1)))
                items = [{"prompt": "first", "n_samples": 39}, {"prompt": "second", "n_samples": 5}]
                started = time.perf_counter()
                async with client.iter_generate(items) as stream:
                    async for response in stream:
                        arrived[(response.item or 0, response.seed or 0)] = time.perf_counter() - started
            await store.aclose()
            return arrived

        arrived = asyncio.run(main())
    assert len(arrived) == 44
    claimed = arrived.pop((0, 0))
    assert claimed >= timeout  # fetched once the claim timed out
    # Every other sample came while the run waited for that one (not after it: the tail did not wait).
    assert max(arrived.values()) < timeout - 0.5, sorted(arrived.values())[-5:]


def test_items_kept_out_of_the_cache_are_not_claimed(redis_server: RedisServer, tmp_path: Path) -> None:
    with FireworksSimulator() as sim:

        async def main() -> tuple[list[Any], list[bytes], list[bytes]]:
            async with AsyncFireworks(**client_options(sim, tmp_path, 4), cache=redis_server.url) as client:
                items = [{"prompt": "cached"}, {"prompt": "not cached", "use_cache": False}]
                results = list(await client.generate_many(items, 2))
                return results, _keys(client, "cached", range(2)), _keys(client, "not cached", range(2))

        results, cached, uncached = asyncio.run(main())
        assert len(_seeds(sim)) == 4
    assert [len(r) for r in results] == [2, 2]
    raw = redis.Redis(port=redis_server.port)
    assert all(raw.exists(b"fw_rollouts:" + k) for k in cached)
    assert not any(raw.exists(b"fw_rollouts:" + k) for k in uncached)
