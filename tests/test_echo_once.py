"""Echo paid once per prompt, the data side: a sample asked for without echo, given the prompt part of one
asked for with echo, is the echoed sample field by field; N such samples hold, store and pickle one prompt copy."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from _helpers import R1_PROMPT, completion_body, legacy_logprobs, load_json_fixture, post_completion
from fw_rollouts import FwResponse
from fw_rollouts._cache_key import CacheKeyer
from fw_rollouts._echo import PromptPart, prompt_part, with_prompt
from fw_rollouts._lookup import cached_hits
from fw_rollouts._parsing import ResponseSpec, decode_body, parse_completion
from fw_rollouts._record import decode_record, encode_prompt_record, encode_record
from fw_rollouts._store import DiskStore
from fw_rollouts._templates import split_think
from fw_rollouts.testing import FireworksSimulator

MODEL = "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b"
PROMPT = "Once upon a time, in a city by the sea, there lived a clockmaker who"
OWN = ("response_id", "created")  # what identifies each reply, not the sample


def spec(echo: bool, prompt: str = PROMPT) -> ResponseSpec:
    return ResponseSpec(prompt=prompt, echo=echo, logprobs=True, split_reasoning=split_think)


def replies(
    sim: FireworksSimulator, seed: int, n: int = 1, *, content: bool = False, max_tokens: int = 12, prompt: str = PROMPT
) -> tuple[list[FwResponse], list[FwResponse]]:
    """The same request's samples parsed from a reply with echo and from one without."""
    body: dict[str, Any] = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "seed": seed}
    body.update({"logprobs": True, "top_logprobs": 3} if content else {"logprobs": 3})
    if n > 1:
        body["n"] = n
    seeds = [seed + j for j in range(n)]
    echoed = parse_completion(decode_body(post_completion(sim, {**body, "echo": True})), spec(True, prompt), seeds)
    plain = parse_completion(decode_body(post_completion(sim, {**body, "echo": False})), spec(False, prompt), seeds)
    return echoed, plain


def fields(sample: FwResponse, *skip: str) -> dict[str, Any]:
    return {f.name: getattr(sample, f.name) for f in dataclasses.fields(sample) if f.name not in skip}


def assert_same(got: FwResponse, want: FwResponse, *skip: str) -> None:
    """``got`` reads as ``want`` through every public view (``skip``: fields that are each reply's own)."""
    assert fields(got, *skip) == fields(want, *skip)
    assert got.full_text == want.full_text and got.echo and want.echo
    lp, wlp = got.logprobs, want.logprobs
    assert lp is not None and wlp is not None
    assert (len(lp), lp.num_prompt_tokens, lp.prompt_length, lp.echo) == (
        len(wlp), wlp.num_prompt_tokens, wlp.prompt_length, wlp.echo,
    )  # fmt: skip
    for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset", "token_ids", "sampling_logprobs"):
        assert getattr(lp, name) == getattr(wlp, name), name
    assert lp.to_dict() == wlp.to_dict() and list(lp) == list(wlp)
    assert lp.sum() == wlp.sum() and lp.top_k == wlp.top_k
    assert repr(lp.mean()) == repr(wlp.mean())
    assert got.get_prompt_logprobs() == want.get_prompt_logprobs()
    assert got.get_generation_logprobs() == want.get_generation_logprobs()
    assert [list(x) for x in (lp["tokens"], lp["text_offset"])] == [wlp.tokens, wlp.text_offset]


SERVERS: dict[str, dict[str, Any]] = {
    "fireworks-shape": {},
    "bos-echoed": {"bos": "echo"},
    "bos-counted": {"bos": "count"},
    "offsets-after-prompt": {"text_offset_base": "prompt"},
    "text-without-prompt": {"echo_text": False},
}


@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.parametrize("content", [False, True], ids=["legacy", "content"])
@pytest.mark.parametrize("n", [1, 3])
def test_a_sample_without_echo_plus_the_prompt_part_is_the_echoed_sample(server: str, content: bool, n: int) -> None:
    with FireworksSimulator(**SERVERS[server]) as sim:
        echoed, plain = replies(sim, 11, n, content=content)
    part = PromptPart.of(echoed[0])
    assert part is not None and len(part) == echoed[0].logprobs.num_prompt_tokens > 0  # type: ignore[union-attr]
    for want, without in zip(echoed, plain, strict=True):
        assert not without.echo and without.logprobs is not None and without.logprobs.num_prompt_tokens == 0
        got = with_prompt(without, part)
        assert_same(got, want, *OWN)
        assert got == dataclasses.replace(want, response_id=got.response_id, created=got.created)
        # The other choices of the echoed request are re-pointed at the one part, and stay what they were.
        assert_same(with_prompt(want, part), want)
        assert got.get_prompt_logprobs() is part.logprobs and prompt_part(got) is part


def fixture_sample(name: str, prompt: str) -> FwResponse:
    return parse_completion(load_json_fixture(name), spec(True, prompt), [0])[0]


def without_echo(body: dict[str, Any], echoed: FwResponse, base: int) -> dict[str, Any]:
    """The reply ``body`` (echoed, one choice) would have been without echo, offsets counted from ``base``."""
    assert echoed.logprobs is not None
    k = echoed.logprobs.num_prompt_tokens
    out = copy.deepcopy(body)
    choice = out["choices"][0]
    choice["text"] = echoed.full
    lp = choice["logprobs"]
    if "content" in lp:
        entries = lp["content"][k:]
        first = entries[0]["text_offset"] if entries else 0
        for entry in entries:
            entry["text_offset"] += base - first
        lp["content"] = entries
    else:
        first = lp["text_offset"][k] if len(lp["tokens"]) > k else 0
        for name in ("tokens", "token_logprobs", "top_logprobs", "token_ids"):
            if lp.get(name) is not None:
                lp[name] = lp[name][k:]
        lp["text_offset"] = [o - first + base for o in lp["text_offset"][k:]]
    return out


ECHO_FIXTURES = {
    "fireworks/completion-legacy-logprobs-echo.json": R1_PROMPT,
    "fireworks/completion-content-logprobs-echo.json": R1_PROMPT,
    "llamacpp/completion-echo-logprobs5.json": "Hello world",
}


@pytest.mark.parametrize("name", list(ECHO_FIXTURES))
@pytest.mark.parametrize("reading", ["from-0", "from-prompt-length"])
def test_fixture_bodies_without_echo_plus_the_prompt_part_are_the_echoed_sample(name: str, reading: str) -> None:
    # Both readings of text_offset without echo (Fireworks' shape counts from 0, llama.cpp from len(prompt)).
    prompt = ECHO_FIXTURES[name]
    body = load_json_fixture(name)
    echoed = parse_completion(body, spec(True, prompt), [0])[0]
    part = PromptPart.of(echoed)
    assert part is not None
    base = 0 if reading == "from-0" else len(prompt)
    plain = parse_completion(without_echo(body, echoed, base), spec(False, prompt), [0])
    got = with_prompt(plain[0], part)
    assert got == echoed
    assert_same(got, echoed)


def test_the_fireworks_reply_without_echo_plus_the_echoed_prompt_part() -> None:
    # The recorded-shape pair: the same generation, once echoed (offsets from the prompt's start) and once not
    # (offsets from 0, two choices, usage per request).
    echoed = fixture_sample("fireworks/completion-legacy-logprobs-echo.json", R1_PROMPT)
    body = load_json_fixture("fireworks/completion-legacy-logprobs.json")
    plain = parse_completion(body, spec(False, R1_PROMPT), [0, 1])
    part = PromptPart.of(echoed)
    assert part is not None and part.generation_offset == len(R1_PROMPT) == 62
    got = with_prompt(plain[0], part)
    assert plain[0].logprobs is not None and plain[0].logprobs.text_offset[0] == 0
    assert_same(got, echoed, *OWN, "usage")  # usage is each reply's own (here: n=2, no cached_tokens)
    assert got.usage == plain[0].usage


def test_llamacpp_offsets_counted_from_the_prompt_length_stay_in_place() -> None:
    echoed = fixture_sample("llamacpp/completion-echo-logprobs5.json", "Hello world")
    body = load_json_fixture("llamacpp/completion-logprobs5.json")
    plain = parse_completion(body, spec(False, "Hello world"), [0])[0]
    part = PromptPart.of(echoed)
    assert part is not None and part.generation_offset == 11
    got = with_prompt(plain, part)
    assert got.logprobs is not None and plain.logprobs is not None
    assert got.logprobs.text_offset == [0, 1, 3, 5, 9, 10, 11, 13, 17, 18]
    assert got.logprobs.tokens == ["H", "el", "lo", " wor", "l", "d", " V", "code", "v", " elif"]
    assert got.get_generation_logprobs() == plain.logprobs and got.full_text == "Hello world" + plain.full


@pytest.mark.parametrize("first_offset", [0, 8], ids=["from-0", "from-prompt-length"])
def test_a_bos_echoed_ahead_of_the_prompt_moves_the_generated_offsets(first_offset: int) -> None:
    # The echoed text starts with a BOS that is not in the prompt: the generation starts at 3 + len(prompt).
    prompt = "Hi there"
    echo_body = completion_body(
        "Hi there! ok", legacy_logprobs(["<s>", "Hi", " there", "!", " ok"], [None, -1.0, -2.0, -0.5, -0.25],
                                        text_offset=[0, 3, 5, 11, 12]),
        usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    )  # fmt: skip
    plain_body = completion_body(
        "! ok", legacy_logprobs(["!", " ok"], [-0.5, -0.25], text_offset=[first_offset, first_offset + 1]),
        usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    )  # fmt: skip
    echoed = parse_completion(echo_body, spec(True, prompt), [0])[0]
    part = PromptPart.of(echoed)
    assert part is not None and part.generation_offset == 11 and len(part) == 3
    got = with_prompt(parse_completion(plain_body, spec(False, prompt), [0])[0], part)
    assert got == echoed and got.logprobs is not None and got.logprobs.text_offset == [0, 3, 5, 11, 12]


def test_an_echoed_sample_with_no_generated_token_still_gives_the_generation_offset() -> None:
    with FireworksSimulator() as sim:
        echoed, nothing = replies(sim, 3, max_tokens=0, content=True)
        longer, plain = replies(sim, 3, max_tokens=6, content=True)
    assert echoed[0].logprobs is not None and len(echoed[0].logprobs) == echoed[0].logprobs.num_prompt_tokens
    part = PromptPart.of(echoed[0])
    assert part is not None and part.generation_offset == len(PROMPT)
    assert_same(with_prompt(plain[0], part), longer[0], *OWN)
    # Nothing generated: the prompt alone, its ids and sampling logprobs included, and an empty generation.
    assert_same(with_prompt(nothing[0], part), echoed[0], *OWN)
    assert_same(with_prompt(echoed[0], part), echoed[0])


def test_no_prompt_part_without_echoed_logprobs() -> None:
    with FireworksSimulator() as sim:
        echoed, plain = replies(sim, 5)
    assert PromptPart.of(plain[0]) is None  # not echoed
    assert PromptPart.of(dataclasses.replace(echoed[0], logprobs=None)) is None  # logprobs off
    # Nothing to share (logprobs off, or a server that does not echo): with_prompt only turns echo on.
    no_lp = dataclasses.replace(plain[0], logprobs=None)
    assert with_prompt(no_lp, None) == dataclasses.replace(no_lp, echo=True)
    part = PromptPart.of(echoed[0])
    assert part is not None
    with pytest.raises(ValueError, match="different prompts"):
        with_prompt(dataclasses.replace(plain[0], prompt="another"), part)
    with pytest.raises(ValueError, match="no logprobs"):
        with_prompt(no_lp, part)


def shared_samples(sim: FireworksSimulator, count: int, prompt: str = PROMPT) -> tuple[PromptPart, list[FwResponse]]:
    """``count`` samples of ``prompt``: the first echoed, the rest without echo, all sharing the first's part."""
    echoed, _ = replies(sim, 0, prompt=prompt)
    part = PromptPart.of(echoed[0])
    assert part is not None
    samples = [with_prompt(echoed[0], part)]
    for seed in range(1, count):
        samples.append(with_prompt(replies(sim, seed, prompt=prompt)[1][0], part))
    return part, samples


LONG_PROMPT = " ".join(["the river ran past the mill and the mill wheel turned"] * 30)


def test_n_samples_hold_one_copy_of_the_prompt() -> None:
    with FireworksSimulator() as sim:
        part, samples = shared_samples(sim, 6, LONG_PROMPT)
        plain = [replies(sim, seed, prompt=LONG_PROMPT)[1][0] for seed in range(6)]
    assert len(part) > 200
    for got, without in zip(samples, plain, strict=True):
        assert got.logprobs is not None and without.logprobs is not None
        assert got.get_prompt_logprobs() is part.logprobs
        # Its own columns are the generated ones: the size of the sample without echo, not of the prompt (the
        # first, re-pointed from its echo, keeps the column layout of its whole run: ~100 bytes more, ~200 once
        # this process interned more than 65,536 token strings and its indices take four bytes).
        assert got.logprobs.nbytes() <= without.logprobs.nbytes() + 256 < part.nbytes() / 5
        # A view copies pointers to the prompt's alternatives, built once for every sample; never the dicts.
        assert got.logprobs.top_logprobs[1] is part.logprobs.top_logprobs[1]


def test_pickling_writes_the_shared_part_once() -> None:
    with FireworksSimulator() as sim:
        part, samples = shared_samples(sim, 5, LONG_PROMPT)
        plain = [replies(sim, seed, prompt=LONG_PROMPT)[1][0] for seed in range(5)]
    back = pickle.loads(pickle.dumps(samples))
    assert back == samples and len({id(prompt_part(s)) for s in back}) == 1
    assert prompt_part(back[0]) == part
    # Five samples' pickle: about five without echo plus one prompt, far from five prompts.
    assert len(pickle.dumps(samples)) < len(pickle.dumps(plain)) + 1.5 * len(pickle.dumps(part))


def keyer() -> CacheKeyer:
    body = {"model": MODEL, "prompt": PROMPT, "echo": True, "logprobs": 3}
    return CacheKeyer("http://127.0.0.1/v1/completions", body)


def test_the_prompt_key_is_its_own() -> None:
    k = keyer()
    assert k.prompt_key() == keyer().prompt_key()  # deterministic
    assert k.prompt_key() not in {k(s) for s in range(100)} | {k(s, c) for s in range(10) for c in range(4)}
    other = CacheKeyer("http://127.0.0.1/v1/completions", {"model": MODEL, "prompt": PROMPT + " ", "echo": True})
    assert other.prompt_key() != k.prompt_key()


def test_a_shared_sample_is_stored_as_its_generated_part_and_read_back_with_the_part() -> None:
    with FireworksSimulator() as sim:
        part, samples = shared_samples(sim, 3)
        plain = [replies(sim, seed)[1][0] for seed in range(3)]
    k = keyer()
    for seed, (sample, without) in enumerate(zip(samples, plain, strict=True)):
        record = encode_record(sample, k(seed))
        # No prompt in it (the first sample, re-pointed from its echo, keeps its run's column layout: a byte or so
        # per token more; the others differ by their first text offset, a varint in a deflated form: a few bytes).
        assert len(record) - len(encode_record(without, k(seed))) in (range(-4, 5) if seed else range(-4, 64))
        back = decode_record(record, PROMPT, k(seed), part)
        assert back == dataclasses.replace(sample, cached=True) and back.get_prompt_logprobs() is part.logprobs
    # The whole echo of today's records still reads as it did, the part given or not.
    with FireworksSimulator() as sim:
        echoed = replies(sim, 0)[0][0]
    old = encode_record(echoed, k(0))
    assert decode_record(old, PROMPT, k(0)) == dataclasses.replace(echoed, cached=True)
    assert decode_record(old, PROMPT, k(0), part) == dataclasses.replace(echoed, cached=True)


def store_samples(directory: Path, samples: dict[int, FwResponse], part: PromptPart | None) -> None:
    k = keyer()
    items = [(k(seed), encode_record(sample, k(seed))) for seed, sample in samples.items()]
    if part is not None:
        items.append((k.prompt_key(), encode_prompt_record(part, k.prompt_key())))

    async def write() -> None:
        async with DiskStore(directory) as store:
            await store.set_many(items)

    asyncio.run(write())


def lookup(directory: Path, seeds: list[int], part: PromptPart | None = None, *, echo: bool = True) -> Any:
    k = keyer()

    async def read() -> Any:
        async with DiskStore(directory) as store:
            return await cached_hits(
                store, [k(s) for s in seeds], seeds, PROMPT, spec(echo), prompt_key=k.prompt_key(), part=part
            )

    return asyncio.run(read())


def test_cache_hits_share_the_prompt_record(tmp_path: Path) -> None:
    with FireworksSimulator() as sim:
        part, samples = shared_samples(sim, 4)
    store_samples(tmp_path, dict(enumerate(samples)), part)
    hits = lookup(tmp_path, list(range(6)))  # two to top up
    assert hits.part == part and hits.part_stored
    assert sorted(hits.samples) == [0, 1, 2, 3]
    for seed, hit in hits.samples.items():
        assert hit == dataclasses.replace(samples[seed], cached=True)
        assert hit.get_prompt_logprobs() is hits.part.logprobs
    # Top-ups: the samples still missing come without echo and share the part read from the cache.
    with FireworksSimulator() as sim:
        echoed, plain = replies(sim, 4)
    assert_same(with_prompt(plain[0], hits.part), echoed[0], *OWN)


def test_generated_only_records_without_their_prompt_record_are_misses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FireworksSimulator() as sim:
        part, samples = shared_samples(sim, 3)
    store_samples(tmp_path, dict(enumerate(samples)), None)
    with caplog.at_level(logging.WARNING, logger="fw_rollouts.cache"):
        hits = lookup(tmp_path, [0, 1, 2])
    assert hits.samples == {} and hits.part is None and not hits.part_stored
    assert "3 cache entries" in caplog.text and "prompt's record is missing" in caplog.text
    # ... unless the caller has the part (an earlier item of the same prompt, say): then they are hits.
    given = lookup(tmp_path, [0, 1, 2], part)
    assert given.part is part and not given.part_stored and sorted(given.samples) == [0, 1, 2]
    assert all(h.get_prompt_logprobs() is part.logprobs for h in given.samples.values())


def test_records_of_a_whole_echo_give_the_part_for_the_rest(tmp_path: Path) -> None:
    # A cache written before the prompt record existed (whole echoes), and generated-only records whose
    # prompt record was lost: the whole echo hit carries the part, for the others and for top-ups.
    with FireworksSimulator() as sim:
        part, samples = shared_samples(sim, 3)
        old = replies(sim, 5)[0][0]
    store_samples(tmp_path, {0: samples[0], 1: samples[1], 5: old}, None)
    hits = lookup(tmp_path, [0, 1, 2, 5])
    assert sorted(hits.samples) == [0, 1, 5] and not hits.part_stored
    assert hits.part == part and hits.samples[0] == dataclasses.replace(samples[0], cached=True)
    assert hits.samples[5] == dataclasses.replace(old, cached=True)


def test_a_damaged_prompt_record_is_a_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with FireworksSimulator() as sim:
        part, samples = shared_samples(sim, 2)
    store_samples(tmp_path, dict(enumerate(samples)), part)
    k = keyer()
    damaged = bytearray(encode_prompt_record(part, k.prompt_key()))
    damaged[30] ^= 0x10

    async def spoil() -> None:
        async with DiskStore(tmp_path) as store:
            await store.set_many([(k.prompt_key(), bytes(damaged))])

    asyncio.run(spoil())
    with caplog.at_level(logging.WARNING, logger="fw_rollouts.cache"):
        hits = lookup(tmp_path, [0, 1])
    assert hits.samples == {} and hits.part is None and "3 cache entries" in caplog.text and "CRC32" in caplog.text


def test_without_echo_the_prompt_record_is_not_read(tmp_path: Path) -> None:
    with FireworksSimulator() as sim:
        part, samples = shared_samples(sim, 2)
    store_samples(tmp_path, dict(enumerate(samples)), part)
    hits = lookup(tmp_path, [0, 1], echo=False)
    assert hits.part is None and not hits.part_stored and hits.samples == {}  # generated-only records: misses
