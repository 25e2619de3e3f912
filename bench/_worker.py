"""The measured side of the benchmark: one job per process.

``python -m bench._worker '<json spec>'`` runs one job and prints its result as one JSON line
prefixed with ``RESULT `` (anything else on stdout is ignored). Each timed job runs in a fresh
process so that its CPU time (``resource.getrusage``) is the client's alone, imports and earlier
jobs excluded. Jobs read everything they need from the spec; see ``bench/run.py`` for the specs.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import inspect
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from bench._procs import proc_cpu_seconds

Spec = dict[str, Any]
Result = dict[str, Any]

RESULT_PREFIX = "RESULT "
PREOPEN_SEED = 1_000_000_000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timer:
    """Wall time, this process's CPU time and (optionally) the server process's CPU time over a block."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.wall = self.cpu = 0.0
        self.server_cpu: float | None = None

    def __enter__(self) -> Timer:
        gc.collect()
        self._s0 = proc_cpu_seconds(self.server_pid) if self.server_pid else None
        self._c0 = _cpu()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cpu = _cpu() - self._c0
        if self._s0 is not None and self.server_pid:
            s1 = proc_cpu_seconds(self.server_pid)
            self.server_cpu = None if s1 is None else s1 - self._s0

    def result(self, n: int, requests: int | None = None) -> Result:
        requests = n if requests is None else requests
        return {
            "n": n,
            "wall_s": self.wall,
            "cpu_s": self.cpu,
            "samples_per_s": n / self.wall,
            "cpu_ms_per_sample": 1000 * self.cpu / n,
            "server_cpu_s": self.server_cpu,
            "server_cpu_us_per_request": (
                None if self.server_cpu is None or not requests else 1e6 * self.server_cpu / requests
            ),
        }


# -- our client -------------------------------------------------------------------------------------------


def ours_options(spec: Spec, cache_dir: str | None = None) -> dict[str, Any]:
    """The constructor options of the throughput job (what the baselines reproduce)."""
    options: dict[str, Any] = {
        "base_url": spec["base_url"],
        "api_key": spec["api_key"],
        "max_tokens": spec.get("max_tokens", 32),
        "temperature": spec.get("temperature", 0.7),
        "logprobs": spec.get("logprobs", 5),
        "echo": spec.get("echo", True),
        "max_concurrency": spec.get("concurrency", 256),
        "progress_bar": False,
    }
    options.update(spec.get("extra_options", {}))
    if cache_dir is None:
        options["use_cache"] = False
    else:
        options["cache_dir"] = cache_dir
    return options


async def job_ours(spec: Spec) -> Result:
    """``AsyncFireworks(...).generate(prompt, n_samples=n)`` with a cache directory (fresh unless filled).

    The timed block opens the client, generates and closes it; with ``preopen`` the client has already
    sent one request (another seed) before the block, which then holds the ``generate`` call alone.
    """
    from fw_rollouts import AsyncFireworks

    n = spec["n"]
    options = ours_options(spec, spec["cache_dir"])
    client = None
    if spec.get("preopen"):
        client = AsyncFireworks(spec["model"], **options)
        await client.generate(spec["prompt"], n_samples=1, seed=PREOPEN_SEED)
    with Timer(spec.get("server_pid")) as timer:
        if client is None:
            async with AsyncFireworks(spec["model"], **options) as fresh:
                rollouts = await fresh.generate(spec["prompt"], n_samples=n)
        else:
            rollouts = await client.generate(spec["prompt"], n_samples=n)
    if client is not None:
        await client.aclose()
    cached = sum(1 for r in rollouts if r.cached)
    if len(rollouts) != n:
        raise RuntimeError(f"got {len(rollouts)} samples, expected {n}")
    if spec.get("expect_cached") is not None and cached != (n if spec["expect_cached"] else 0):
        raise RuntimeError(f"{cached} of {n} samples came from the cache (expect_cached={spec['expect_cached']})")
    out = timer.result(n, requests=0 if spec.get("expect_cached") else n)
    out["transport"] = os.environ.get("FW_ROLLOUTS_TRANSPORT", "default")
    out["cached"] = cached
    return out


def job_probe(spec: Spec) -> Result:
    """What our client sends for the throughput job: the exact body (recorded by an in-process simulator)."""
    from fw_rollouts import Fireworks
    from fw_rollouts.testing import FireworksSimulator

    with FireworksSimulator(record=True) as sim:
        options = ours_options({**spec, "base_url": sim.base_url, "api_key": sim.api_key})
        with Fireworks(spec["model"], **options) as client:
            rollouts = client.generate(spec["prompt"], n_samples=2)
        posts = [r for r in sim.requests if r.path.endswith("/completions") and r.body]
    if not posts:
        raise RuntimeError("the probe recorded no completions request")
    body = dict(posts[0].body or {})
    if body.get("prompt") != rollouts.prompt_text:
        raise RuntimeError("the recorded prompt differs from rollouts.prompt_text")
    body.pop("seed", None)
    return {
        "body": body,
        "prompt_text": rollouts.prompt_text,
        "requests_for_2_samples": len(posts),
        "model": rollouts.model,
        "finish_reasons": rollouts.get_finish_reasons(),
    }


# -- baselines --------------------------------------------------------------------------------------------


def _bodies(spec: Spec) -> list[dict[str, Any]]:
    """The bodies our client sends for ``spec["n"]`` samples: one per seed, or one per ``n`` seeds when the
    probed body asks for several choices (``samples_per_request``)."""
    base, n = spec["body"], spec["n"]
    k = int(base.get("n", 1))
    if k == 1:
        return [dict(base, seed=i) for i in range(n)]
    return [dict(base, seed=s, n=min(k, n - s)) for s in range(0, n, k)]


async def job_bare_aiohttp(spec: Spec) -> Result:
    """A pooled aiohttp session, a semaphore, ``json.loads`` of each body: the floor for any Python client."""
    import aiohttp

    url = spec["base_url"].rstrip("/") + "/completions"
    headers = {"Authorization": f"Bearer {spec['api_key']}", "Content-Type": "application/json"}
    bodies = _bodies(spec)
    concurrency = spec.get("concurrency", 256)
    parsed = 0

    async def one(session: aiohttp.ClientSession, sem: asyncio.Semaphore, body: dict[str, Any]) -> None:
        nonlocal parsed
        async with sem, session.post(url, data=json.dumps(body).encode(), headers=headers) as response:
            content = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {content[:200]!r}")
        data = json.loads(content)
        parsed += len(data["choices"])

    with Timer(spec.get("server_pid")) as timer:
        sem = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(one(session, sem, b) for b in bodies))
    if parsed != spec["n"]:
        raise RuntimeError(f"parsed {parsed} choices for {spec['n']} samples")
    return timer.result(spec["n"], requests=len(bodies))


def _openai_client(spec: Spec) -> Any:
    import httpx2
    import openai

    concurrency = spec.get("concurrency", 256)
    http_client = openai.DefaultAioHttpClient(
        limits=httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    )
    return openai.AsyncOpenAI(
        base_url=spec["base_url"], api_key=spec["api_key"], max_retries=0, http_client=http_client
    )


def _openai_kwargs(create: Callable[..., Any], body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as keyword arguments of ``completions.create``: named parameters, the rest in ``extra_body``."""
    names = set(inspect.signature(create).parameters)
    kwargs = {k: v for k, v in body.items() if k in names}
    extra = {k: v for k, v in body.items() if k not in names}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


async def job_openai(spec: Spec) -> Result:
    """``openai.AsyncOpenAI`` on its aiohttp client: pydantic-parsed, or raw bytes + ``json.loads``."""
    raw = spec["variant"] == "openai_raw"
    bodies = _bodies(spec)
    sem = asyncio.Semaphore(spec.get("concurrency", 256))
    parsed = 0

    with Timer(spec.get("server_pid")) as timer:
        client = _openai_client(spec)
        create = client.completions.with_raw_response.create if raw else client.completions.create

        async def one(body: dict[str, Any]) -> None:
            nonlocal parsed
            async with sem:
                result = await create(**_openai_kwargs(client.completions.create, body))
            if raw:
                parsed += len(json.loads(result.content)["choices"])
            else:
                parsed += len(result.choices)

        try:
            await asyncio.gather(*(one(b) for b in bodies))
        finally:
            await client.close()
    if parsed != spec["n"]:
        raise RuntimeError(f"parsed {parsed} choices for {spec['n']} samples")
    return timer.result(spec["n"], requests=len(bodies))


def _peer_client(spec: Spec, cache_dir: str, api_url: str, max_retries: int = 3) -> Any:
    os.environ.setdefault("OPENROUTER_API_KEY", spec["api_key"])
    from rollouts import RolloutsClient

    client = RolloutsClient(
        model=spec["peer_model"],
        max_tokens=spec.get("max_tokens", 32),
        temperature=spec.get("temperature", 0.7),
        use_cache="json",
        cache_dir=cache_dir,
        progress_bar=False,
        max_retries=max_retries,
    )
    client.provider.api_url = api_url
    return client


async def job_peer(spec: Spec) -> Result:
    """The peer ``rollouts`` package, pointed at the simulator's chat endpoint (its cache on, fresh or filled)."""
    n = spec["n"]
    # On a cache-hit run the peer gets a dead URL, so that a miss shows up as an error instead of a request.
    api_url = spec.get("api_url") or spec["chat_url"]
    with Timer(spec.get("server_pid")) as timer:
        client = _peer_client(spec, spec["cache_dir"], api_url, max_retries=1 if spec.get("api_url") else 3)
        rollouts = await client.agenerate(spec["prompt"], n_samples=n)
    errors = [r.full for r in rollouts.responses if r.finish_reason == "error"]
    if len(rollouts.responses) != n or errors:
        raise RuntimeError(f"peer: {len(rollouts.responses)} of {n} samples, errors: {errors[:3]}")
    out = timer.result(n, requests=0 if spec.get("api_url") else n)
    out["finish_reasons"] = sorted({r.finish_reason for r in rollouts.responses})
    return out


async def job_peer_fill(spec: Spec) -> Result:
    """Fill the peer's cache through its own ``agenerate`` and cache, with a faster transport underneath.

    The peer opens a new ``httpx.AsyncClient`` (and TLS context) per request, about 30 ms of CPU each, so
    10,000 real requests would take minutes. Its ``generate_single`` is replaced by one that builds the same
    payload, posts it on one pooled aiohttp session and parses the reply with the peer's own
    ``_parse_response``; ``agenerate`` then writes its cache files exactly as usual.
    """
    import aiohttp
    from rollouts.think_handler import format_messages_with_thinking

    client = _peer_client(spec, spec["cache_dir"], spec["chat_url"])
    provider = client.provider
    client_only = {"max_retries", "timeout", "verbose", "use_cache", "cache_dir", "requests_per_minute"}
    headers = {"Authorization": f"Bearer {provider.api_key}", "Content-Type": "application/json"}
    sem = asyncio.Semaphore(spec.get("concurrency", 256))

    with Timer() as timer:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

            async def generate_single(
                prompt: Any,
                config: dict[str, Any],
                seed: int | None = None,
                api_key: Any = None,
                rate_limiter: Any = None,
            ) -> Any:
                payload = {k: v for k, v in config.items() if k not in client_only and v is not None}
                payload["messages"] = format_messages_with_thinking(prompt, config["model"], config["verbose"])
                if seed is not None:
                    payload["seed"] = seed
                async with sem, session.post(provider.api_url, json=payload, headers=headers) as response:
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}: {(await response.read())[:200]!r}")
                    result = await response.json()
                return provider._parse_response(result, config["model"], seed)

            provider.generate_single = generate_single
            rollouts = await client.agenerate(spec["prompt"], n_samples=spec["n"])
    if len(rollouts.responses) != spec["n"]:
        raise RuntimeError(f"peer fill: {len(rollouts.responses)} of {spec['n']} samples")
    return {"n": spec["n"], "fill_s": timer.wall}


# -- memory -----------------------------------------------------------------------------------------------


def _vocab_state() -> tuple[int, int, int]:
    from fw_rollouts import _logprobs

    return len(_logprobs._STRINGS), sys.getsizeof(_logprobs._VOCAB), sys.getsizeof(_logprobs._STRINGS)


def _vocab_growth(before: tuple[int, int, int]) -> int:
    """Bytes the shared vocabulary grew by since ``before``: the new strings and both containers' growth."""
    from fw_rollouts import _logprobs

    count, vocab_size, strings_size = before
    new = sum(sys.getsizeof(s) for s in _logprobs._STRINGS[count:])
    return new + sys.getsizeof(_logprobs._VOCAB) - vocab_size + sys.getsizeof(_logprobs._STRINGS) - strings_size


async def job_memory(spec: Spec) -> Result:
    """Bytes held per token by ``n`` samples of ``tokens`` generated tokens with top-5 alternatives."""
    from fw_rollouts import AsyncFireworks

    n, tokens = spec["n"], spec["tokens"]
    options = ours_options(
        {**spec, "max_tokens": tokens, "echo": False, "extra_options": {"raw": True, "ignore_eos": True}}
    )
    options["max_concurrency"] = concurrency = 32
    tracemalloc.start()
    async with AsyncFireworks(spec["model"], **options) as client:
        # Warm-up on other seeds, as many as run at once: afterwards the connection pool is at its full size
        # with buffers for replies of this size, and templates, imports and the vocabulary exist.
        await client.generate(spec["memory_prompt"], n_samples=concurrency, seed=1_000_000)
        gc.collect()
        vocab0 = _vocab_state()
        held0 = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        rollouts = await client.generate(spec["memory_prompt"], n_samples=n)
        gc.collect()
        held1, peak = tracemalloc.get_traced_memory()
    vocab = _vocab_growth(vocab0)
    total_tokens = sum(len(r.logprobs) for r in rollouts if r.logprobs is not None)
    finish = sorted({r.finish_reason for r in rollouts})
    completion = sorted({r.usage.completion_tokens for r in rollouts})
    top_k = {len(d) for r in rollouts[:3] if r.logprobs is not None for d in r.logprobs.top_logprobs if d}
    texts = {id(x): x for r in rollouts for x in (r.full, r.content, r.reasoning) if isinstance(x, str)}
    text_bytes = sum(sys.getsizeof(x) for x in texts.values())
    nbytes = sum(r.logprobs.nbytes() for r in rollouts if r.logprobs is not None)

    # The same logprobs as plain Python lists and dicts, for contrast.
    gc.collect()
    plain0 = tracemalloc.get_traced_memory()[0]
    plain = [r.logprobs.to_dict() for r in rollouts if r.logprobs is not None]
    gc.collect()
    plain1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del plain
    held = held1 - held0
    return {
        "n": n,
        "tokens_per_sample": tokens,
        "total_tokens": total_tokens,
        "finish_reasons": finish,
        "completion_tokens": completion,
        "top_alternatives": sorted(top_k),
        "held_bytes": held,
        "vocab_growth_bytes": vocab,
        "vocab_size": _vocab_state()[0],
        "bytes_per_token": (held - vocab) / total_tokens,
        "peak_bytes_per_token": (peak - held0) / total_tokens,
        "text_bytes_per_token": text_bytes / total_tokens,
        "nbytes_per_token": nbytes / total_tokens,
        "plain_bytes_per_token": (plain1 - plain0) / total_tokens,
    }


# -- cache ------------------------------------------------------------------------------------------------


def _keyer(spec: Spec) -> tuple[Any, str]:
    """The cache keyer ``generate`` uses for the throughput job, and the prompt string it sends."""
    from fw_rollouts._cache_key import CacheKeyer
    from fw_rollouts._settings import Settings

    settings = Settings.create(model=spec["model"], **ours_options(spec, spec["cache_dir"]))
    return CacheKeyer(settings.resolved_base_url, settings.key_body(spec["prompt_text"])), spec["prompt_text"]


def job_cache_fill(spec: Spec) -> Result:
    """Copy a directory of real samples, then add dummy entries straight into its diskcache, in big transactions."""
    import diskcache

    src, dst, total = spec["src"], spec["dst"], spec["total"]
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    disk = diskcache.Cache(dst, eviction_policy="none")
    start = len(disk)
    value = os.urandom(spec.get("dummy_bytes", 64))
    t0 = time.perf_counter()
    batch = 50_000
    for first in range(start, total, batch):
        with disk.transact():
            for i in range(first, min(first + batch, total)):
                disk.set(hashlib.sha256(b"dummy-%d" % i).hexdigest(), value)
    fill_s = time.perf_counter() - t0
    entries = len(disk)
    disk.close()
    return {"entries": entries, "real": start, "fill_s": fill_s}


def job_cache_lookup(spec: Spec) -> Result:
    """Per-hit time of a store lookup (``DiskStore.get_many`` and decoding each record) for the real samples
    of a cache directory, and of a cached ``generate`` for the same samples."""
    from fw_rollouts import DiskStore, Fireworks
    from fw_rollouts._record import decode_prompt_record, decode_record

    n, passes = spec["n"], spec.get("passes", 5)
    keyer, prompt = _keyer(spec)
    keys = [keyer(s) for s in range(n)]
    prompt_key = keyer.prompt_key()  # with echo, the prompt's part is stored once, beside the samples

    async def lookups() -> tuple[list[float], int]:
        times = []
        async with DiskStore(spec["cache_dir"]) as store:
            for _ in range(passes + 1):
                gc.collect()
                t0 = time.perf_counter()
                *records, part_data = await store.get_many([*keys, prompt_key])
                part = None if part_data is None else decode_prompt_record(part_data, prompt, prompt_key)
                hits = [
                    None if data is None else decode_record(data, prompt, key, part)
                    for key, data in zip(keys, records, strict=True)
                ]
                times.append(time.perf_counter() - t0)
                if any(h is None for h in hits):
                    raise RuntimeError(f"{sum(h is None for h in hits)} of {n} real samples missing from the cache")
                del hits
            return times, (await store.stats()).entries

    times, entries = asyncio.run(lookups())
    generate_times = []
    with Fireworks(spec["model"], **ours_options(spec, spec["cache_dir"])) as client:
        for _ in range(max(2, passes // 2)):
            gc.collect()
            t0 = time.perf_counter()
            rollouts = client.generate(spec["prompt"], n_samples=n)
            generate_times.append(time.perf_counter() - t0)
            if sum(r.cached for r in rollouts) != n:
                raise RuntimeError("a cached generate sent requests")
    warm = sorted(times[1:])
    return {
        "entries": entries,
        "n": n,
        "first_pass_us_per_hit": 1e6 * times[0] / n,
        "best_us_per_hit": 1e6 * warm[0] / n,
        "median_us_per_hit": 1e6 * warm[len(warm) // 2] / n,
        "generate_best_us_per_sample": 1e6 * min(generate_times) / n,
    }


# -- samples_per_request ----------------------------------------------------------------------------------


def job_spr(spec: Spec) -> Result:
    """Requests sent by ``generate(..., samples_per_request=k)``, counted by an in-process simulator."""
    from fw_rollouts import Fireworks, ValidationError
    from fw_rollouts.testing import FireworksSimulator

    n = spec["n"]
    rows = []
    with FireworksSimulator(record=True) as sim, tempfile.TemporaryDirectory() as tmp:
        for k in spec["ks"]:
            sim.reset()
            options = ours_options({**spec, "base_url": sim.base_url, "api_key": sim.api_key}, f"{tmp}/k{k}")
            row: dict[str, Any] = {"k": k, "limit": math.ceil(n / k)}
            try:
                with Fireworks(spec["model"], **options) as client:
                    t0 = time.perf_counter()
                    rollouts = client.generate(spec["prompt"], n_samples=n, samples_per_request=k)
                    row["wall_s"] = time.perf_counter() - t0
            except ValidationError as exc:
                if "samples_per_request" not in str(exc):
                    raise
                row["status"] = "not available"
                row["error"] = str(exc).splitlines()[0][:200]
                rows.append(row)
                continue
            requests = sum(1 for r in sim.requests if r.path.endswith("/completions"))
            row.update(
                status="ok",
                samples=len(rollouts),
                requests=requests,
                ok=len(rollouts) == n and requests <= row["limit"],
                distinct_seeds=len({r.seed for r in rollouts}),
            )
            rows.append(row)
    return {"n": n, "rows": rows}


# -- sync facade ------------------------------------------------------------------------------------------


def job_sync_overhead(spec: Spec) -> Result:
    """Per-call time of a fully cached ``Fireworks.generate`` vs ``await AsyncFireworks.generate``."""
    from fw_rollouts import AsyncFireworks, Fireworks

    calls, rounds = spec["calls"], spec.get("rounds", 3)
    options = ours_options(spec, spec["cache_dir"])
    prompt = spec["prompt"]
    with Fireworks(spec["model"], **options) as client:
        if client.generate(prompt)[0].cached:
            raise RuntimeError("the cache directory was not fresh")

    def run_sync() -> tuple[float, float]:
        with Fireworks(spec["model"], **options) as client:
            assert client.generate(prompt)[0].cached
            gc.collect()
            c0, t0 = _cpu(), time.perf_counter()
            for _ in range(calls):
                client.generate(prompt)
            return time.perf_counter() - t0, _cpu() - c0

    async def run_async() -> tuple[float, float]:
        async with AsyncFireworks(spec["model"], **options) as client:
            assert (await client.generate(prompt))[0].cached
            gc.collect()
            c0, t0 = _cpu(), time.perf_counter()
            for _ in range(calls):
                await client.generate(prompt)
            return time.perf_counter() - t0, _cpu() - c0

    sync_runs, async_runs = [], []
    for _ in range(rounds):
        async_runs.append(asyncio.run(run_async()))
        sync_runs.append(run_sync())
    per = {
        name: sorted(1000 * wall / calls for wall, _ in runs)
        for name, runs in (("sync", sync_runs), ("async", async_runs))
    }
    cpu = {name: min(1000 * c / calls for _, c in runs) for name, runs in (("sync", sync_runs), ("async", async_runs))}
    return {
        "calls": calls,
        "rounds": rounds,
        "sync_ms_per_call": per["sync"],
        "async_ms_per_call": per["async"],
        "sync_cpu_ms_per_call": cpu["sync"],
        "async_cpu_ms_per_call": cpu["async"],
        "added_ms_best": per["sync"][0] - per["async"][0],
        "added_ms_median": per["sync"][len(per["sync"]) // 2] - per["async"][len(per["async"]) // 2],
    }


# -- profile ----------------------------------------------------------------------------------------------


async def _profiled(spec: Spec) -> Result:
    from pyinstrument import Profiler

    import fw_rollouts  # noqa: F401  (imported before the profiler starts: the job excludes imports)

    gc.collect()
    gc.freeze()  # keeps the timer's own gc.collect() out of the profile
    profiler = Profiler(interval=0.0005, async_mode="enabled")
    profiler.start()
    try:
        result = await job_ours(spec)
    finally:
        profiler.stop()
    with open(spec["output"], "w") as f:
        f.write(profiler.output_text(unicode=True, color=False, show_all=False))
    result["profile"] = spec["output"]
    return result


# -- entry point ------------------------------------------------------------------------------------------

JOBS: dict[str, Callable[[Spec], Result | Awaitable[Result]]] = {
    "ours": job_ours,
    "ours_openai": job_ours,
    "probe": job_probe,
    "bare_aiohttp": job_bare_aiohttp,
    "openai_parsed": job_openai,
    "openai_raw": job_openai,
    "peer": job_peer,
    "peer_fill": job_peer_fill,
    "memory": job_memory,
    "cache_fill": job_cache_fill,
    "cache_lookup": job_cache_lookup,
    "spr": job_spr,
    "sync_overhead": job_sync_overhead,
    "profile": _profiled,
}


def main(argv: list[str]) -> int:
    spec: Spec = json.loads(argv[0])
    job = JOBS[spec["variant"]]
    result = job(spec)
    if inspect.isawaitable(result):
        result = asyncio.run(result)  # type: ignore[arg-type]
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
