"""The study file: bytes per sample, write and read throughput, and memory while streaming.

``python -m bench.study_file [--smoke]``. Samples of 64 generated tokens with top-5 alternatives
(the issue's 100,000-sample study) go through ``StudyWriter`` into JSON Lines and Parquet; the
baseline, in the same run, is ``FwRollouts.to_jsonl`` of 500 such samples (one file written whole).
Each sample is built as it is added, and the baseline's build time is counted too, so the ratio compares alike.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import resource
import tempfile
import time
import tracemalloc
from typing import Any

from fw_rollouts import FwResponse, FwRollouts, Logprobs, Usage
from fw_rollouts._study_file import StudyWriter, read_samples


def _sample(seed: int, tokens: int = 64, top: int = 5) -> FwResponse:
    """A sample like a real one: words from a 5,000-word vocabulary, logprobs that do not compress."""
    rng = random.Random(seed)
    words = [f" w{rng.randrange(5000)}" for _ in range(tokens)]
    alternatives = [{f" w{rng.randrange(5000)}": -rng.expovariate(1.0) for _ in range(top)} for _ in range(tokens)]
    logprobs = Logprobs(words, [-rng.expovariate(2.0) for _ in range(tokens)], alternatives, None,
                        [rng.randrange(150_000) for _ in range(tokens)])  # fmt: skip
    text = "".join(words)
    return FwResponse(full=text, content=text, finish_reason="length", seed=seed, usage=Usage(20, tokens, 20 + tokens),
                      logprobs=logprobs, model="m", response_id=f"r{seed}", created=1_700_000_000)  # fmt: skip


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))
    return os.path.getsize(path)


async def _write(path: str, n: int) -> float:
    header = {"study": "bench", "items": [{"prompt": "p", "num_responses": n, "temperature": 1.0, "top_p": None,
                                           "max_tokens": 64, "model": "m"}]}  # fmt: skip
    started = time.perf_counter()
    async with await StudyWriter.open(path, header=header) as writer:
        for seed in range(n):
            writer.add(0, _sample(seed))  # built here, not held: memory stays flat
            if seed % 64 == 0:
                await asyncio.sleep(0)
    return time.perf_counter() - started


def measure(smoke: bool) -> dict[str, Any]:
    """The figures, as a dict (and printed)."""
    n = 2_000 if smoke else 100_000
    figures: dict[str, Any] = {"samples": n}
    with tempfile.TemporaryDirectory() as directory:
        baseline = os.path.join(directory, "baseline.jsonl")
        started = time.perf_counter()  # built and written, as below
        pool = [_sample(seed) for seed in range(500)]
        rollouts = FwRollouts(prompt="p", num_responses=len(pool), temperature=1.0, top_p=None, max_tokens=64,
                              model="m", responses=pool)  # fmt: skip
        rollouts.to_jsonl(baseline)
        baseline_rate = len(pool) / (time.perf_counter() - started)
        figures["to_jsonl_samples_per_s"] = round(baseline_rate)
        for fmt in ("jsonl", "parquet"):
            path = os.path.join(directory, f"study.{fmt}")
            seconds = asyncio.run(_write(path, n))
            rate = n / seconds
            started = time.perf_counter()
            count = sum(1 for _ in read_samples(path))
            read_seconds = time.perf_counter() - started
            assert count == n, (fmt, count)
            tracemalloc.start()  # on a prefix: tracing slows the read several times over
            for _ in itertools.islice(read_samples(path), 5_000):
                pass
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            figures[fmt] = {
                "bytes_per_sample": round(_size(path) / n),
                "bytes_per_generated_token": round(_size(path) / n / 64, 1),
                "write_samples_per_s": round(rate),
                "write_vs_to_jsonl": round(rate / baseline_rate, 2),
                "read_samples_per_s": round(n / read_seconds),
                "read_peak_traced_mb_first_5k": round(peak / 2**20, 2),
            }
    figures["peak_rss_mb"] = round(_rss_mb(), 1)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="2,000 samples instead of 100,000")
    measure(parser.parse_args().smoke)
