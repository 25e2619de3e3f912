"""Scoring: what one score costs against the hand-written echo request a user would otherwise send.

    python -m bench.scoring            # 200 pairs: a 4,000-character prompt, a 16-character continuation
    python -m bench.scoring --smoke    # 20 pairs of a 400-character prompt: checks that the measurement runs

The baseline is lm-eval's request, sent through the same client as a study: ``generate_many`` of prompt +
continuation with ``echo=True, max_tokens=1, temperature=0`` (the whole prompt echoed back). ``score_many`` sends
the same texts with ``echo_last`` covering the continuation (and ``max_tokens=0`` where the server takes it).
Both run with the cache off, against the same simulator, alternating, the best of ``reps`` kept. Figures:

- reply bytes per pair (each kind of body posted once more, straight to the simulator, and its reply measured);
- wall time per pair, and ``score/baseline`` as a ratio.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from typing import Any

from bench._cli import smoke_main
from bench._procs import post_completion
from fw_rollouts import AsyncFireworks
from fw_rollouts.testing import FireworksSimulator

SENTENCE = "The keeper climbed the stairs of the lighthouse each night to light the lamp. "
CONTINUATION = " So the total is"


async def _run(pairs: int, prompt_chars: int, reps: int) -> dict[str, Any]:
    base = (SENTENCE * (prompt_chars // len(SENTENCE) + 1))[:prompt_chars]
    prompts = [f"{i}: {base}" for i in range(pairs)]
    texts = [p + CONTINUATION for p in prompts]
    with FireworksSimulator() as sim, tempfile.TemporaryDirectory() as tmp:
        async with AsyncFireworks(
            "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, raw=True, logprobs=5, use_cache=False,
            progress_bar=False, cache_dir=tmp,
        ) as client:  # fmt: skip
            times: dict[str, list[float]] = {"score": [], "baseline": []}
            for _ in range(reps + 1):  # the first round warms both up and is not kept
                t = time.perf_counter()
                scores = await client.score_many([(p, CONTINUATION) for p in prompts])
                times["score"].append(time.perf_counter() - t)
                t = time.perf_counter()
                await client.generate_many(texts, echo=True, max_tokens=1, temperature=0.0)
                times["baseline"].append(time.perf_counter() - t)
            assert all(s.num_tokens > 0 for s in scores)
        bodies = [r.body for r in sim.requests if r.body is not None]
        scored = next(b for b in bodies if "echo_last" in b)
        baseline = next(b for b in bodies if b.get("max_tokens") == 1 and "echo_last" not in b)
        scored_bytes, baseline_bytes = len(post_completion(sim, scored)), len(post_completion(sim, baseline))
    best = {k: min(v[1:]) for k, v in times.items()}
    return {
        "pairs": pairs,
        "prompt_chars": prompt_chars,
        "echo_last_sent": scored["echo_last"],
        "max_tokens_sent": scored.get("max_tokens"),
        "reply_bytes_score": scored_bytes,
        "reply_bytes_baseline": baseline_bytes,
        "reply_bytes_ratio": round(scored_bytes / baseline_bytes, 4),
        "ms_per_pair_score": round(best["score"] / pairs * 1000, 3),
        "ms_per_pair_baseline": round(best["baseline"] / pairs * 1000, 3),
        "time_ratio": round(best["score"] / best["baseline"], 3),
    }


def measure(smoke: bool) -> dict[str, Any]:
    """The figures above (small sizes with ``smoke``)."""
    if smoke:
        return asyncio.run(_run(20, 400, 1))
    return asyncio.run(_run(200, 4000, 3))


def main(argv: list[str] | None = None) -> int:
    return smoke_main(__doc__.splitlines()[0], measure, argv)


if __name__ == "__main__":
    sys.exit(main())
