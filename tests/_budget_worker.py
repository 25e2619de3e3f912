"""A worker process of tests/test_redis_budget.py: one client sharing a Redis budget, started on a line of stdin.

``python tests/_budget_worker.py``, then a JSON job a line on stdin. For each: an ``AsyncFireworks`` client
of the simulator with ``budget=`` the job's Redis URL and limits, warmed up (``warm_url``: another simulator);
``ready`` printed; a line of stdin awaited (so that every worker starts at once); ``prompts`` prompts x ``n``
samples with the cache off; one JSON line printed: when it started and ended (``time.time()``) and how many
samples came back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any


async def main(cfg: dict[str, Any]) -> dict[str, Any]:
    from fw_rollouts import AsyncFireworks, Limiter

    async with AsyncFireworks(
        "qwen-15b",
        base_url=cfg["base_url"],
        api_key=cfg["api_key"],
        use_cache=False,
        progress_bar=False,
        budget=cfg["budget"],
        max_tokens=cfg.get("max_tokens", 4),
        samples_per_request=cfg.get("k", 1),
        max_concurrency=cfg.get("max_concurrency", 8),
        cache_dir=cfg["cache_dir"],
        **cfg["limits"],
    ) as client:
        if cfg.get("warm_url"):
            # The first request of a process imports and connects, a second or more on loaded cores: done here,
            # on another simulator and a budget of its own, so the measured run starts warm.
            async with client.with_options(base_url=cfg["warm_url"], budget=Limiter(max_concurrency=1)) as warm:
                await warm.generate("warm up", n_samples=1, max_tokens=1)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start = time.time()
        prompts = [f"{cfg['tag']} prompt {i}" for i in range(cfg["prompts"])]
        results = await client.generate_many(prompts, n_samples=cfg["n"])
        end = time.time()
        return {"start": start, "end": end, "samples": sum(len(r) for r in results)}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)  # the budget's warnings reach stderr, which the tests read
    # One job a line, so that one set of processes serves every test of the module (starting one takes seconds).
    for line in sys.stdin:
        print(json.dumps(asyncio.run(main(json.loads(line)))), flush=True)
