"""The Redis cache store against a real redis-server and the simulator over loopback HTTP.

Shared by processes (an entry one writes is a hit for another), the same records as the disk cache, a
restart mid-run or a server down from the start losing no sample (one warning each), the password never
shown, bad URLs refused before any request, compression, bounded inflation and damaged values read as
misses, errors never cached, one client per event loop, and the CLI's ``--cache-url`` (``--cache`` is the
``use_cache`` toggle).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import pickle
import socket
import threading
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
import redis

from _helpers import MakeClient, client_options, run_python
from _redis import RedisServer, require_redis
from fw_rollouts import (
    AsyncFireworks,
    ConfigurationError,
    Cost,
    DiskStore,
    Fireworks,
    FwRollouts,
    RedisBudget,
    RedisStore,
    SampleStore,
    ServerError,
    ValidationError,
)
from fw_rollouts._cache_key import CacheKeyer
from fw_rollouts.testing import Fault, FireworksSimulator

PROMPT = "Write one sentence about the sea."
PREFIX = b"fw_rollouts:"


def _completions(sim: FireworksSimulator) -> list[Any]:
    return [r for r in sim.requests if r.path.endswith("/completions")]


def _raw(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, db=0)


def _sample_keys(client: AsyncFireworks | Fireworks, seeds: range, prompt: str = PROMPT) -> list[str]:
    settings = client.settings
    keyer = CacheKeyer(settings.resolved_base_url, settings.key_body(client.render(prompt)))
    return [keyer(seed) for seed in seeds]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("fw_rollouts")]


def _dead_url() -> str:
    server = RedisServer(require_redis())  # a free port nothing listens on
    server.close()
    return server.url


# -- sharing, and the same records as the disk cache ----------------------------------------------------------

CHILD = """
import json, sys
from fw_rollouts import Fireworks
options = json.loads(sys.argv[1])
with Fireworks(**options) as client:
    rollouts = client.generate(sys.argv[2], n_samples=int(sys.argv[3]))
    print(json.dumps({"cached": sum(r.cached for r in rollouts), "full": [r.full for r in rollouts],
                      "tokens": [r.logprobs.tokens for r in rollouts]}))
"""


def test_an_entry_one_process_writes_is_a_hit_for_another(
    sim: FireworksSimulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    options = {**client_options(sim, tmp_path / "unused", 8), "cache": redis_server.url}
    done = run_python(CHILD, json.dumps(options), PROMPT, "30")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    theirs = json.loads(done.stdout)
    with Fireworks(**options) as client:  # another process: this one
        ours = client.generate(PROMPT, 30)
    assert len(_completions(sim)) == 30  # this process sent nothing: every sample was the other's
    assert theirs["cached"] == 0 and all(r.cached for r in ours)
    assert theirs["full"] == [r.full for r in ours]
    assert theirs["tokens"] == [r.logprobs.tokens for r in ours if r.logprobs]  # the echoed prompt included


def test_the_same_keys_and_record_bytes_as_the_disk_cache(
    make_client: MakeClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    async def main() -> tuple[list[bytes | None], list[bytes | None], list[str]]:
        async with make_client(cache=redis_server.url, max_tokens=8) as on_redis:
            await on_redis.generate(PROMPT, 6)
            keys = _sample_keys(on_redis, range(6))
            from_redis = await on_redis._services.store.get().get_many(keys)
        disk = DiskStore(tmp_path / "disk")
        async with make_client(cache=disk, max_tokens=8) as on_disk:
            await on_disk.generate(PROMPT, 6)
        from_disk = await disk.get_many(keys)
        await disk.aclose()
        return from_redis, from_disk, keys

    from_redis, from_disk, keys = asyncio.run(main())
    assert all(r is not None and r[:4] == b"FWRC" for r in from_redis)  # records, as the client wrote them
    # The simulator answers each seed the same way, so both stores hold the very same bytes (ids and times aside).
    assert [len(r or b"") for r in from_redis] == [len(d or b"") for d in from_disk]
    names = set(_raw(redis_server).scan_iter(match=PREFIX + b"*"))
    assert {PREFIX + k.encode() for k in keys} <= names  # the client's keys, under the prefix


# -- outages --------------------------------------------------------------------------------------------------


def test_a_restart_mid_run_loses_no_sample_warns_once_and_writing_resumes(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = 240
    with FireworksSimulator(latency=0.02) as sim:  # 240 samples, 4 at a time: a run of about 1.2 s
        before: list[int] = []

        def restart_when_a_third_is_done() -> None:
            while len(_completions(sim)) < n // 3:
                time.sleep(0.005)
            before.append(len(_completions(sim)))
            redis_server.restart(down_for=0.3)

        async def run() -> FwRollouts:
            async with AsyncFireworks(**client_options(sim, tmp_path, 4), cache=redis_server.url) as client:
                return await client.generate(PROMPT, n)

        restarter = threading.Thread(target=restart_when_a_third_is_done)
        restarter.start()
        with caplog.at_level(logging.INFO, logger="fw_rollouts"):
            rollouts = asyncio.run(run())
        restarter.join()
        assert [r.seed for r in rollouts] == list(range(n))  # every sample returned
        (warning,) = _warnings(caplog)
        assert redis_server.url in warning.getMessage() and "cannot be reached" in warning.getMessage()
        assert any("answers again" in r.getMessage() for r in caplog.records)
        # The server came back empty: what it holds now is what was written after it went down.
        stored = sum(1 for _ in _raw(redis_server).scan_iter(match=PREFIX + b"*"))
        assert stored - 1 >= n - before[0] - 16  # the samples fetched after the restart, with the prompt record

        sim.reset()
        with Fireworks(**client_options(sim, tmp_path, 4), cache=redis_server.url) as client:
            again = client.generate(PROMPT, n)
        assert sum(r.cached for r in again) == stored - 1 and len(_completions(sim)) == n - (stored - 1)


def test_a_reader_of_a_prompt_record_writes_it_again_after_a_restart(redis_server: RedisServer, tmp_path: Path) -> None:
    """A process that only read a prompt's record (another wrote it) and fetches more of its samples when Redis
    restarts empty mid-run: those samples hold only their generated positions, so it writes the record again, and
    a later run reads them instead of paying for them again."""
    n = 240
    with FireworksSimulator(latency=0.02) as sim:
        with Fireworks(**client_options(sim, tmp_path, 4), cache=redis_server.url) as writer:
            writer.generate(PROMPT, 4)  # the prompt record and 4 samples, by another client (and store)

        def restart_when_a_third_is_done() -> None:
            while len(_completions(sim)) < 4 + n // 3:
                time.sleep(0.005)
            redis_server.restart(down_for=0.3)

        restarter = threading.Thread(target=restart_when_a_third_is_done)
        restarter.start()
        with Fireworks(**client_options(sim, tmp_path, 4), cache=redis_server.url) as reader:
            assert [r.seed for r in reader.generate(PROMPT, n)] == list(range(n))
        restarter.join()
        stored = sum(1 for _ in _raw(redis_server).scan_iter(match=PREFIX + b"*"))
        assert stored > n // 3  # the samples fetched after the restart, and the prompt record written again
        sim.reset()
        with Fireworks(**client_options(sim, tmp_path, 4), cache=redis_server.url) as later:
            again = later.generate(PROMPT, n)
        assert sum(r.cached for r in again) == stored - 1 and len(_completions(sim)) == n - (stored - 1)


def test_a_server_down_from_the_start_costs_one_warning_and_no_time(
    sim: FireworksSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = _dead_url()

    def run(**cache: Any) -> tuple[float, FwRollouts]:
        with Fireworks(**client_options(sim, tmp_path, 8), **cache) as client:
            started = time.perf_counter()
            items = [f"{PROMPT} ({i})" for i in range(100)]
            results = client.generate_many(items, 3)
            return time.perf_counter() - started, results[0]

    baseline, _ = run(use_cache=False)
    with caplog.at_level(logging.INFO, logger="fw_rollouts"):
        took, first = run(cache=RedisStore(url, connect_timeout=2.0))
    assert [r.seed for r in first] == [0, 1, 2]
    (warning,) = _warnings(caplog)
    assert url in warning.getMessage()
    assert took < 2 * baseline + 1.0, (took, baseline)  # no per-call connect wait (each would be 2 s)


class _Silent:
    """A TCP server that takes connections and never answers (a Redis wedged, or a firewall that drops)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.listener.accept()[0])

    def close(self) -> None:
        self.listener.close()
        for held in self.held:
            held.close()


def test_a_server_that_never_answers_costs_one_timeout_not_one_per_call(caplog: pytest.LogCaptureFixture) -> None:
    silent = _Silent()

    async def main() -> tuple[float, list[float], list[bytes | None]]:
        store = RedisStore(silent.url, connect_timeout=1.0, socket_timeout=1.0)
        started = time.perf_counter()
        assert await store.get_many(["a"]) == [None]
        first = time.perf_counter() - started
        await store.set_many([("kept", b"while down")])
        later = []
        while time.perf_counter() - started < 3.5:  # past several retry times (0.25 s, 0.5 s, 1 s, 2 s)
            t = time.perf_counter()
            found = await store.get_many(["a", "kept"])
            later.append(time.perf_counter() - t)
            await asyncio.sleep(0.02)
        await store.aclose()
        return first, later, found

    try:
        with caplog.at_level(logging.INFO, logger="fw_rollouts"):
            first, later, found = asyncio.run(main())
    finally:
        silent.close()
    assert first >= 0.9  # the one timeout that told the store the server is down
    assert max(later) < 0.3, sorted(later)[-3:]  # the retries went on in the background
    assert found == [None, b"while down"]  # a write kept for later is read from the buffer meanwhile
    (warning,) = _warnings(caplog)
    assert "TimeoutError" in warning.getMessage() and silent.url in warning.getMessage()


# -- secrets and bad URLs ------------------------------------------------------------------------------------

SECRET = "s3cret-redis-passw0rd"


def test_the_password_appears_nowhere(
    sim: FireworksSimulator, redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _raw(redis_server).config_set("requirepass", SECRET)
    url = f"redis://:{SECRET}@127.0.0.1:{redis_server.port}/0"
    wrong = f"redis://user:{SECRET}x@127.0.0.1:{redis_server.port}/0"
    shown: list[str] = []
    with caplog.at_level(logging.DEBUG):
        store = RedisStore(url)
        shown += [store.location, repr(store)]
        with Fireworks(**client_options(sim, tmp_path, 4), cache=url) as client:
            assert len(client.generate(PROMPT, 3)) == 3
            shown.append(repr(client))
        assert len(_raw_with(redis_server, SECRET).keys(PREFIX + b"*")) == 4  # it did authenticate and write
        with Fireworks(**client_options(sim, tmp_path, 4), cache=wrong) as client:  # refused: no cache, one warning
            assert len(client.generate(PROMPT, 3)) == 3
        for bad in (f"redis://:{SECRET}@127.0.0.1:notaport/0", f"redis://:{SECRET}@127.0.0.1:6379/zero"):
            with pytest.raises(ValidationError) as info:
                RedisStore(bad)
            shown += [str(info.value), repr(info.value), repr(info.value.value)]
        with pytest.raises(ValidationError) as info:
            Fireworks("qwen-15b", api_key="k" * 20, cache=f"http://:{SECRET}@example.com/")
        shown += [str(info.value), repr(info.value.value)]
        asyncio.run(_stats_of_a_dead_server(f"redis://:{SECRET}@127.0.0.1:1/0", shown))
    shown += [r.getMessage() for r in caplog.records] + [caplog.text]
    assert "[REDACTED]" in store.location
    assert any("cannot be reached" in s for s in shown)
    assert not [s for s in shown if SECRET in s]


def _raw_with(server: RedisServer, password: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, db=0, password=password)


async def _stats_of_a_dead_server(url: str, shown: list[str]) -> None:
    store = RedisStore(url)
    with pytest.raises(ConfigurationError) as info:
        await store.stats()
    shown.append(str(info.value))
    await store.aclose()


@pytest.mark.parametrize(
    ("cache", "says"),
    [
        ("http://127.0.0.1:6379/0", "redis://"),
        ("/tmp/some/directory", "cache_dir="),
        (".fw_rollouts", "cache_dir="),
        ("redis://", "no host"),
        ("redis://127.0.0.1:99999/0", "out of range"),
        ("redis://127.0.0.1:6379/zero", "database must be a number"),
        ("unix://", "socket's path"),
    ],
)
def test_a_bad_cache_is_refused_before_any_request(sim: FireworksSimulator, cache: str, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        AsyncFireworks("qwen-15b", base_url=sim.base_url, api_key=sim.api_key, cache=cache)
    assert info.value.argument == "cache" and says in str(info.value) and "redis://" in str(info.value)
    assert _completions(sim) == []


def test_a_cache_url_is_accepted_by_every_client(sim: FireworksSimulator, redis_server: RedisServer) -> None:
    options: dict[str, Any] = {"base_url": sim.base_url, "api_key": sim.api_key, "progress_bar": False, "max_tokens": 4}
    with Fireworks("qwen-15b", cache=redis_server.url, **options) as client:
        client.generate(PROMPT, 2)
        sibling = client.with_options(cache=redis_server.url_for(1))
        sibling.generate(PROMPT, 2)
        store = sibling._async._services.store.get()
        assert isinstance(store, RedisStore) and store.location.endswith("/1")
        sibling.close()
    assert _raw(redis_server).dbsize() == 3  # two samples and their prompt's record, on database 0
    assert redis.Redis(port=redis_server.port, db=1).dbsize() == 3
    given = RedisStore(redis_server.url)

    async def twice() -> None:
        async with AsyncFireworks("qwen-15b", cache=given, **options) as client:
            assert (await client.generate(PROMPT, 2))[0].cached

    asyncio.run(twice())
    asyncio.run(twice())  # a store given is not closed with the client, and works on a second event loop
    asyncio.run(given.aclose())
    with pytest.raises(ConfigurationError, match="closed"):
        asyncio.run(given.get_many(["x"]))


def test_one_client_runs_on_two_event_loops(make_client: MakeClient, redis_server: RedisServer) -> None:
    client = make_client(cache=redis_server.url, max_tokens=4)
    first = asyncio.run(client.generate(PROMPT, 3))
    second = asyncio.run(client.generate(PROMPT, 3))  # a redis.asyncio client is bound to its loop: one per loop
    asyncio.run(client.aclose())
    assert not any(r.cached for r in first) and all(r.cached for r in second)
    store = client._services.store
    with pytest.raises(ConfigurationError, match="closed"):
        store.get()


# -- what is stored, and what is read back --------------------------------------------------------------------


def test_values_are_compressed_where_that_pays_and_read_back(redis_server: RedisServer) -> None:
    text = b"the same words again and again " * 200
    noise = os.urandom(5000)  # does not shrink

    async def main() -> list[bytes | None]:
        async with RedisStore(redis_server.url) as store:
            await store.set_many([("text", text), ("noise", noise), ("tiny", b"x")])
            return await store.get_many(["text", "noise", "tiny", "none"])

    assert asyncio.run(main()) == [text, noise, b"x", None]
    raw = _raw(redis_server)
    stored = raw.get(PREFIX + b"text")
    assert stored is not None and stored[:1] == b"\x01" and len(stored) < len(text) // 10
    assert raw.get(PREFIX + b"noise") == b"\x00" + noise and raw.get(PREFIX + b"tiny") == b"\x00x"


def test_a_decompression_bomb_and_damaged_values_are_misses(redis_server: RedisServer) -> None:
    raw = _raw(redis_server)
    bomb = b"\x01" + zlib.compress(bytes(64 * 2**20), 9)  # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 2**17
    raw.set(PREFIX + b"bomb", bomb)
    raw.set(PREFIX + b"bad-zlib", b"\x01" + b"not zlib at all")
    raw.set(PREFIX + b"cut", b"\x01" + zlib.compress(b"a record " * 100)[:-6])
    raw.set(PREFIX + b"tag", b"\x07" + b"from a future version")
    raw.set(PREFIX + b"empty", b"")
    raw.set(PREFIX + b"trailing", b"\x01" + zlib.compress(b"a record " * 100) + b"extra")

    async def main() -> list[bytes | None]:
        async with RedisStore(redis_server.url, max_record_bytes=2**20) as store:
            return await store.get_many(["bomb", "bad-zlib", "cut", "tag", "empty", "trailing"])

    tracemalloc.start()
    try:
        found = asyncio.run(main())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == [None] * 6
    assert peak < 8 * 2**20  # the bomb was never inflated past the limit


def test_a_damaged_sample_is_fetched_again_and_errors_are_never_cached(
    sim: FireworksSimulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    options = {**client_options(sim, tmp_path, 1), "cache": redis_server.url, "max_retries": 0}
    sim.faults.push(Fault.status(500, message="boom"))  # the first request (seed 0, which also echoes)
    with Fireworks(**options) as client:
        with pytest.raises(ServerError) as info:
            client.generate(PROMPT, 4)
        keys = _sample_keys(client, range(4))
    assert info.value.rollouts is not None and [r.seed for r in info.value.rollouts] == [1, 2, 3]
    raw = _raw(redis_server)
    assert raw.get(PREFIX + keys[0].encode()) is None  # the error was not cached
    assert all(raw.get(PREFIX + k.encode()) is not None for k in keys[1:])
    assert not list(raw.scan_iter(match=PREFIX + b"claim:*"))  # and no claim is left behind
    value = bytearray(raw.get(PREFIX + keys[2].encode()) or b"")  # type: ignore[arg-type]
    value[-3] ^= 0xFF  # a flipped byte: the record's CRC (or the inflation) refuses it
    raw.set(PREFIX + keys[2].encode(), bytes(value))

    sim.reset()
    with Fireworks(**options) as client:
        rollouts = client.generate(PROMPT, 4)
    assert sorted(r.body["seed"] for r in _completions(sim) if r.body) == [0, 2]
    assert [r.cached for r in rollouts] == [False, True, False, True]


def test_stats_count_the_prefix_only_and_clear_empties_it(redis_server: RedisServer) -> None:
    """Only the store's own keys (the prefix and a SHA-256) are counted and cleared: a rate budget on the same
    database (whose keys also begin "fw_rollouts:") and anyone else's keys are left alone."""
    raw = _raw(redis_server)
    raw.set(b"someone-else:key", b"theirs")
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2500)]

    async def main() -> tuple[Any, Any, int, Any]:
        budget = RedisBudget(redis_server.url, requests_per_minute=100)
        try:
            budget.release(await budget.acquire(Cost(1, 1)))
        finally:
            await budget.aclose()
        async with RedisStore(redis_server.url) as store:
            await store.set_many([(key, b"v" * 10) for key in keys])
            await store.claim([keys[1]], "me")  # a claim is not an entry
            before = await store.stats()
            other = await RedisStore(redis_server.url, prefix="other:").stats()
            cleared = await store.clear()
            return before, other, cleared, await store.stats()

    before, other, cleared, after = asyncio.run(main())
    assert (before.entries, before.size_bytes) == (2500, 2500 * 11)
    assert other.entries == 0 and cleared == 2501 and after.entries == 0
    assert raw.get(b"someone-else:key") == b"theirs"
    assert raw.keys(b"fw_rollouts:budget:*")  # the budget's keys are still there


def test_the_store_is_a_sample_store_and_says_where_it_is(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="p:")
    assert isinstance(store, SampleStore)
    assert store.location == redis_server.url and "p:" in repr(store)
    with pytest.raises(ValidationError, match="claim_timeout"):
        RedisStore(redis_server.url, claim_timeout=0)
    with pytest.raises(ValidationError, match="ttl"):
        RedisStore(redis_server.url, ttl=-1)


def test_a_store_pickles_as_a_new_store_on_the_same_server(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="p:", claim_timeout=7.0)

    async def write_then_read() -> list[bytes | None]:
        await store.set_many([("k", b"v")])
        copy: RedisStore = pickle.loads(pickle.dumps(store))  # what a worker process gets
        assert copy is not store and copy.prefix == "p:" and copy.claim_timeout == 7.0
        found = await copy.get_many(["k"])
        await copy.aclose()
        await store.aclose()
        return found

    assert asyncio.run(write_then_read()) == [b"v"]


def test_ttl_sets_how_long_an_entry_lives(redis_server: RedisServer) -> None:
    async def main() -> None:
        async with RedisStore(redis_server.url, ttl=60) as store:
            await store.set_many([("a", b"1"), ("b", b"2")])

    asyncio.run(main())
    ttls = [_raw(redis_server).pttl(PREFIX + k) for k in (b"a", b"b")]
    assert all(50_000 < t <= 60_000 for t in ttls)


# -- the command line -----------------------------------------------------------------------------------------


def test_the_cli_takes_a_cache_url(
    sim: FireworksSimulator,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fw_rollouts.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FIREWORKS_API_KEY", sim.api_key)
    url = ["--cache-url", redis_server.url]
    generate = ["generate", PROMPT, "-m", "qwen-15b", "-n", "3", "--max-tokens", "4", "--base-url", sim.base_url]
    assert main([*generate, *url, "-q"]) == 0
    assert main([*generate, *url, "-q"]) == 0
    assert len(_completions(sim)) == 3  # the second run was served from Redis
    assert not (tmp_path / ".fw_rollouts").exists()  # and nothing went to a local cache directory
    capsys.readouterr()
    assert main(["cache", "stats", *url, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["entries"] == 4 and stats["location"] == redis_server.url  # three samples and their prompt's part
    # export reads the samples back out of Redis: the same lines a local cache of the same run exports.
    assert main(["cache", "export", *url, "-o", "redis.jsonl"]) == 0
    assert main([*generate, "--cache-dir", "local", "-q"]) == 0
    assert main(["cache", "export", "--cache-dir", "local", "-o", "local.jsonl"]) == 0

    def samples(name: str) -> list[Any]:  # a reply's own id and time differ between the two fetches
        lines = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        return sorted(({**x, "created": None, "response_id": None} for x in lines), key=lambda x: x["seed"])

    assert [x["seed"] for x in samples("redis.jsonl")] == [0, 1, 2]
    assert samples("redis.jsonl") == samples("local.jsonl")
    assert "exported 3 samples from " + redis_server.url in capsys.readouterr().err
    assert main(["cache", "clear", *url, "--yes"]) == 0
    assert _raw(redis_server).dbsize() == 0
    capsys.readouterr()
    assert main(["cache", "stats", "--cache-url", "http://nowhere"]) != 0
    err = capsys.readouterr().err
    assert "--cache-url" in err and "redis://" in err


def test_a_unix_socket_url_serves_the_cache_and_the_budget(redis_server: RedisServer) -> None:
    """``unix:///path?db=N``: the store and the budget over the server's socket, the same entries as over TCP."""
    url = redis_server.unix_url
    assert url.startswith("unix:///") and url.endswith("?db=0")

    async def main() -> tuple[list[bytes | None], list[bytes | None]]:
        budget = RedisBudget(url, requests_per_minute=100)
        try:
            budget.release(await budget.acquire(Cost(1, 1)))
        finally:
            await budget.aclose()
        async with RedisStore(url) as over_socket, RedisStore(redis_server.url) as over_tcp:
            await over_socket.set_many([("a" * 64, b"record")])
            return await over_socket.get_many(["a" * 64]), await over_tcp.get_many(["a" * 64])

    assert asyncio.run(main()) == ([b"record"], [b"record"])
    assert _raw(redis_server).keys(b"fw_rollouts:budget:*")
