"""Echo paid once per prompt, the data side: what N samples of a long prompt take with the prompt's logprobs shared.

    python -m bench.echo            # 100 samples of a 1,500-token prompt, 64 generated tokens each, logprobs 5
    python -m bench.echo --smoke    # 10 samples of a 150-token prompt: checks that the measurement runs

Real simulator replies to the same requests (one seed per sample), once with echo and once without, are parsed
here; the echo-once samples are the first echoed reply's sample and the other replies without echo, each given
the first one's prompt part (``with_prompt``). Three ways of holding the same N samples are compared, each
measured in this run:

- **once**: the echo-once samples (one prompt part, N generated parts); stored as N generated-only records
  plus one prompt record;
- **baseline**: the same samples parsed without echo, plus one copy of the prompt's logprobs (the part alone);
  stored as N records without echo plus one prompt record;
- **today**: every sample parsed from its echoed reply (N copies of the prompt), stored as N whole records.

The target (issue 9): bytes received, stored and held for "once" at most 1.2x "baseline". Bytes received are
the reply bodies: with one echoed request per prompt they are the baseline's plus nothing by construction (the
echoed reply is a reply without echo plus the prompt copy), so the figure shown is the request loop's choice of
which request carries echo, measured on these bodies. Memory is tracemalloc's count of what the built samples
hold, after a warm-up that interned every token string (the shared vocabulary does not grow while measuring),
both as returned and after every list view of every sample has been read. Stored bytes are the record bytes
and the size of a ``DiskStore`` directory holding them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench._procs import dir_bytes, post_completion
from fw_rollouts import FwResponse
from fw_rollouts._cache_key import CacheKeyer
from fw_rollouts._echo import PromptPart, with_prompt
from fw_rollouts._parsing import ResponseSpec, decode_body, parse_completion
from fw_rollouts._record import encode_prompt_record, encode_record
from fw_rollouts._store import DiskStore
from fw_rollouts.testing import FireworksSimulator

MODEL = "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"
SENTENCE = "The keeper climbed the stairs of the lighthouse each night to light the lamp."  # 15 simulator tokens
VIEWS = ("tokens", "token_logprobs", "top_logprobs", "text_offset", "token_ids", "sampling_logprobs")
TARGET = 1.2

T = TypeVar("T")


def _held(build: Callable[[], T]) -> tuple[T, int]:
    """What ``build()`` returns, and the bytes it holds (tracemalloc, after collecting garbage)."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    value = build()
    gc.collect()
    return value, tracemalloc.get_traced_memory()[0] - before


def _read_views(samples: list[FwResponse], part: PromptPart | None = None) -> None:
    for lp in [s.logprobs for s in samples] + ([part.logprobs] if part is not None else []):
        assert lp is not None
        for name in VIEWS:
            getattr(lp, name)


def _store_bytes(items: list[tuple[str, bytes]], directory: Path) -> int:
    async def write() -> None:
        async with DiskStore(directory) as store:
            await store.set_many(items)

    asyncio.run(write())
    return dir_bytes(directory)


def measure(smoke: bool) -> dict[str, Any]:
    """The figures of the module docstring, as a dict (ratios against the baseline measured in this run)."""
    n, sentences, max_tokens = (10, 10, 64) if smoke else (100, 100, 64)
    prompt = " ".join([SENTENCE] * sentences)
    request = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "logprobs": 5, "ignore_eos": True}
    with FireworksSimulator(record=False) as sim:
        echoed_bodies = [post_completion(sim, {**request, "seed": s, "echo": True}) for s in range(n)]
        plain_bodies = [post_completion(sim, {**request, "seed": s}) for s in range(n)]
    echo_spec = ResponseSpec(prompt=prompt, echo=True, logprobs=True)
    plain_spec = ResponseSpec(prompt=prompt, echo=False, logprobs=True)

    def parse(body: bytes, spec: ResponseSpec, seed: int) -> FwResponse:
        return parse_completion(decode_body(body), spec, [seed])[0]

    def today() -> list[FwResponse]:
        return [parse(b, echo_spec, s) for s, b in enumerate(echoed_bodies)]

    def plain() -> list[FwResponse]:
        return [parse(b, plain_spec, s) for s, b in enumerate(plain_bodies)]

    def part_alone() -> PromptPart:
        part = PromptPart.of(parse(echoed_bodies[0], echo_spec, 0))
        assert part is not None
        return part

    def once() -> list[FwResponse]:
        first = parse(echoed_bodies[0], echo_spec, 0)
        part = PromptPart.of(first)
        assert part is not None
        rest = (with_prompt(parse(b, plain_spec, s), part) for s, b in enumerate(plain_bodies[1:], start=1))
        return [with_prompt(first, part), *rest]

    # Warm-up: every token string interned, every code path run once.
    check_today, check_once = today(), once()
    for got, want in zip(check_once, check_today, strict=True):
        assert got.logprobs is not None and want.logprobs is not None
        assert got.logprobs == want.logprobs and got.full_text == want.full_text and got.usage == want.usage
    prompt_tokens = check_today[0].logprobs.num_prompt_tokens if check_today[0].logprobs else 0
    generated = [len(s.logprobs) - prompt_tokens for s in check_today if s.logprobs is not None]
    del check_today, check_once
    plain(), part_alone()

    tracemalloc.start()
    try:
        once_samples, held_once = _held(once)
        plain_samples, held_plain = _held(plain)
        part, held_part = _held(part_alone)
        today_samples, held_today = _held(today)
        shared = once_samples[0].get_prompt_logprobs()
        assert all(s.get_prompt_logprobs() is shared for s in once_samples)
        # The same, after every list view of every sample (and of the one part) has been read.
        _, views_once = _held(lambda: _read_views(once_samples))
        _, views_plain = _held(lambda: _read_views(plain_samples, part))
        _, views_today = _held(lambda: _read_views(today_samples))
    finally:
        tracemalloc.stop()

    keyer = CacheKeyer("http://127.0.0.1/v1/completions", {**request, "echo": True})
    prompt_key = keyer.prompt_key()
    once_part = PromptPart.of(once_samples[0])
    assert once_part is not None
    prompt_record = (prompt_key, encode_prompt_record(once_part, prompt_key))
    records = {
        "once": [(keyer(s), encode_record(r, keyer(s))) for s, r in enumerate(once_samples)] + [prompt_record],
        "baseline": [(keyer(s), encode_record(r, keyer(s))) for s, r in enumerate(plain_samples)] + [prompt_record],
        "today": [(keyer(s), encode_record(r, keyer(s))) for s, r in enumerate(today_samples)],
    }
    record_bytes = {name: sum(len(data) for _, data in items) for name, items in records.items()}
    with tempfile.TemporaryDirectory(prefix="fw-bench-echo-") as tmp:
        disk_bytes = {name: _store_bytes(items, Path(tmp) / name) for name, items in records.items()}

    received = {
        "once": len(echoed_bodies[0]) + sum(map(len, plain_bodies[1:])),
        "baseline": sum(map(len, plain_bodies)) + len(echoed_bodies[0]) - len(plain_bodies[0]),
        "today": sum(map(len, echoed_bodies)),
    }
    held = {"once": held_once, "baseline": held_plain + held_part, "today": held_today}
    held_views = {
        "once": held_once + views_once,
        "baseline": held_plain + held_part + views_plain,
        "today": held_today + views_today,
    }
    result: dict[str, Any] = {
        "samples": n,
        "prompt_tokens": prompt_tokens,
        "generated_tokens": sorted(set(generated)),
        "received_bytes": received,
        "record_bytes": record_bytes,
        "disk_bytes": disk_bytes,
        "held_bytes": held,
        "held_bytes_views_read": held_views,
        "prompt_part_held_bytes": held_part,
    }
    for figure in ("received_bytes", "record_bytes", "disk_bytes", "held_bytes", "held_bytes_views_read"):
        values = result[figure]
        result[figure.replace("bytes", "ratio")] = {
            "once/baseline": values["once"] / values["baseline"],
            "today/baseline": values["today"] / values["baseline"],
        }
    result["targets_met"] = all(
        result[f]["once/baseline"] <= TARGET for f in ("received_ratio", "record_ratio", "disk_ratio", "held_ratio")
    )
    return result


def _report(result: dict[str, Any]) -> None:
    print(
        f"echo once: {result['samples']} samples of a {result['prompt_tokens']}-token prompt, "
        f"{'/'.join(map(str, result['generated_tokens']))} generated tokens each, logprobs 5"
    )
    print(f"{'':34}{'once':>12}{'baseline':>12}{'today':>12}{'once/base':>11}{'today/base':>11}")
    rows = (
        ("bytes received (reply bodies)", "received"),
        ("bytes stored (records)", "record"),
        ("bytes stored (DiskStore directory)", "disk"),
        ("bytes held (as returned)", "held"),
        ("bytes held (every view read)", "held_views_read"),
    )
    for label, key in rows:
        values = result[f"{key}_bytes" if key != "held_views_read" else "held_bytes_views_read"]
        ratios = result[f"{key}_ratio" if key != "held_views_read" else "held_ratio_views_read"]
        print(
            f"{label:34}{values['once']:>12,}{values['baseline']:>12,}{values['today']:>12,}"
            f"{ratios['once/baseline']:>10.3f}x{ratios['today/baseline']:>10.2f}x"
        )
    print(f"one prompt part held: {result['prompt_part_held_bytes']:,} bytes")
    print(f"targets (once/baseline <= {TARGET}x for received, stored, held as returned): "
          f"{'met' if result['targets_met'] else 'NOT met'}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    about = "Echo paid once per prompt: bytes received, stored and held."
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=about)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the measurement runs")
    args = parser.parse_args(argv)
    _report(measure(args.smoke))
    return 0


if __name__ == "__main__":
    sys.exit(main())
