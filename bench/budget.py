"""The default budget: what its per-minute limits cost per request, and how much of a limit a client gets.

``python -m bench.budget [--smoke]`` prints and returns (from :func:`measure`):

* ``limiter_us_per_request_{none,limited}``: client CPU of one ``acquire`` + ``release`` of the
  :class:`~fw_rollouts._ratelimit.Limiter` with no limit, and with all four limits set and a reply's
  ``x-ratelimit-*`` headers to read, and their ratio (the baseline is the unlimited limiter, same run);
* ``share_of_{generated,prompt}_limit``: generated (prompt) tokens per minute a client with that limit
  got from a simulator enforcing the same limit, over loopback HTTP on virtual time, as a fraction of the
  limit; ``429s`` must stay 0.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from typing import Any

from fw_rollouts import AsyncFireworks
from fw_rollouts._budget import Cost, Spent
from fw_rollouts._ratelimit import Limiter
from fw_rollouts.testing import FireworksSimulator

PROMPT = "Write a long story about a dragon."
HEADERS = {
    "x-ratelimit-limit-requests": "6000",
    "x-ratelimit-remaining-requests": "5990",
    "x-ratelimit-limit-tokens-prompt": "60000000",
    "x-ratelimit-remaining-tokens-prompt": "59000000",
    "x-ratelimit-limit-tokens-generated": "6000000",
    "x-ratelimit-remaining-tokens-generated": "5900000",
    "x-ratelimit-over-limit": "no",
    "content-type": "application/json",
    "x-request-id": "r",
}


class _Clock:
    """Virtual time that moves only when something sleeps on it."""

    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.time += max(0.0, seconds)
        await asyncio.sleep(0)


def _limiter_cost(n: int, limited: bool) -> float:
    """Microseconds of CPU per acquire + release (and header reading, when limited)."""

    async def main() -> float:
        limits: dict[str, Any] = (
            {
                "requests_per_minute": 1e9,
                "tokens_per_minute": 1e12,
                "prompt_tokens_per_minute": 1e12,
                "generated_tokens_per_minute": 1e12,
            }
            if limited
            else {}
        )
        limiter = Limiter(max_concurrency=64, clock=_Clock(), **limits)
        cost, spent = Cost(100, 64), Spent(100, 0, 40, 1)
        headers = HEADERS if limited else {"content-type": "application/json", "x-request-id": "r"}
        start = time.process_time()
        for _ in range(n):
            limiter.release(await limiter.acquire(cost), spent, headers)
        return (time.process_time() - start) / n * 1e6

    return asyncio.run(main())


def _share(limit_name: str, limit: float, field: str, n_samples: int) -> tuple[float, int]:
    clock = _Clock()
    with FireworksSimulator(clock=clock.now, **{limit_name: limit}) as sim, tempfile.TemporaryDirectory() as tmp:

        async def main() -> int:
            async with AsyncFireworks(
                "qwen-15b",
                base_url=sim.base_url,
                api_key=sim.api_key,
                cache_dir=tmp,
                use_cache=False,
                progress_bar=False,
                max_concurrency=1,  # on this virtual clock a sleeping worker would move time under another's request
                clock=clock,
                **{limit_name: limit},
            ) as client:
                rollouts = await client.generate(PROMPT, n_samples=n_samples, max_tokens=64)
            return sum(getattr(r.usage, field) for r in rollouts)

        used = asyncio.run(main())
        too_many = sim.status_counts[429]
    minutes = clock.time / 60 + 1  # the last minute counted whole
    return used / minutes / limit, too_many


def measure(smoke: bool) -> dict[str, Any]:
    """Run the measurements (fewer with ``smoke``), print them, and return them."""
    n = 2_000 if smoke else 50_000
    none = min(_limiter_cost(n, False) for _ in range(3))
    limited = min(_limiter_cost(n, True) for _ in range(3))
    samples = 120 if smoke else 600
    generated, generated_429 = _share("generated_tokens_per_minute", 3000, "completion_tokens", samples)
    prompt, prompt_429 = _share("prompt_tokens_per_minute", 1000, "prompt_tokens", samples)
    figures = {
        "limiter_us_per_request_none": round(none, 2),
        "limiter_us_per_request_limited": round(limited, 2),
        "limited_over_none": round(limited / none, 2),
        "share_of_generated_limit": round(generated, 3),
        "share_of_prompt_limit": round(prompt, 3),
        "429s": generated_429 + prompt_429,
    }
    for name, value in figures.items():
        print(f"{name}: {value}")
    return figures


if __name__ == "__main__":
    measure("--smoke" in sys.argv[1:])
