"""Studies (issue 9): many prompts in one call against one prompt of as many samples, streaming memory, resume.

    python -m bench.study            # the figures of record (a few minutes on 2 cores)
    python -m bench.study --smoke    # tiny sizes: checks that every measurement runs

* ``many``: 200 prompts x 10 samples through ``generate_many``, and through ``asyncio.gather`` of 200
  ``generate`` calls (what users wrote before), each as a ratio to one ``generate`` of 2,000 samples,
  in the same run, alternating, against a simulator in its own process with its replay memo warm.
* ``stream``: a study of 100,000 samples (``max_tokens`` 64, ``logprobs`` 5) consumed through
  ``iter_generate`` and written to disk, in a child process that reports its RSS at 10k, 50k and 100k.
* ``resume``: a study killed (SIGKILL) half way and run again: the requests the second run sends,
  counted at the simulator, against the samples the first run did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._procs import ServerProcess

MODEL = "qwen-15b"
OPTIONS: dict[str, Any] = {"max_tokens": 32, "temperature": 0.7, "logprobs": 5, "echo": True, "progress_bar": False}


async def _one_run(base_url: str, variant: str, cache_dir: str, n_prompts: int, per_prompt: int) -> float:
    from fw_rollouts import AsyncFireworks

    async with AsyncFireworks(
        MODEL, base_url=base_url, api_key="bench-key", cache_dir=cache_dir, max_concurrency=256, **OPTIONS
    ) as client:
        prompts = [f"Question {i}: what is {i} + {i}?" for i in range(n_prompts)]
        started = time.perf_counter()
        if variant == "one":
            result = await client.generate(prompts[0], n_prompts * per_prompt)
            count = len(result)
        elif variant == "many":
            results = await client.generate_many(prompts, n_samples=per_prompt)
            count = sum(len(r) for r in results)
        else:
            gathered = await asyncio.gather(*(client.generate(p, per_prompt) for p in prompts))
            count = sum(len(r) for r in gathered)
        elapsed = time.perf_counter() - started
    assert count == n_prompts * per_prompt, (variant, count)
    return elapsed


def measure_many(server: ServerProcess, tmp: Path, *, n_prompts: int, per_prompt: int, reps: int) -> dict[str, Any]:
    """Median seconds of each variant and their ratios to one prompt of as many samples."""
    shapes = {"one": (n_prompts, per_prompt), "many": (n_prompts, per_prompt), "gather": (n_prompts, per_prompt)}
    times: dict[str, list[float]] = {name: [] for name in shapes}
    counter = 0

    def run(name: str) -> float:
        nonlocal counter
        counter += 1
        return asyncio.run(_one_run(server.base_url, name, str(tmp / f"many-{counter}"), *shapes[name]))

    for name in shapes:
        run(name)  # warm the server's replay memo with exactly these requests
    for _ in range(reps):
        for name in shapes:
            times[name].append(run(name))
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "samples": n_prompts * per_prompt,
        "prompts": n_prompts,
        "reps": reps,
        "seconds": {name: [round(t, 3) for t in values] for name, values in times.items()},
        "median_s": {name: round(t, 3) for name, t in median.items()},
        "many_vs_one": round(median["many"] / median["one"], 3),
        "gather_vs_one": round(median["gather"] / median["one"], 3),
    }


_STREAM_CHILD = r"""
import asyncio, json, resource, sys, time
from fw_rollouts import AsyncFireworks

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

async def main(base_url, cache_dir, out_path, total, marks):
    marks = set(marks)
    report = {"rss_mb": {}, "total": total}
    per_item = 100
    items = [f"Stream item {i}" for i in range(total // per_item)]
    started = time.perf_counter()
    async with AsyncFireworks("qwen-15b", base_url=base_url, api_key="bench-key", cache_dir=cache_dir,
                              max_tokens=64, logprobs=5, echo=False, progress_bar=False,
                              max_concurrency=128) as client:
        count = 0
        with open(out_path, "w") as out:
            async for response in client.iter_generate(items, n_samples=per_item):
                out.write(json.dumps({"item": response.item, "seed": response.seed, "text": response.full,
                                      "logprobs": response.logprobs.token_logprobs}) + "\n")
                count += 1
                if count in marks:
                    report["rss_mb"][str(count)] = round(rss_mb(), 1)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["count"] = count
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(report))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])))
"""


def measure_stream(server: ServerProcess, tmp: Path, *, total: int) -> dict[str, Any]:
    """RSS of a child process streaming ``total`` samples to disk, at a few points and at its peak."""
    marks = sorted({max(1, total // 10), total // 2, total})
    proc = subprocess.run(
        [sys.executable, "-c", _STREAM_CHILD, server.base_url, str(tmp / "stream-cache"), str(tmp / "stream.jsonl"),
         str(total), json.dumps(marks)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"stream child failed: {proc.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    rss = [report["rss_mb"][str(m)] for m in marks]
    report["growth_after_first_mark_mb"] = round(rss[-1] - rss[0], 1)
    return report


_RESUME_CHILD = r"""
import asyncio, sys
from fw_rollouts import AsyncFireworks

async def main(base_url, cache_dir, n_items, per_item):
    async with AsyncFireworks("qwen-15b", base_url=base_url, api_key=sim_key, cache_dir=cache_dir, max_tokens=8,
                              progress_bar=False, max_concurrency=8) as client:
        done = 0
        async for _ in client.iter_generate([f"Resume {i}" for i in range(n_items)], n_samples=per_item):
            done += 1
            print(done, flush=True)

sim_key = sys.argv[5]
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def measure_resume(tmp: Path, *, n_items: int, per_item: int) -> dict[str, Any]:
    """Kill a study half way (SIGKILL: no clean-up at all), run it again, count what the re-run requests."""
    from fw_rollouts import AsyncFireworks
    from fw_rollouts.testing import FireworksSimulator

    total = n_items * per_item
    cache_dir = str(tmp / "resume-cache")
    with FireworksSimulator(latency=0.01) as sim:
        child = subprocess.Popen(
            [sys.executable, "-c", _RESUME_CHILD, sim.base_url, cache_dir, str(n_items), str(per_item), sim.api_key],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for line in child.stdout:
            if int(line) >= total // 2:
                break
        time.sleep(0.1)  # let the write-behind store a batch or two; a kill at any moment must still be safe
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        first_run = len([r for r in sim.requests if r.status == 200])

        async def rerun() -> tuple[int, int]:
            async with AsyncFireworks(
                "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, cache_dir=cache_dir, max_tokens=8,
                progress_bar=False,
            ) as client:
                results = await client.generate_many([f"Resume {i}" for i in range(n_items)], n_samples=per_item)
            return sum(len(r) for r in results), sum(s.cached for r in results for s in r)

        before = len(sim.requests)
        count, cached = asyncio.run(rerun())
        sent = len(sim.requests) - before
    return {
        "total": total,
        "first_run_answered": first_run,
        "cached_after_kill": cached,
        "rerun_requests": sent,
        "missing": total - cached,
        "rerun_sent_only_missing": sent == total - cached and count == total,
    }


def measure(smoke: bool) -> dict[str, Any]:
    """Every measurement of this module, as a dict (``bench.run`` puts it in the report)."""
    server = ServerProcess().start()
    try:
        with tempfile.TemporaryDirectory(prefix="fw_bench_study_") as tmp_name:
            tmp = Path(tmp_name)
            many = measure_many(server, tmp, n_prompts=20 if smoke else 200, per_prompt=10, reps=1 if smoke else 3)
            stream = measure_stream(server, tmp, total=3000 if smoke else 100_000)
            resume = measure_resume(tmp, n_items=10, per_item=20 if smoke else 100)
    finally:
        server.stop()
    return {"many": many, "stream": stream, "resume": resume}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that every measurement runs")
    args = parser.parse_args(argv)
    result = measure(args.smoke)
    print(json.dumps(result, indent=1))
    many, stream, resume = result["many"], result["stream"], result["resume"]
    print(
        f"\n{many['prompts']} prompts x {many['samples'] // many['prompts']} samples: generate_many "
        f"{many['many_vs_one']:.2f}x, gather of generate {many['gather_vs_one']:.2f}x the time of one prompt x "
        f"{many['samples']} (target <= 1.15x)"
    )
    print(
        f"streamed {stream['count']:,} samples in {stream['seconds']} s: RSS {stream['rss_mb']} MB, peak "
        f"{stream['peak_rss_mb']} MB (target < 400 MB, flat after warm-up)"
    )
    print(
        f"resume: {resume['missing']} samples missing after the kill, the re-run sent {resume['rerun_requests']} "
        f"requests ({'only the missing' if resume['rerun_sent_only_missing'] else 'NOT only the missing'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
