"""Bytes stored per generated token (issue 9): the whole cache directory, the records alone, and the logprobs in memory.

    python -m bench.storage            # 200 samples of 32, 256 and 1,000 tokens (the figures of record)
    python -m bench.storage --smoke    # 20 samples of each: checks that the measurement runs

A real client (``AsyncFireworks``) against the in-process simulator asks for ``max_tokens`` 32 / 256 / 1,000
with ``ignore_eos`` (so every sample is that long), a raw prompt, ``logprobs=5`` and ``echo=False``, caching
into a fresh directory. After the client closes, the bench adds up every file in the directory (database,
its index pages, any WAL left) and divides by the generated tokens; it also reads the records back out of
the database (``length(value)``) to show the record bytes alone, and sums ``Logprobs.nbytes()`` for the
same logprobs in memory.

The baseline is measured in the same run: the same samples, encoded as the previous release wrote them
(record format 2 around packed logprobs format 1, rebuilt here from the same columns), written through the
same ``DiskStore`` into another fresh directory. Encode (``encode_record``) and decode (``decode_record``
plus unpacking every logprobs column) are timed per sample for both, best of three passes.

The simulator prints float32 values (``fw_rollouts.testing._model._round32``), as servers computing in
float32 do; the llama.cpp recording in ``tests/data/fixtures/llamacpp`` is float32-exact too. The
documented-shape Fireworks fixtures use short decimals, which are not: a last row packs synthetic
samples of such float64 values (``tests/_shapes.model_like(float64=True)``, not through the simulator).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import os
import sqlite3
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._procs import dir_bytes
from fw_rollouts import AsyncFireworks, FwResponse
from fw_rollouts._logprobs import Logprobs
from fw_rollouts._packing import pack
from fw_rollouts._record import _FIXED, decode_record, encode_record
from fw_rollouts._store import DiskStore
from fw_rollouts.testing import FireworksSimulator

LENGTHS = (32, 256, 1000)
TARGET = 48.0  # bytes stored per generated token, record, index and database included
PROMPT = "Once upon a time"


def _old_record(response: FwResponse, key: str) -> bytes:
    """``response`` as the previous release stored it: record format 2 around packed format 1."""
    lp = response.logprobs
    assert lp is not None
    cols = lp._cols
    old = Logprobs.from_packed(
        pack(cols, num_prompt_tokens=lp.num_prompt_tokens, prompt_length=lp.prompt_length, echo=lp.echo, version=1)
    )
    data = encode_record(dataclasses.replace(response, logprobs=old), key)
    fields = list(_FIXED.unpack_from(data))
    magic, _version, flags, *rest = fields
    body = data[_FIXED.size : -4]
    if flags & 128:  # format 3 stores the content once when it is the full text; format 2 always twice
        full = len(response.full.encode())
        content = response.content.encode()
        body = body[:full] + content + body[full:]
        rest[-6] = len(content)  # content_bytes: the second of the seven lengths
        flags &= ~128
    head = _FIXED.pack(magic, 2, flags, *rest)
    out = head + body
    return out + zlib.crc32(out).to_bytes(4, "little")


async def _fetch(sim: FireworksSimulator, cache_dir: str, n: int, max_tokens: int) -> list[FwResponse]:
    async with AsyncFireworks(
        model="qwen-15b", base_url=sim.base_url, api_key=sim.api_key, cache_dir=cache_dir, progress_bar=False
    ) as client:
        rollouts = await client.generate(
            PROMPT, n, seed=0, raw=True, max_tokens=max_tokens, ignore_eos=True, logprobs=5, echo=False
        )
    return list(rollouts)


def _rows(cache_dir: str) -> list[tuple[str, bytes]]:
    with sqlite3.connect(os.path.join(cache_dir, "cache.db")) as db:
        return [(k, bytes(v)) for k, v in db.execute("SELECT key, value FROM Cache ORDER BY rowid")]


async def _store(directory: str, items: Sequence[tuple[str, bytes]]) -> None:
    store = DiskStore(directory)
    try:
        await store.set_many(list(items))
    finally:
        await store.aclose()


def _best(fn: Callable[[], object], reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _decode_all(records: Sequence[tuple[str, bytes]]) -> None:
    for key, data in records:
        hit = decode_record(data, PROMPT, key)
        assert hit.logprobs is not None
        _ = hit.logprobs._cols  # unpack every column, as the first read of a view does


def _empty_dir_bytes(scratch: str) -> int:
    directory = os.path.join(scratch, "empty")
    asyncio.run(_store(directory, []))
    return dir_bytes(directory)


def _length(sim: FireworksSimulator, scratch: str, n: int, max_tokens: int) -> dict[str, Any]:
    cache_dir = os.path.join(scratch, f"new-{max_tokens}")
    samples = asyncio.run(_fetch(sim, cache_dir, n, max_tokens))
    tokens = sum(len(s.logprobs or ()) for s in samples)
    assert all(s.usage.completion_tokens == max_tokens for s in samples), "a sample stopped early"
    assert tokens == n * max_tokens
    rows = _rows(cache_dir)
    assert len(rows) == n, f"{len(rows)} records for {n} samples"
    # Match each row to its sample by seed (every sample of the call has its own).
    by_seed = {decode_record(data, PROMPT, key).seed: key for key, data in rows}
    keyed = [(by_seed[s.seed], s) for s in samples]
    new_records = [(key, encode_record(s, key)) for key, s in keyed]
    assert sorted(new_records) == sorted(rows), "the directory holds other bytes than encode_record writes"
    old_records = [(key, _old_record(s, key)) for key, s in keyed]
    old_dir = os.path.join(scratch, f"old-{max_tokens}")
    asyncio.run(_store(old_dir, old_records))
    for (key, data), (_, s) in zip(old_records, keyed, strict=True):  # the old format still reads, exactly
        back = decode_record(data, PROMPT, key)
        assert back.logprobs == s.logprobs and back.content == s.content and back.full == s.full
    disk_new, disk_old = dir_bytes(cache_dir), dir_bytes(old_dir)
    memory = sum(s.logprobs.nbytes() for s in samples if s.logprobs is not None)
    enc_new = _best(lambda: [encode_record(s, k) for k, s in keyed]) / n
    enc_old = _best(lambda: [_old_record(s, k) for k, s in keyed]) / n
    dec_new = _best(lambda: _decode_all(new_records)) / n
    dec_old = _best(lambda: _decode_all(old_records)) / n
    return {
        "samples": n,
        "tokens": tokens,
        "disk_bytes_per_token": disk_new / tokens,
        "record_bytes_per_token": sum(len(d) for _, d in new_records) / tokens,
        "logprobs_bytes_per_token": sum(len(s.logprobs.packed()) for s in samples if s.logprobs) / tokens,
        "memory_bytes_per_token": memory / tokens,
        "old_disk_bytes_per_token": disk_old / tokens,
        "old_record_bytes_per_token": sum(len(d) for _, d in old_records) / tokens,
        "disk_ratio": disk_new / disk_old,
        "encode_us": enc_new * 1e6,
        "decode_us": dec_new * 1e6,
        "old_encode_us": enc_old * 1e6,
        "old_decode_us": dec_old * 1e6,
        "pass": disk_new / tokens <= TARGET,
    }


def _float64_row(n: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    model_like = importlib.import_module("_shapes").model_like  # the tests' synthetic samples, for this row only

    logprobs = [model_like(256, seed=i, float64=True) for i in range(n)]
    tokens = 256 * n
    new = sum(len(lp.packed()) for lp in logprobs)
    old = sum(len(pack(lp._cols, num_prompt_tokens=0, prompt_length=0, echo=False, version=1)) for lp in logprobs)
    assert all(Logprobs.from_packed(lp.packed()) == lp for lp in logprobs)
    return {"logprobs_bytes_per_token": new / tokens, "old_logprobs_bytes_per_token": old / tokens}


def measure(smoke: bool) -> dict[str, Any]:
    """Run the measurement (20 samples per length with ``smoke``, else 200), print the table, return the figures."""
    n = 20 if smoke else 200
    results: dict[str, Any] = {"target_bytes_per_token": TARGET, "lengths": {}}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as scratch, FireworksSimulator(record=False) as sim:
        results["empty_directory_bytes"] = _empty_dir_bytes(scratch)
        for max_tokens in LENGTHS:
            results["lengths"][max_tokens] = _length(sim, scratch, n, max_tokens)
    results["float64_256"] = _float64_row(n)
    _print(results)
    return results


def _print(results: dict[str, Any]) -> None:
    rows = results["lengths"]
    first = next(iter(rows.values()))
    print(f"Bytes per generated token, top-5 alternatives, echo off ({first['samples']} samples per length;")
    print(f"an empty cache directory is {results['empty_directory_bytes']:,} bytes, included below)")
    print("| tokens | on disk | records | logprobs | in memory | before: on disk | records | ratio "
          "| encode µs | before | decode µs | before | <= 48 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for length, r in rows.items():
        print(
            f"| {length} | **{r['disk_bytes_per_token']:.1f}** | {r['record_bytes_per_token']:.1f} "
            f"| {r['logprobs_bytes_per_token']:.1f} | {r['memory_bytes_per_token']:.1f} "
            f"| {r['old_disk_bytes_per_token']:.1f} | {r['old_record_bytes_per_token']:.1f} | {r['disk_ratio']:.2f}x "
            f"| {r['encode_us']:.0f} | {r['old_encode_us']:.0f} | {r['decode_us']:.0f} | {r['old_decode_us']:.0f} "
            f"| {'PASS' if r['pass'] else 'FAIL'} |"
        )
    f64 = results["float64_256"]
    print(f"float64 values (synthetic, 256 tokens): packed logprobs {f64['logprobs_bytes_per_token']:.1f} bytes "
          f"per token, before {f64['old_logprobs_bytes_per_token']:.1f}")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.storage [--smoke]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20 samples per length instead of 200")
    args = parser.parse_args(argv)
    measure(args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
