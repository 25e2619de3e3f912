"""A rate budget shared through Redis: 4 worker processes, one budget of R requests a minute, a server enforcing R.

    python -m bench.shared_budget            # R = 240 a minute over the real 60 s window, 3 minutes of budget
    python -m bench.shared_budget --smoke    # R = 20 over a 2 s window, 3 windows: checks that the measurement runs

A redis-server (the Debian binary) on a free port, the simulator on a thread of this process enforcing R over the
window (``rate_window``), and four worker processes, each one ``AsyncFireworks(budget="redis://...")`` with
``requests_per_minute=R``, started together on a line of stdin, each with a quarter of the work. Figures:

- ``429s``: requests the simulator refused for going over R (target 0);
- ``rate_over_limit``: requests admitted per window of the run, the last window begun counted whole
  (``admitted / (elapsed / window + 1) / R``; target >= 0.90);
- ``rate_over_limit_steady``: the same without the last window's credit (``admitted / (elapsed / window) / R``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fw_rollouts.testing import FireworksSimulator, RedisServer

WORKERS = 4


async def _work(cfg: dict[str, Any]) -> dict[str, Any]:
    from fw_rollouts import AsyncFireworks

    async with AsyncFireworks(
        "qwen-15b", base_url=cfg["base_url"], api_key=cfg["api_key"], use_cache=False, progress_bar=False,
        budget=cfg["budget"], requests_per_minute=cfg["limit"], max_tokens=4, max_concurrency=16,
        cache_dir=cfg["cache_dir"],
    ) as client:  # fmt: skip
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start = time.time()
        results = await client.generate_many([f"{cfg['tag']} {i}" for i in range(cfg["prompts"])])
        return {"start": start, "end": time.time(), "samples": sum(len(r) for r in results)}


def measure(smoke: bool) -> dict[str, Any]:
    """Run the measurement (a few seconds with ``smoke``) and return the figures above."""
    limit, window, windows = (20, 2.0, 3) if smoke else (240, 60.0, 3)
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis:
        url = redis.url
        with FireworksSimulator(requests_per_minute=limit, rate_window=window, record=False) as sim:
            budget = f"{url}?name=bench&window={window:g}"
            root = Path(__file__).parents[1]
            paths = [str(root / "src"), os.environ.get("PYTHONPATH")]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
            procs = []
            for i in range(WORKERS):
                cfg = {
                    "base_url": sim.base_url, "api_key": sim.api_key, "budget": budget, "limit": limit,
                    "cache_dir": f"{tmp}/c{i}", "tag": f"w{i}", "prompts": limit * windows // WORKERS,
                }  # fmt: skip
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.shared_budget", "--worker", json.dumps(cfg)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                    cwd=str(root),
                ))  # fmt: skip
            for proc in procs:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("a worker did not start")
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            results = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
            counts = sim.limits_counts()
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "workers": WORKERS,
        "limit_per_window": limit,
        "window_s": window,
        "elapsed_s": round(elapsed, 2),
        "samples": sum(r["samples"] for r in results),
        "admitted": counts["admitted"],
        "429s": counts["refused"],
        "rate_over_limit": round(counts["admitted"] / (elapsed / window + 1) / limit, 3),
        "rate_over_limit_steady": round(counts["admitted"] / (elapsed / window) / limit, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a short window, a few seconds: checks that it runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(_work(json.loads(args.worker)))), flush=True)
        return 0
    print(json.dumps(measure(args.smoke), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
