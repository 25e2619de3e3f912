"""The Redis cache against the local one: a cache-hit re-run of a study, Redis store over disk store (issue 12).

    python -m bench.redis_cache            # 100 prompts x 100 samples = 10,000 samples (the figures of record)
    python -m bench.redis_cache --smoke    # 10 prompts x 20 samples: checks that the measurement runs

One client (``AsyncFireworks`` against the in-process simulator, ``max_tokens=32``, ``logprobs=5``, echo paid
once per prompt) fills two stores with the same study: a ``DiskStore`` in a fresh directory and a
``RedisStore`` on a local ``redis-server`` (``fw_rollouts.testing.RedisServer``, loopback TCP, nothing
persisted), each through ``with_options(cache=...)`` of the same client. Then the study is run again on each,
every sample a cache hit (no request is sent: the bench checks), alternating, best of ``reps`` kept.

Figures: wall time of the re-run per store, ms per 1,000 samples, ``redis/disk`` as a ratio (target: at most
3x), and the bytes Redis holds per sample (values, after compression) beside the disk cache's.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from typing import Any

from bench._cli import smoke_main
from bench._procs import dir_bytes
from fw_rollouts import AsyncFireworks, DiskStore, RedisStore
from fw_rollouts.testing import FireworksSimulator, RedisServer

SENTENCE = "Tell me something true about the sea, in one short paragraph"


async def _run(prompts: int, samples: int, reps: int) -> dict[str, Any]:
    items = [f"{i}: {SENTENCE}." for i in range(prompts)]
    with FireworksSimulator() as sim, RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        disk = DiskStore(tmp)
        redis = RedisStore(server.url)
        async with AsyncFireworks(
            "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, max_tokens=32, logprobs=5, progress_bar=False,
            max_concurrency=64,
        ) as client:  # fmt: skip
            stores = {"disk": client.with_options(cache=disk), "redis": client.with_options(cache=redis)}
            for sibling in stores.values():  # fill
                await sibling.generate_many(items, samples)
            sent = len(sim.requests)
            times: dict[str, list[float]] = {name: [] for name in stores}
            for _ in range(reps + 1):  # the first round warms both up and is not kept
                for name, sibling in stores.items():
                    t = time.perf_counter()
                    results = await sibling.generate_many(items, samples)
                    times[name].append(time.perf_counter() - t)
                    assert all(r.cached for rollouts in results for r in rollouts)
            assert len(sim.requests) == sent, "a re-run sent requests: not every sample was a cache hit"
            redis_stats = await redis.stats()
            for sibling in stores.values():
                await sibling.aclose()
        await disk.aclose()
        await redis.aclose()
        disk_bytes = dir_bytes(tmp)
    n = prompts * samples
    best = {name: min(v[1:]) for name, v in times.items()}
    return {
        "samples": n,
        "prompts": prompts,
        "reps": reps,
        "disk_s": round(best["disk"], 3),
        "redis_s": round(best["redis"], 3),
        "ms_per_1000_disk": round(best["disk"] / n * 1e6, 2),
        "ms_per_1000_redis": round(best["redis"] / n * 1e6, 2),
        "redis_over_disk": round(best["redis"] / best["disk"], 3),
        "redis_entries": redis_stats.entries,
        "redis_value_bytes_per_sample": round((redis_stats.size_bytes or 0) / n, 1),
        "disk_bytes_per_sample": round(disk_bytes / n, 1),
    }


def measure(smoke: bool) -> dict[str, Any]:
    """The figures above (small sizes with ``smoke``)."""
    if smoke:
        return asyncio.run(_run(10, 20, 1))
    return asyncio.run(_run(100, 100, 3))


def main(argv: list[str] | None = None) -> int:
    return smoke_main(__doc__.splitlines()[0], measure, argv)


if __name__ == "__main__":
    sys.exit(main())
