"""A study run as N independent shards (``shard=(i, N)``), without shared state, and put back together.

Three child processes (fresh interpreters, as the tasks of a Slurm array) each run one shard with a cache
directory and a study file of their own, against one simulated server in this process; ``merge_studies``
must then give what the single-process run writes, and ``merge_caches`` a cache from which a re-run sends
nothing (counted at the server). The split is a SHA-256 of what each item sends: checked against a fixed
expectation, by hand, and in processes with other hash seeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _helpers import SRC, MakeClient, same_rollouts
from fw_rollouts import (
    DiskStore,
    Fireworks,
    FwRollouts,
    InvalidTypeError,
    ValidationError,
    load_study,
    merge_caches,
    merge_studies,
)
from fw_rollouts._study_file import read_header
from fw_rollouts.testing import FireworksSimulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


ITEMS: list[Any] = [
    "What is 2+2?",
    "Name a prime.",
    [{"role": "user", "content": "Say hi."}],
    {"prompt": "Count to three.", "n_samples": 3, "temperature": 1.0},
    "Spell cat.",
    {"prompt": "What is 2+2?", "seed": 10},
    "Pick a colour.",
    "One word for sea.",
    {"prompt": "Name a river.", "n_samples": 1},
]

OPTIONS: dict[str, Any] = {"model": "qwen-15b", "max_tokens": 8, "logprobs": 3, "echo": True, "progress_bar": False}

# One shard per child: its client, its own cache directory and study file; it prints its shard's item indices.
CHILD = textwrap.dedent(
    """
    import json, sys
    from fw_rollouts import Fireworks

    options, items, shard = (json.loads(arg) for arg in sys.argv[1:4])
    output = sys.argv[4]
    with Fireworks(**options) as client:
        results = client.generate_many(items, 2, shard=tuple(shard), output=output)
        indices = client.shard_indices(items, 2, shard=tuple(shard))
    print(json.dumps({"indices": indices, "items": [sorted({r.item for r in rollouts}) for rollouts in results]}))
    """
)


def _env(**extra: str) -> dict[str, str]:
    environ = {**os.environ, **extra}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return environ


def _children(
    commands: list[list[str]], env: dict[str, str] | None = None, meanwhile: Callable[[], None] = lambda: None
) -> list[str]:
    """Run the commands at once (each a fresh interpreter), and ``meanwhile`` while they run; their stdout (each
    must exit 0)."""
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or _env())
        for command in commands
    ]
    outputs = []
    try:
        meanwhile()
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            outputs.append(out)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    return outputs


def _entries(directory: Path) -> dict[str, bytes]:
    import diskcache

    with diskcache.Cache(str(directory)) as cache:
        return {key: cache[key] for key in cache.iterkeys()}


def _completions(sim: FireworksSimulator) -> int:
    return sum(1 for r in sim.requests if r.path.endswith("/completions"))


def _same_samples(a: list[FwRollouts], b: list[FwRollouts]) -> None:
    """Two studies equal, every float bit for bit, bar what names each reply (its id and time), not the sample."""

    def anonymous(study: list[FwRollouts]) -> list[FwRollouts]:
        return [
            dataclasses.replace(r, responses=[dataclasses.replace(s, response_id="", created=0) for s in r])
            for r in study
        ]

    assert len(a) == len(b)
    for x, y in zip(anonymous(a), anonymous(b), strict=True):
        same_rollouts(x, y)


# -- three processes, merged ---------------------------------------------------------------------------------------


def test_three_processes_merge_into_the_single_process_study_and_cache(
    sim: FireworksSimulator, tmp_path: Path
) -> None:
    base = {**OPTIONS, "base_url": sim.base_url, "api_key": sim.api_key}
    outputs = [tmp_path / "shard-0.jsonl", tmp_path / "shard-1.parquet", tmp_path / "shard-2.jsonl"]
    commands = [
        [sys.executable, "-c", CHILD, json.dumps({**base, "cache_dir": str(tmp_path / f"cache-{i}")}),
         json.dumps(ITEMS), json.dumps([i, 3]), str(output)]
        for i, output in enumerate(outputs)
    ]  # fmt: skip
    got: list[list[FwRollouts]] = []

    def single_process() -> None:  # the study in this process, as the children run
        with Fireworks(**base, cache_dir=str(tmp_path / "whole-cache")) as client:
            got.append(client.generate_many(ITEMS, 2, output=tmp_path / "whole.jsonl"))

    reports = [json.loads(out) for out in _children(commands, meanwhile=single_process)]
    [whole] = got
    with Fireworks(**base, cache_dir=str(tmp_path / "whole-cache")) as client:
        split = [client.shard_indices(ITEMS, 2, shard=(i, 3)) for i in range(3)]
    # Each child ran its shard, the one this process computes; each item is in exactly one shard.
    for report, mine in zip(reports, split, strict=True):
        assert report["indices"] == mine
        assert report["items"] == [[i] for i in mine]
    assert sorted(i for mine in split for i in mine) == list(range(len(ITEMS)))
    assert all(split)  # this study's items fall in every shard, so each child did some of the work
    samples = sum(r.num_responses for r in whole)
    assert _completions(sim) == 2 * samples  # the shards together asked for each sample once, as this process did

    # A shard given twice (a task re-run, its file copied back) is kept once.
    merged = merge_studies([*outputs, outputs[1]], tmp_path / "merged.jsonl")
    assert (merged.count, merged.shards, merged.missing) == (3, (0, 1, 2), ())
    assert (merged.samples, merged.duplicates) == (samples, sum(whole[i].num_responses for i in split[1]))
    assert (tmp_path / "merged.jsonl").read_bytes().split(b"\n")[0] == (
        (tmp_path / "whole.jsonl").read_bytes().split(b"\n")[0]
    )  # the same header: the unsharded run's own file
    _same_samples(load_study(tmp_path / "merged.jsonl"), load_study(tmp_path / "whole.jsonl"))
    _same_samples(load_study(tmp_path / "merged.jsonl"), [dataclasses.replace(r, cache_dir=None) for r in whole])
    merge_studies(outputs, tmp_path / "merged.parquet")
    assert load_study(tmp_path / "merged.parquet") == load_study(tmp_path / "merged.jsonl")

    caches = merge_caches([tmp_path / f"cache-{i}" for i in range(3)], tmp_path / "merged-cache")
    entries = [_entries(tmp_path / f"cache-{i}") for i in range(3)]
    keys = set().union(*entries)
    assert caches.copied == len(keys) > samples  # the samples, and the prompt parts
    assert caches.present == sum(map(len, entries)) - caches.copied  # items 0 and 5 share a prompt (and its part)
    assert caches.damaged == ()
    into = _entries(tmp_path / "merged-cache")
    assert set(into) == keys
    assert all(into[key] == next(e[key] for e in entries if key in e) for key in keys)  # copied as they were
    before = _completions(sim)
    with Fireworks(**base, cache_dir=str(tmp_path / "merged-cache")) as client:
        again = client.generate_many(ITEMS, 2)
    assert _completions(sim) == before  # all from the merged cache
    assert all(s.cached for r in again for s in r)
    # ... and they are the shards' samples exactly, reply ids and all.
    shards = load_study(tmp_path / "merged.jsonl")
    for x, y in zip(again, shards, strict=True):
        same_rollouts(dataclasses.replace(x, cache_dir=None), dataclasses.replace(y, responses=[
            dataclasses.replace(s, cached=True) for s in y]))  # fmt: skip


# -- the split ---------------------------------------------------------------------------------------------------

STABLE_ITEMS: list[Any] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
                           {"prompt": "alpha", "seed": 7}, {"prompt": "alpha", "temperature": 1.0},
                           {"prompt": "alpha", "n_samples": 5}]  # fmt: skip
STABLE_OPTIONS: dict[str, Any] = {"model": "qwen-15b", "raw": True, "max_tokens": 8, "progress_bar": False,
                                  "api_key": "k", "base_url": "http://127.0.0.1:9/v1"}  # fmt: skip
# Computed once, with this code; a change means shards written before it no longer merge with those written after.
STABLE_SPLIT = [[1, 4, 5, 7], [0, 2, 3, 6, 9, 10, 12], [8, 11]]

SPLIT_CHILD = textwrap.dedent(
    """
    import json, sys
    from fw_rollouts import Fireworks

    options, items = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    with Fireworks(**options) as client:
        print(json.dumps([client.shard_indices(items, 2, shard=(i, 3)) for i in range(3)]))
    """
)


def test_the_split_is_a_sha256_of_what_each_item_sends_the_same_in_every_process(tmp_path: Path) -> None:
    options = {**STABLE_OPTIONS, "cache_dir": str(tmp_path / "cache")}
    with Fireworks(**options) as client:
        split = [client.shard_indices(STABLE_ITEMS, 2, shard=(i, 3)) for i in range(3)]

        def by_hand(item: Any) -> int:
            prompt, fields = (item, {}) if isinstance(item, str) else (item["prompt"], item)
            body = client.settings.for_call({k: v for k, v in fields.items() if k == "temperature"}).key_body(prompt)
            identity = json.dumps([body, fields.get("seed", 0)], sort_keys=True).encode()
            return int.from_bytes(hashlib.sha256(identity).digest()[:8], "big") % 3

        hand = [[i for i, item in enumerate(STABLE_ITEMS) if by_hand(item) == shard] for shard in range(3)]
    assert split == hand == STABLE_SPLIT
    # n_samples does not move an item: "alpha" with 5 samples is where "alpha" is; its seed and options do.
    commands = [[sys.executable, "-c", SPLIT_CHILD, json.dumps(options), json.dumps(STABLE_ITEMS)]]
    for seed in ("0", "1", "12345"):
        [out] = _children(commands, _env(PYTHONHASHSEED=seed))
        assert json.loads(out) == STABLE_SPLIT


def test_every_item_is_in_exactly_one_shard_for_any_n(tmp_path: Path) -> None:
    items = [f"prompt {i}" for i in range(120)]
    with Fireworks(**{**STABLE_OPTIONS, "cache_dir": str(tmp_path / "cache")}) as client:
        for n in (1, 2, 5):
            split = [client.shard_indices(items, shard=(i, n)) for i in range(n)]
            assert sorted(i for mine in split for i in mine) == list(range(len(items)))
            assert all(mine == sorted(mine) for mine in split)
            assert min(map(len, split)) >= len(items) / n / 2  # a hash, so roughly even


@pytest.mark.parametrize(
    "shard",
    [(3, 3), (-1, 2), (0, 0), (0, -2), "0/3", (1.0, 2), (True, 2), (0,), (0, 1, 2), 2, [0, "2"]],
    ids=repr,
)
async def test_bad_shard_values_are_refused_before_any_request(
    shard: Any, make_client: MakeClient, sim: FireworksSimulator, tmp_path: Path
) -> None:
    async with make_client() as client:
        with pytest.raises(ValidationError, match=r"shard.*0 <= i < N") as error:
            await client.generate_many(["a", "b"], shard=shard, output=tmp_path / "study.jsonl")
        assert error.value.argument == "shard"
        with pytest.raises(ValidationError, match="shard"):
            client.iter_generate(["a", "b"], shard=shard)
        with pytest.raises(ValidationError, match="shard"):
            client.shard_indices(["a", "b"], shard=shard)
    assert sim.requests == []
    assert not (tmp_path / "study.jsonl").exists()


async def test_shard_indices_needs_a_shard(make_client: MakeClient) -> None:
    async with make_client() as client:
        with pytest.raises(InvalidTypeError, match="shard"):
            client.shard_indices(["a"], shard=None)  # type: ignore[arg-type]


async def test_a_shard_without_items_runs_nothing_and_still_merges(
    make_client: MakeClient, sim: FireworksSimulator, tmp_path: Path
) -> None:
    items = ["only one"]
    async with make_client(max_tokens=4) as client:
        paths = [tmp_path / f"shard-{i}.jsonl" for i in range(4)]
        results = [await client.generate_many(items, 2, shard=(i, 4), output=paths[i]) for i in range(4)]
        streamed = []
        for i in range(4):
            streamed.append([r async for r in client.iter_generate(items, 2, shard=(i, 4))])
    assert sorted(map(len, results)) == [0, 0, 0, 1]
    assert sorted(map(len, streamed)) == [0, 0, 0, 2]  # the stream's two from the cache
    assert _completions(sim) == 2
    assert [read_header(p)["shard"]["items"] for p in paths] == [[0] if r else [] for r in results]
    merge_studies(paths, tmp_path / "merged.jsonl")
    assert [len(r) for r in load_study(tmp_path / "merged.jsonl")] == [2]


# -- merging: what is refused --------------------------------------------------------------------------------------


async def _shards(client: Any, tmp_path: Path, name: str, n: int, **sampling: Any) -> list[Path]:
    paths = [tmp_path / f"{name}-{i}.jsonl" for i in range(n)]
    for i, path in enumerate(paths):
        await client.generate_many(ITEMS, 2, shard=(i, n), output=path, **sampling)
    return paths


async def test_a_missing_shard_is_refused_unless_partial_and_a_whole_run_then_fetches_only_its_items(
    make_client: MakeClient, sim: FireworksSimulator, tmp_path: Path
) -> None:
    async with make_client(**OPTIONS) as client:
        paths = await _shards(client, tmp_path, "s", 3)
        missing_items = client.shard_indices(ITEMS, 2, shard=(1, 3))
        with pytest.raises(ValidationError, match=r"1 of 3 missing \(shard 1\).*partial=True") as error:
            merge_studies([paths[0], paths[2]], tmp_path / "merged.jsonl")
        assert error.value.argument == "paths"
        assert not (tmp_path / "merged.jsonl").exists()
        merged = merge_studies([paths[0], paths[2]], tmp_path / "merged.jsonl", partial=True)
        assert merged.missing == (1,) and merged.shards == (0, 2)
        got = load_study(tmp_path / "merged.jsonl")
        assert [i for i, r in enumerate(got) if not r.complete] == missing_items
        # The merged file is the whole study's own: an unsharded run resumes it, fetching the missing items only.
        before = _completions(sim)
        whole = await client.generate_many(ITEMS, 2, output=tmp_path / "merged.jsonl", use_cache=False)
        assert _completions(sim) - before == sum(whole[i].num_responses for i in missing_items)
        # The late shard merged into the same file later adds nothing new: its samples are there.
        again = merge_studies([paths[1]], tmp_path / "merged.jsonl", partial=True)
        assert again.samples == 0 and again.duplicates == sum(whole[i].num_responses for i in missing_items)
    assert all(r.complete for r in load_study(tmp_path / "merged.jsonl"))


async def test_shards_of_another_study_or_another_n_are_refused(make_client: MakeClient, tmp_path: Path) -> None:
    async with make_client(**OPTIONS) as client:
        three = await _shards(client, tmp_path, "a", 3)
        hotter = await _shards(client, tmp_path, "b", 3, temperature=1.0)
        two = await _shards(client, tmp_path, "c", 2)
        await client.generate_many(ITEMS, 2, output=tmp_path / "whole.jsonl")
    with pytest.raises(ValidationError, match="shards of one study"):
        merge_studies([three[0], hotter[1], three[2]], tmp_path / "m.jsonl")
    with pytest.raises(ValidationError, match="shard 1 of 2"):
        merge_studies([*three, two[1]], tmp_path / "m.jsonl")
    with pytest.raises(ValidationError, match="without shard="):
        merge_studies([*three, tmp_path / "whole.jsonl"], tmp_path / "m.jsonl")
    with pytest.raises(ValidationError, match="not one of the shards"):
        merge_studies(three, three[0])
    with pytest.raises(ValidationError, match="does not exist"):
        merge_studies([*three, tmp_path / "nowhere.jsonl"], tmp_path / "m.jsonl")
    with pytest.raises(InvalidTypeError, match="paths"):
        merge_studies(str(three[0]), tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()
    # An output holding another study is refused as generate_many refuses it.
    merge_studies(hotter, tmp_path / "hot.jsonl")
    with pytest.raises(ValidationError, match="another study"):
        merge_studies(three, tmp_path / "hot.jsonl")


# -- resuming a shard ----------------------------------------------------------------------------------------------


async def test_a_shard_resumes_from_its_own_file_and_refuses_another_shards(
    make_client: MakeClient, sim: FireworksSimulator, tmp_path: Path
) -> None:
    path = tmp_path / "shard-1.jsonl"
    async with make_client(**OPTIONS) as client:
        first = await client.generate_many(ITEMS, 2, shard=(1, 3), output=path)
        lines = path.read_bytes().splitlines(keepends=True)
        cut = 3
        path.write_bytes(b"".join(lines[:-cut]) + lines[-cut][:10])  # killed: three samples short, one line torn
        before = _completions(sim)
        resumed = await client.generate_many(ITEMS, 2, shard=(1, 3), output=path, use_cache=False)
        assert _completions(sim) - before == cut  # only what the file lost
        with pytest.raises(ValidationError, match=r"output.*another study"):
            await client.generate_many(ITEMS, 2, shard=(0, 3), output=path)
        with pytest.raises(ValidationError, match=r"output.*another study"):
            await client.generate_many(ITEMS, 2, output=path)
    assert _completions(sim) - before == cut
    assert [len(r) for r in resumed] == [len(r) for r in first]
    assert len(path.read_bytes().splitlines()) == len(lines)


# -- merging caches --------------------------------------------------------------------------------------------------


async def test_merge_caches_skips_damaged_entries_and_names_them(make_client: MakeClient, tmp_path: Path) -> None:
    import diskcache

    async with make_client(**OPTIONS, cache_dir=str(tmp_path / "a")) as client:
        await client.generate_many(ITEMS[:2], 2)
    async with make_client(**OPTIONS, cache_dir=str(tmp_path / "b")) as client:
        await client.generate_many(ITEMS[1:3], 2)  # item 1 in both
    with diskcache.Cache(str(tmp_path / "a")) as cache:
        good = len(cache)
        key = next(k for k in cache.iterkeys() if cache[k][:4] == b"FWRC")
        data = bytearray(cache[key])
        data[40] ^= 1
        cache["flipped"] = bytes(data)  # a damaged copy
        cache["moved"] = cache[key]  # an intact record under another key
        cache["pickle"] = b"\x80\x04K\x01."
    merged = merge_caches([tmp_path / "a", tmp_path / "b"], tmp_path / "into")
    assert sorted((Path(source).name, key) for source, key, _ in merged.damaged) == [
        ("a", "flipped"), ("a", "moved"), ("a", "pickle")]  # fmt: skip
    assert "CRC32" in dict((k, why) for _, k, why in merged.damaged)["flipped"]
    with diskcache.Cache(str(tmp_path / "b")) as cache:
        total = good + len(cache)
    with diskcache.Cache(str(tmp_path / "into")) as cache:
        assert len(cache) == merged.copied == total - merged.present
    assert merged.present > 0  # item 1's records, in both
    again = merge_caches([tmp_path / "b"], tmp_path / "into")
    assert (again.copied, again.damaged) == (0, ())
    store = DiskStore(tmp_path / "store")  # or any SampleStore
    try:
        into_store = merge_caches([tmp_path / "b"], store)
        assert into_store.location == store.location and into_store.copied == len(_entries(tmp_path / "b"))
    finally:
        store.close()
    assert _entries(tmp_path / "store") == _entries(tmp_path / "b")
    with pytest.raises(ValidationError, match="sources"):
        merge_caches([tmp_path / "into"], tmp_path / "into")
    with pytest.raises(ValidationError, match="not a directory"):
        merge_caches([tmp_path / "nowhere"], tmp_path / "into")


async def test_merge_caches_copies_a_cache_larger_than_one_read(
    make_client: MakeClient, sim: FireworksSimulator, tmp_path: Path
) -> None:
    async with make_client(max_tokens=2, samples_per_request=100, cache_dir=str(tmp_path / "big")) as client:
        await client.generate("Count.", 1_200)  # more records than one chunk read from a source
    merged = merge_caches([tmp_path / "big"], tmp_path / "into")
    assert (merged.copied, merged.present, merged.damaged) == (len(_entries(tmp_path / "big")), 0, ())
    assert merged.copied > 1_200
    before = _completions(sim)
    async with make_client(max_tokens=2, samples_per_request=100, cache_dir=str(tmp_path / "into")) as client:
        again = await client.generate("Count.", 1_200)
    assert _completions(sim) == before and len(again) == 1_200


async def test_merged_lines_are_the_shards_lines_and_a_seed_past_64_bits_stays_exact(
    make_client: MakeClient, tmp_path: Path
) -> None:
    async with make_client(**OPTIONS) as client:
        paths = await _shards(client, tmp_path, "s", 2)
    lines = paths[0].read_bytes().splitlines(keepends=True)
    data = json.loads(lines[1])
    edited = []
    for big in (2**64 + 4, 2**64 + 5):  # one double: a reader that went through it would keep one of the two
        data["response"]["seed"] = big
        edited.append(json.dumps(data).encode() + b"\n")
    paths[0].write_bytes(b"".join([*lines, *edited]))
    merge_studies(paths, tmp_path / "merged.jsonl")
    merged = (tmp_path / "merged.jsonl").read_bytes().splitlines(keepends=True)
    shard_lines = [line for path in paths for line in path.read_bytes().splitlines(keepends=True)[1:]]
    assert sorted(merged[1:]) == sorted(shard_lines)  # byte for byte
    study = load_study(tmp_path / "merged.jsonl")
    assert {2**64 + 4, 2**64 + 5} <= {s.seed for s in study[data["item"]]}


def test_the_sync_twins_take_shard(sim: FireworksSimulator, tmp_path: Path) -> None:
    options = {**OPTIONS, "base_url": sim.base_url, "api_key": sim.api_key, "cache_dir": str(tmp_path / "cache")}
    with Fireworks(**options) as client:
        mine = client.shard_indices(ITEMS, 2, shard=(2, 3))
        streamed = sorted((r.item, r.seed) for r in client.iter_generate(ITEMS, 2, shard=(2, 3)))
        results = client.generate_many(ITEMS, 2, shard=(2, 3))
    assert sorted({item for item, _ in streamed}) == mine == sorted({r.item for rs in results for r in rs})
    assert streamed == sorted((r.item, r.seed) for rs in results for r in rs)
    assert _completions(sim) == len(streamed)  # the second call from the cache
