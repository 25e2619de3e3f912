"""Run every measurement of docs/performance.md, print a table and write the results as JSON.

    python -m bench            # full mode: the figures of record (several minutes on 2 cores)
    python -m bench --quick    # smaller sizes, about two minutes
    python -m bench --smoke    # tiny sizes, under a minute: checks that every measurement still runs (CI)
    python -m bench --profile  # our client's throughput job under pyinstrument -> bench/profile.txt

Every performance claim is a ratio against a baseline measured in the same run. The servers
(``python -m fw_rollouts.testing``) run in their own processes with the replay memo on, and each
client kind is warmed up with exactly the requests it is then timed on, so the server is not the
bottleneck. Each timed run is a fresh process (``bench/_worker.py``), so its CPU time is the
client's alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench._procs import ForeignLoad, ServerProcess, dir_bytes, idle_check
from bench._worker import RESULT_PREFIX

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent

MODEL = "qwen-15b"  # our alias for the R1 distill; the peer gets the full id (its cache and payload use it as is)
PEER_MODEL = "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"
PROMPT = "What is 2+2?"
MEMORY_PROMPT = "Once upon a time"  # sent raw, with ignore_eos: plain words until max_tokens
API_KEY = "bench-key"
SPR_KS = (1, 8, 128)
SECTIONS = (
    "throughput", "peer", "memory", "cache", "spr", "sync", "studies", "echo", "storage", "budget", "scoring",
    "redis_cache", "shared_budget",
)  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    n: int  # 1: samples per throughput run
    reps: int  # 1: timed runs per variant (alternating)
    peer_n: int  # 2: samples per peer run
    peer_reps: int
    hit_n: int  # 2: samples per cache-hit re-run
    hit_reps: int
    mem_n: int  # 3: samples held
    mem_tokens: int  # 3: generated tokens per sample
    cache_small: int  # 4: entries (all real samples)
    cache_big: int  # 4: entries (the small cache plus dummies)
    cache_reps: int
    spr_n: int  # 5
    sync_calls: int  # 6
    sync_rounds: int


MODES = {
    "full": Sizes(2000, 3, 2000, 2, 10_000, 3, 200, 1000, 1000, 1_000_000, 2, 1000, 1000, 3),
    "quick": Sizes(2000, 2, 300, 1, 10_000, 2, 200, 1000, 1000, 100_000, 1, 1000, 300, 3),
    "smoke": Sizes(100, 1, 20, 1, 300, 1, 4, 200, 100, 2000, 1, 64, 30, 1),
}


# -- plumbing ---------------------------------------------------------------------------------------------


class JobError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_job(spec: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 900) -> dict[str, Any]:
    """Run one job of ``bench/_worker.py`` in a fresh process and return its result."""
    full_env = dict(os.environ)
    full_env.pop("FW_ROLLOUTS_TRANSPORT", None)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "bench._worker", json.dumps(spec)],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise JobError(f"job {spec['variant']} failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and best of repeated timed runs (wall time decides which run is best)."""
    walls = [r["wall_s"] for r in runs]
    best = min(runs, key=lambda r: r["wall_s"])
    server = [r["server_cpu_us_per_request"] for r in runs if r.get("server_cpu_us_per_request") is not None]
    return {
        "n": runs[0]["n"],
        "runs": len(runs),
        "wall_s_median": statistics.median(walls),
        "wall_s_best": best["wall_s"],
        "samples_per_s_median": runs[0]["n"] / statistics.median(walls),
        "cpu_ms_per_sample_median": statistics.median(r["cpu_ms_per_sample"] for r in runs),
        "cpu_ms_per_sample_best": min(r["cpu_ms_per_sample"] for r in runs),
        "server_cpu_us_per_request_median": statistics.median(server) if server else None,
        "all": runs,
    }


@dataclass
class Target:
    measurement: str
    what: str
    value: float | None
    limit: float
    direction: str  # "<=" or ">="
    unit: str = ""
    stretch: float | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value <= self.limit if self.direction == "<=" else self.value >= self.limit

    @property
    def stretch_met(self) -> bool | None:
        if self.stretch is None or self.value is None:
            return None
        return self.value <= self.stretch if self.direction == "<=" else self.value >= self.stretch


@dataclass
class Report:
    mode: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # measurement, row, figure, vs baseline
    targets: list[Target] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def row(self, measurement: str, name: str, figure: str, versus: str = "") -> None:
        self.rows.append((measurement, name, figure, versus))


@contextmanager
def section(report: Report, name: str) -> Iterator[dict[str, Any]]:
    data: dict[str, Any] = {}
    report.sections[name] = data
    log(f"== {name}")
    t0 = time.perf_counter()
    try:
        yield data
    except (JobError, subprocess.TimeoutExpired, OSError, RuntimeError, KeyError, ValueError) as exc:
        report.errors[name] = str(exc)
        data["error"] = str(exc)
        log(f"!! {name} failed: {exc}")
    data["section_s"] = round(time.perf_counter() - t0, 1)


def fmt_rate(s: dict[str, Any]) -> str:
    return (
        f"{s['samples_per_s_median']:,.0f}/s (med {s['wall_s_median']:.2f} s, best {s['wall_s_best']:.2f} s), "
        f"client CPU {s['cpu_ms_per_sample_median']:.3f} ms/sample"
        + (
            f", server {s['server_cpu_us_per_request_median']:.0f} us/req"
            if s.get("server_cpu_us_per_request_median") is not None
            else ""
        )
    )


# -- the measurements -------------------------------------------------------------------------------------


class Bench:
    def __init__(self, sizes: Sizes, report: Report, tmp: Path, strict: ServerProcess, lenient: ServerProcess) -> None:
        self.sizes = sizes
        self.report = report
        self.tmp = tmp
        self.strict = strict
        self.lenient = lenient
        self._dirs = 0
        self.probe: dict[str, Any] | None = None

    def fresh_dir(self, label: str) -> str:
        self._dirs += 1
        return str(self.tmp / f"{self._dirs:03d}-{label}")

    def base(self, server: ServerProcess) -> dict[str, Any]:
        return {
            "model": MODEL,
            "peer_model": PEER_MODEL,
            "prompt": PROMPT,
            "base_url": server.base_url,
            "chat_url": server.chat_url,
            "api_key": API_KEY,
            "server_pid": server.pid,
            "max_tokens": 32,
            "temperature": 0.7,
            "logprobs": 5,
            "echo": True,
            "concurrency": 256,
        }

    def get_probe(self) -> dict[str, Any]:
        if self.probe is None:
            self.probe = run_job({**self.base(self.strict), "variant": "probe"})
            log(f"probe: body {json.dumps(self.probe['body'], ensure_ascii=False)}")
        return self.probe

    def alternate(
        self, variants: dict[str, Callable[[], dict[str, Any]]], reps: int, label: str
    ) -> dict[str, dict[str, Any]]:
        """Warm every variant up once (untimed), then time them in turn, ``reps`` rounds."""
        for name, run in variants.items():
            result = run()
            log(f"{label} warm-up {name}: {result.get('wall_s', 0):.2f} s")
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for rep in range(reps):
            for name, run in variants.items():
                result = run()
                runs[name].append(result)
                log(
                    f"{label} {name} {rep + 1}/{reps}: {result['wall_s']:.2f} s, "
                    f"CPU {result['cpu_ms_per_sample']:.3f} ms/sample"
                )
        return {name: summarise(r) for name, r in runs.items()}

    # 1 ----------------------------------------------------------------------------------------------------
    def throughput(self) -> None:
        with section(self.report, "throughput") as data:
            probe = self.get_probe()
            spec = {**self.base(self.strict), "n": self.sizes.n, "body": probe["body"]}
            data["body"] = probe["body"]

            def ours(env: dict[str, str] | None = None, variant: str = "ours") -> Callable[[], dict[str, Any]]:
                return lambda: run_job(
                    {**spec, "variant": variant, "cache_dir": self.fresh_dir(variant), "expect_cached": False}, env
                )

            variants = {
                "ours": ours(),
                "ours_open": lambda: run_job(
                    {
                        **spec,
                        "variant": "ours",
                        "preopen": True,
                        "cache_dir": self.fresh_dir("ours-open"),
                        "expect_cached": False,
                    }
                ),
                "bare_aiohttp": lambda: run_job({**spec, "variant": "bare_aiohttp"}),
                "openai_parsed": lambda: run_job({**spec, "variant": "openai_parsed"}),
                "openai_raw": lambda: run_job({**spec, "variant": "openai_raw"}),
                "ours_openai_transport": ours({"FW_ROLLOUTS_TRANSPORT": "openai"}, "ours_openai"),
            }
            results = self.alternate(variants, self.sizes.reps, "throughput")
            data.update(results)
            bare = results["bare_aiohttp"]
            labels = {
                "ours": "ours: AsyncFireworks.generate (cache on, fresh dir)",
                "ours_open": "ours, client already open (setup and close not timed)",
                "bare_aiohttp": "baseline: bare aiohttp + json.loads",
                "openai_parsed": "openai.AsyncOpenAI completions.create (pydantic)",
                "openai_raw": "openai with_raw_response + json.loads",
                "ours_openai_transport": "ours, FW_ROLLOUTS_TRANSPORT=openai",
            }
            for name, label in labels.items():
                s = results[name]
                ratio = s["wall_s_median"] / bare["wall_s_median"]
                best = s["wall_s_best"] / bare["wall_s_best"]
                cpu = s["cpu_ms_per_sample_median"] / bare["cpu_ms_per_sample_median"]
                versus = "" if name == "bare_aiohttp" else f"{ratio:.2f}x bare wall (best {best:.2f}x), {cpu:.2f}x CPU"
                self.report.row(f"1 throughput, {s['n']} samples", label, fmt_rate(s), versus)
            ratio = results["ours"]["wall_s_median"] / bare["wall_s_median"]
            data["ratio_median"] = ratio
            data["ratio_best"] = results["ours"]["wall_s_best"] / bare["wall_s_best"]
            data["cpu_ratio_median"] = results["ours"]["cpu_ms_per_sample_median"] / bare["cpu_ms_per_sample_median"]
            self.report.targets.append(
                Target("1", "ours / bare aiohttp, wall time (medians)", ratio, 1.5, "<=", "x", stretch=1.25)
            )

    # 2 ----------------------------------------------------------------------------------------------------
    def peer(self) -> None:
        with section(self.report, "peer") as data:
            spec = {**self.base(self.lenient), "n": self.sizes.peer_n}
            variants = {
                "ours": lambda: run_job({**spec, "variant": "ours", "cache_dir": self.fresh_dir("ours-vs-peer")}),
                "ours_no_logprobs": lambda: run_job(
                    {**spec, "variant": "ours", "logprobs": 0, "cache_dir": self.fresh_dir("ours-no-logprobs")}
                ),
                "peer": lambda: run_job({**spec, "variant": "peer", "cache_dir": self.fresh_dir("peer")}),
            }
            results = self.alternate(variants, self.sizes.peer_reps, "peer")
            data.update(results)
            speedup = results["peer"]["wall_s_median"] / results["ours"]["wall_s_median"]
            data["speedup_median"] = speedup
            n = self.sizes.peer_n
            m = f"2 vs rollouts==0.1.11, {n} samples"
            self.report.row(m, "peer: RolloutsClient.agenerate (json cache)", fmt_rate(results["peer"]))
            self.report.row(
                m, "ours (logprobs 5 + echo; the peer gets none)", fmt_rate(results["ours"]), f"{speedup:.1f}x faster"
            )
            plain = results["peer"]["wall_s_median"] / results["ours_no_logprobs"]["wall_s_median"]
            data["speedup_no_logprobs_median"] = plain
            self.report.row(
                m,
                "ours, logprobs off (the peer's job exactly)",
                fmt_rate(results["ours_no_logprobs"]),
                f"{plain:.1f}x faster",
            )
            self.report.targets.append(Target("2", "peer / ours, wall time (fresh caches)", speedup, 10, ">=", "x"))

        with section(self.report, "cache_hit") as data:
            n = self.sizes.hit_n
            spec = {**self.base(self.lenient), "n": n}
            ours_dir, peer_dir = self.fresh_dir("ours-hits"), self.fresh_dir("peer-hits")
            fill = run_job({**spec, "variant": "ours", "cache_dir": ours_dir, "expect_cached": False})
            log(f"cache-hit: filled ours with {n} samples in {fill['wall_s']:.1f} s")
            pfill = run_job({**spec, "variant": "peer_fill", "cache_dir": peer_dir})
            log(f"cache-hit: filled the peer's cache with {n} samples in {pfill['fill_s']:.1f} s")
            data["fill"] = {"ours_s": fill["wall_s"], "peer_s": pfill["fill_s"]}
            data["disk_bytes_per_sample"] = {"ours": dir_bytes(ours_dir) / n, "peer": dir_bytes(peer_dir) / n}
            dead = "http://127.0.0.1:9/chat/completions"  # a miss would fail at once instead of being fetched
            variants = {
                "ours": lambda: run_job({**spec, "variant": "ours", "cache_dir": ours_dir, "expect_cached": True}),
                "peer": lambda: run_job({**spec, "variant": "peer", "cache_dir": peer_dir, "api_url": dead}),
            }
            results = self.alternate(variants, self.sizes.hit_reps, "cache-hit")
            data.update(results)
            speedup = results["peer"]["wall_s_median"] / results["ours"]["wall_s_median"]
            data["speedup_median"] = speedup
            m = f"2 cache-hit re-run, {n} samples"
            self.report.row(m, "peer: every sample from its cache", fmt_rate(results["peer"]))
            self.report.row(m, "ours: every sample from the cache", fmt_rate(results["ours"]), f"{speedup:.1f}x faster")
            self.report.targets.append(Target("2", "peer / ours, wall time (all cache hits)", speedup, 5, ">=", "x"))

    # 3 ----------------------------------------------------------------------------------------------------
    def memory(self) -> None:
        with section(self.report, "memory") as data:
            spec = {
                **self.base(self.strict),
                "variant": "memory",
                "n": self.sizes.mem_n,
                "tokens": self.sizes.mem_tokens,
                "memory_prompt": MEMORY_PROMPT,
            }
            result = run_job(spec)
            data.update(result)
            if result["finish_reasons"] != ["length"] or result["completion_tokens"] != [self.sizes.mem_tokens]:
                raise RuntimeError(
                    f"samples did not all generate {self.sizes.mem_tokens} tokens: {result['finish_reasons']}, "
                    f"{result['completion_tokens']}"
                )
            alts = result["top_alternatives"]
            m = (
                f"3 memory, {result['n']} samples x {result['tokens_per_sample']} tokens, "
                f"{min(alts)}-{max(alts)} alternatives per position"
            )
            plain = result["plain_bytes_per_token"]
            per = result["bytes_per_token"]
            self.report.row(
                m,
                "held per token (tracemalloc, minus vocabulary growth)",
                f"{per:.1f} B/token",
                f"{plain / per:.1f}x less than plain",
            )
            self.report.row(m, "  of which Logprobs.nbytes()", f"{result['nbytes_per_token']:.1f} B/token")
            self.report.row(
                m, "  of which text strings (full/content/reasoning)", f"{result['text_bytes_per_token']:.1f} B/token"
            )
            self.report.row(m, "  held minus text strings", f"{per - result['text_bytes_per_token']:.1f} B/token")
            self.report.row(m, "peak while fetching", f"{result['peak_bytes_per_token']:.1f} B/token")
            self.report.row(m, "contrast: lp.to_dict() for every sample (plain lists/dicts)", f"{plain:.1f} B/token")
            self.report.targets.append(Target("3", "bytes held per token", per, 64, "<=", " B"))

    # 4 ----------------------------------------------------------------------------------------------------
    def cache(self) -> None:
        with section(self.report, "cache") as data:
            probe = self.get_probe()
            small, big = self.sizes.cache_small, self.sizes.cache_big
            spec = {**self.base(self.strict), "prompt_text": probe["prompt_text"]}
            small_dir, big_dir = self.fresh_dir("cache-small"), self.fresh_dir("cache-big")
            run_job({**spec, "variant": "ours", "n": small, "cache_dir": small_dir, "expect_cached": False})
            data["disk_bytes_per_real_sample"] = dir_bytes(small_dir) / small
            fill = run_job({"variant": "cache_fill", "src": small_dir, "dst": big_dir, "total": big})
            log(
                f"cache: filled {fill['entries']:,} entries ({fill['entries'] - fill['real']:,} dummies) "
                f"in {fill['fill_s']:.1f} s"
            )
            data["fill"] = fill
            data["big_dir_bytes"] = dir_bytes(big_dir)
            runs: dict[str, list[dict[str, Any]]] = {"small": [], "big": []}
            for _ in range(self.sizes.cache_reps):
                for name, directory in (("small", small_dir), ("big", big_dir)):
                    runs[name].append(run_job({**spec, "variant": "cache_lookup", "n": small, "cache_dir": directory}))
            for name, rs in runs.items():
                data[name] = {
                    "entries": rs[0]["entries"],
                    "median_us_per_hit": statistics.median(r["median_us_per_hit"] for r in rs),
                    "best_us_per_hit": min(r["best_us_per_hit"] for r in rs),
                    "first_pass_us_per_hit": statistics.median(r["first_pass_us_per_hit"] for r in rs),
                    "generate_us_per_sample": min(r["generate_best_us_per_sample"] for r in rs),
                    "all": rs,
                }
            s, b = data["small"], data["big"]
            ratio = b["median_us_per_hit"] / s["median_us_per_hit"]
            data["ratio"] = ratio
            m = f"4 cache, {small:,} hits looked up"
            for label, d in ((f"{s['entries']:,} entries", s), (f"{b['entries']:,} entries", b)):
                self.report.row(
                    m,
                    f"DiskStore.get_many + decode at {label}",
                    f"{d['median_us_per_hit']:.1f} us/hit (best {d['best_us_per_hit']:.1f}, first pass "
                    f"{d['first_pass_us_per_hit']:.1f}); cached generate {d['generate_us_per_sample']:.1f} us/sample",
                    f"{ratio:.2f}x" if d is b else "",
                )
            self.report.row(m, "on disk per real sample", f"{data['disk_bytes_per_real_sample']:,.0f} B")
            self.report.row(m, f"filling {big - small:,} dummy entries", f"{fill['fill_s']:.1f} s")
            self.report.targets.append(
                Target(
                    "4",
                    f"per-hit time at {b['entries']:,} / at {s['entries']:,} entries",
                    ratio,
                    2,
                    "<=",
                    "x",
                    note="" if big >= 1_000_000 else f"({big:,} entries in this mode, not 1,000,000)",
                )
            )

    # 5 ----------------------------------------------------------------------------------------------------
    def samples_per_request(self) -> None:
        with section(self.report, "samples_per_request") as data:
            result = run_job({**self.base(self.strict), "variant": "spr", "n": self.sizes.spr_n, "ks": list(SPR_KS)})
            data.update(result)
            m = f"5 samples_per_request, {result['n']} samples"
            for row in result["rows"]:
                if row["status"] != "ok":
                    self.report.row(m, f"k={row['k']}", "not available", row.get("error", ""))
                    self.report.targets.append(Target("5", f"requests for k={row['k']}", None, row["limit"], "<="))
                    continue
                self.report.row(
                    m,
                    f"k={row['k']}",
                    f"{row['requests']} requests for {row['samples']} samples ({row['distinct_seeds']} distinct seeds) "
                    f"in {row['wall_s']:.2f} s",
                    "in-process server: wall time indicative only",
                )
                self.report.targets.append(
                    Target("5", f"requests for k={row['k']} (<= ceil(n/k))", row["requests"], row["limit"], "<=")
                )

    # 6 ----------------------------------------------------------------------------------------------------
    def sync_overhead(self) -> None:
        with section(self.report, "sync") as data:
            spec = {
                **self.base(self.strict),
                "variant": "sync_overhead",
                "calls": self.sizes.sync_calls,
                "rounds": self.sizes.sync_rounds,
                "cache_dir": self.fresh_dir("sync"),
            }
            result = run_job(spec)
            data.update(result)
            m = f"6 sync facade, {result['calls']} cached calls x {result['rounds']} rounds"
            a, s = result["async_ms_per_call"], result["sync_ms_per_call"]
            self.report.row(m, "await AsyncFireworks.generate", f"{statistics.median(a):.3f} ms/call (best {a[0]:.3f})")
            self.report.row(
                m,
                "Fireworks.generate (sync facade)",
                f"{statistics.median(s):.3f} ms/call (best {s[0]:.3f})",
                f"+{result['added_ms_median']:.3f} ms/call",
            )
            self.report.targets.append(
                Target("6", "time added by the sync facade (medians)", result["added_ms_median"], 0.5, "<=", " ms")
            )

    # profile ----------------------------------------------------------------------------------------------
    # 9 (issue 9) --------------------------------------------------------------------------------------------
    def studies(self) -> None:
        """Many prompts vs one, streaming memory, resume: bench/study.py (its own servers and processes)."""
        from bench import study

        with section(self.report, "studies") as data:
            result = study.measure(self.sizes is MODES["smoke"])
            data.update(result)
            many, stream, resume = result["many"], result["stream"], result["resume"]
            self.report.row(
                "9",
                f"{many['prompts']} prompts x {many['samples'] // many['prompts']}: generate_many",
                f"{many['median_s']['many']:.2f} s",
                f"{many['many_vs_one']:.2f}x one prompt x {many['samples']}",
            )
            self.report.row(
                "9",
                f"{many['prompts']} prompts: asyncio.gather of generate",
                f"{many['median_s']['gather']:.2f} s",
                f"{many['gather_vs_one']:.2f}x one prompt",
            )
            self.report.targets.append(
                Target(
                    "9a", "generate_many / one prompt of as many samples, wall", many["many_vs_one"], 1.15, "<=", "x"
                )
            )
            peak = stream["peak_rss_mb"]
            self.report.row(
                "9", f"stream {stream['count']:,} samples to disk", f"RSS {stream['rss_mb']} MB", f"peak {peak} MB"
            )
            self.report.targets.append(Target("9d", "peak RSS streaming a study to disk", peak, 400, "<=", " MB"))
            self.report.targets.append(
                Target(
                    "9e",
                    "re-run after a kill: requests beyond the missing",
                    resume["rerun_requests"] - resume["missing"],
                    0,
                    "<=",
                    "",
                )
            )

    def echo_once(self) -> None:
        """Echo paid once: bytes stored and held against no echo plus one prompt copy (bench/echo.py)."""
        from bench import echo

        with section(self.report, "echo") as data:
            result = echo.measure(self.sizes is MODES["smoke"])
            data.update(result)
            for what in ("received", "record", "disk", "held"):
                ratio = result[f"{what}_ratio"]["once/baseline"]
                self.report.row(
                    "9",
                    f"echo once: bytes {what}",
                    f"{ratio:.3f}x no echo + one prompt copy",
                    f"today {result[f'{what}_ratio']['today/baseline']:.2f}x",
                )
                self.report.targets.append(Target("9b", f"echo once, bytes {what} / baseline", ratio, 1.2, "<=", "x"))

    def storage(self) -> None:
        """Bytes stored per generated token with top-5 alternatives (bench/storage.py)."""
        from bench import storage

        with section(self.report, "storage") as data:
            result = storage.measure(self.sizes is MODES["smoke"])
            data.update(result)
            for length, figures in result["lengths"].items():
                per = figures["disk_bytes_per_token"]
                self.report.row(
                    "9",
                    f"stored per generated token, {length}-token samples",
                    f"{per:.1f} B",
                    f"{figures['disk_ratio']:.2f}x before",
                )
                self.report.targets.append(
                    Target("9c", f"bytes stored per token, {length} tokens", per, 48, "<=", " B")
                )

    def budgets(self) -> None:
        """The limiter's cost and the share of each limit it achieves without a 429 (bench/budget.py)."""
        from bench import budget

        with section(self.report, "budget") as data:
            result = budget.measure(self.sizes is MODES["smoke"])
            data.update(result)
            self.report.row(
                "9",
                "limiter CPU per request, limits set",
                f"{result['limiter_us_per_request_limited']} us",
                f"{result['limited_over_none']}x no limits",
            )
            for which in ("generated", "prompt"):
                share = result[f"share_of_{which}_limit"]
                self.report.targets.append(Target("9f", f"share of the {which}-token limit used", share, 0.9, ">=", ""))
            self.report.targets.append(Target("9f", "429s under enforced limits", result["429s"], 0, "<=", ""))

    def scoring(self) -> None:
        """Scoring against the hand-written full-echo request (bench/scoring.py)."""
        from bench import scoring

        with section(self.report, "scoring") as data:
            result = scoring.measure(self.sizes is MODES["smoke"])
            data.update(result)
            self.report.row(
                "10",
                f"score, {result['prompt_chars']}-char prompt: reply bytes",
                f"{result['reply_bytes_score']} B",
                f"{result['reply_bytes_ratio']:.3f}x full echo",
            )
            self.report.row(
                "10",
                f"score, {result['prompt_chars']}-char prompt: time per pair",
                f"{result['ms_per_pair_score']} ms",
                f"{result['time_ratio']:.3f}x full echo",
            )

    def redis_cache(self) -> None:
        """The Redis cache against the local one: a cache-hit re-run (bench/redis_cache.py)."""
        from bench import redis_cache

        with section(self.report, "redis_cache") as data:
            result = redis_cache.measure(self.sizes is MODES["smoke"])
            data.update(result)
            self.report.row(
                "12",
                f"cache-hit re-run, {result['samples']:,} samples, Redis store",
                f"{result['ms_per_1000_redis']} ms/1000",
                f"{result['redis_over_disk']:.2f}x disk store",
            )
            self.report.targets.append(
                Target("12a", "Redis cache-hit re-run / disk store's", result["redis_over_disk"], 3, "<=", "x")
            )

    def shared_budget(self) -> None:
        """4 processes sharing one Redis budget against a simulator enforcing it (bench/shared_budget.py)."""
        from bench import shared_budget

        with section(self.report, "shared_budget") as data:
            result = shared_budget.measure(self.sizes is MODES["smoke"])
            data.update(result)
            self.report.row(
                "12",
                f"{result['workers']} processes, one Redis budget of {result['limit_per_window']} per "
                f"{result['window_s']:g} s, {result['admitted']} requests",
                f"{result['429s']} 429s",
                f"{result['rate_over_limit']:.3f} of the limit",
            )
            self.report.targets.append(
                Target("12b", "429s, 4 processes sharing a Redis budget", result["429s"], 0, "<=", "")
            )
            self.report.targets.append(
                Target("12c", "achieved rate / the shared limit", result["rate_over_limit"], 0.9, ">=", "")
            )

    def profile(self, output: Path) -> dict[str, Any]:
        spec = {**self.base(self.strict), "n": self.sizes.n}
        warm = run_job({**spec, "variant": "ours", "cache_dir": self.fresh_dir("warm")})
        log(f"profile: warm-up {warm['wall_s']:.2f} s")
        result = run_job({**spec, "variant": "profile", "cache_dir": self.fresh_dir("profile"), "output": str(output)})
        log(f"profile: {result['wall_s']:.2f} s under pyinstrument; report in {output}")
        return result


# -- report -----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    import fw_rollouts

    src = Path(fw_rollouts.__file__).resolve().parent
    git: dict[str, Any] = {}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=src, capture_output=True, text=True)
        git = {"commit": head.stdout.strip(), "src_modified": sorted(line[3:] for line in dirty.stdout.splitlines())}
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": {
            name: version(name)
            for name in ("fw_rollouts", "openai", "aiohttp", "diskcache", "rollouts", "httpx", "pyinstrument")
        },
        "fw_rollouts_path": str(src),
        "git": git,
    }


def print_table(report: Report, judged: bool) -> None:
    rows = report.rows
    widths = [max(len(r[i]) for r in rows) if rows else 0 for i in range(2)]
    last = None
    for m, name, figure, versus in rows:
        if m != last:
            print(f"\n{m}")
            last = m
        print(f"  {name:<{widths[1]}}  {figure}" + (f"   [{versus}]" if versus else ""))
    print("\nTargets" + ("" if judged else f" ({report.mode} mode: indicative only, not judged)"))
    for t in report.targets:
        value = "n/a" if t.value is None else f"{t.value:.3g}{t.unit}"
        if t.value is not None and float(t.value).is_integer() and not t.unit:
            value = f"{int(t.value)}"
        verdict = {True: "PASS", False: "FAIL", None: "N/A"}[t.met]
        if not judged:
            verdict = f"({verdict.lower()})"
        stretch = ""
        if t.stretch is not None:
            stretch = f"; stretch {t.direction} {t.stretch:g}{t.unit}: " + ("met" if t.stretch_met else "not met")
        print(
            f"  {verdict:<6} {t.measurement}. {t.what}: {value} (target {t.direction} {t.limit:g}{t.unit}{stretch}) "
            f"{t.note}".rstrip()
        )
    for name, error in report.errors.items():
        print(f"  ERROR  {name}: {error.splitlines()[0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, under a minute; checks that everything runs")
    mode.add_argument("--quick", action="store_true", help="smaller sizes (a couple of minutes); not judged")
    parser.add_argument("--json", type=Path, default=BENCH / "results.json", help="where to write the results")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile our client's throughput job (pyinstrument) "
        "into bench/profile.txt instead of running the measurements",
    )
    parser.add_argument("--profile-output", type=Path, default=BENCH / "profile.txt", help=argparse.SUPPRESS)
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(SECTIONS))
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed (full mode)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the cache directories (printed at the end)")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown --only section(s): {', '.join(sorted(unknown))}")
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    sizes = MODES[mode_name]
    judged = mode_name == "full"
    report = Report(mode_name)

    idle = idle_check()
    for p in idle["processes"]:
        log(f"warning: another process is busy before the start: {p}")
    foreign = ForeignLoad()
    foreign.start()
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="fw_rollouts_bench_"))
    strict, lenient = ServerProcess(), ServerProcess(lenient=True)
    try:
        strict.start()
        lenient.start()
        log(
            f"mode {mode_name}; servers {strict.base_url} (pid {strict.pid}), {lenient.base_url} --lenient "
            f"(pid {lenient.pid}); scratch {tmp}"
        )
        bench = Bench(sizes, report, tmp, strict, lenient)
        if args.profile:
            result = bench.profile(args.profile_output)
            print(
                f"{result['n']} samples in {result['wall_s']:.2f} s under pyinstrument; report: {args.profile_output}"
            )
            return 0
        steps: dict[str, Callable[[], None]] = {
            "throughput": bench.throughput,
            "peer": bench.peer,
            "memory": bench.memory,
            "cache": bench.cache,
            "spr": bench.samples_per_request,
            "sync": bench.sync_overhead,
            "studies": bench.studies,
            "echo": bench.echo_once,
            "storage": bench.storage,
            "budget": bench.budgets,
            "scoring": bench.scoring,
            "redis_cache": bench.redis_cache,
            "shared_budget": bench.shared_budget,
        }
        for name, step in steps.items():
            if not only or name in only:
                step()
    finally:
        strict.stop()
        lenient.stop()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    load = foreign.stop()
    for p in load["processes"]:
        log(f"warning: another process used CPU during the run: {p}")

    print_table(report, judged)
    out: dict[str, Any] = {
        "mode": mode_name,
        "judged": judged,
        "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "command": "python -m bench" + ("" if mode_name == "full" else f" --{mode_name}"),
        "machine": machine(),
        "sizes": asdict(sizes),
        "load": {"before": idle, "during": load},
        "targets": [{**asdict(t), "met": t.met, "stretch_met": t.stretch_met} for t in report.targets],
        "errors": report.errors,
        "sections": report.sections,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(
        f"\n{mode_name} mode, {out['duration_s']:.0f} s; os.cpu_count()={out['machine']['cpu_count']}; "
        f"results in {args.json}"
    )
    if report.errors:
        return 1
    if args.strict and judged and any(t.met is False for t in report.targets):
        return 1
    return 0
