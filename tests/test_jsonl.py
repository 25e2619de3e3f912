"""Results on disk: FwRollouts.to_jsonl / from_jsonl round-trip exactly, logprobs included; other files are refused."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient, post_completion, same_rollouts
from fw_rollouts import FwResponse, FwRollouts, Logprobs, Usage, ValidationError
from fw_rollouts._jsonl import FORMAT, VERSION


@pytest.mark.parametrize("per_request", [1, 3])
def test_samples_from_the_server_round_trip_exactly(make_client: MakeClient, tmp_path: Path, per_request: int) -> None:
    async def main() -> FwRollouts:
        async with make_client(max_tokens=24, samples_per_request=per_request, logit_bias={42: 1.5}) as client:
            return await client.generate([{"role": "user", "content": "Héllo ☃, what is 2+2?"}], 6, seed=7)

    rollouts = asyncio.run(main())
    assert rollouts[0].logprobs is not None and rollouts[0].echo and rollouts[0].logprobs.num_prompt_tokens > 0
    path = tmp_path / "study.jsonl"
    rollouts.to_jsonl(path)
    back = FwRollouts.from_jsonl(path)
    same_rollouts(rollouts, back)
    assert [r.seed for r in back] == list(range(7, 13)) and back.settings == rollouts.settings
    lines = path.read_text(encoding="ascii").splitlines()
    # A header, the prompt's echoed part once (its samples share it), then a line per sample.
    assert len(lines) == 1 + 1 + 6 and json.loads(lines[0])["format"] == FORMAT


def awkward_sample() -> FwResponse:
    logprobs = Logprobs(
        ["<bos>", "caf\udce9", " -0", " tiny"],
        [None, -0.0, -5e-324, -1.7976931348623157e308],
        [None, {"b": -0.5, "a": -1.25, "": -2.0}, None, {" tiny": -0.1}],
        [0, 5, 9, 12],
        [1, 2, 3, 2**40],
        sampling_logprobs=[None, -0.0, -0.3333333333333333, None],
        num_prompt_tokens=1,
        prompt_length=5,
        echo=True,
    )
    return FwResponse(
        full="caf\udce9 -0 tiny", content="x", reasoning="r\n\nr", finish_reason="length", completed_reasoning=False,
        usage=Usage(5, 3, 8, None), seed=2**62, model="m", response_id="id-\u0000-\n", created=1_700_000_000,
        logprobs=logprobs, echo=True, prompt="<bos>", index=2, cached=True,
    )  # fmt: skip


def test_awkward_values_survive_exactly(tmp_path: Path) -> None:
    # Lone surrogates (servers return them), -0.0, subnormal and huge floats, alternatives' order, NUL, big ints.
    rollouts = FwRollouts(
        prompt=[{"role": "user", "content": "q", "name": "n"}], num_responses=3, temperature=None, top_p=0.95,
        max_tokens=None, model="accounts/x/models/y", responses=[awkward_sample(), FwResponse(full="", usage=Usage())],
        cache_dir=None, logprobs_enabled=True, echo_enabled=False, logprobs=None, prompt_text="<bos>",
        settings={"stop": ["\n\n"], "logit_bias": {"7": -100.0}},
    )  # fmt: skip
    rollouts.to_jsonl(tmp_path / "r.jsonl")
    same_rollouts(rollouts, FwRollouts.from_jsonl(tmp_path / "r.jsonl"))


def with_alternative_ids(response: FwResponse) -> FwResponse:
    """``response`` with an id for every alternative (``awkward_sample``'s: a 64-bit one among them)."""
    lp = response.logprobs
    assert lp is not None
    top = lp.top_logprobs
    ids = [None if d is None else {t: (2**40 if t == "b" else i + len(t)) for t in d} for i, d in enumerate(top)]
    logprobs = Logprobs(lp.tokens, lp.token_logprobs, top, lp.text_offset, lp.token_ids,
                        sampling_logprobs=lp.sampling_logprobs, top_token_ids=ids,
                        num_prompt_tokens=lp.num_prompt_tokens, prompt_length=lp.prompt_length,
                        echo=lp.echo)  # fmt: skip
    return dataclasses.replace(response, logprobs=logprobs)


def test_alternative_ids_survive_and_a_line_without_them_reads_as_before(tmp_path: Path) -> None:
    sample = with_alternative_ids(awkward_sample())
    rollouts = FwRollouts(prompt="p", num_responses=2, temperature=0.7, top_p=None, max_tokens=8, model="m",
                          responses=[sample, awkward_sample()])  # fmt: skip
    path = tmp_path / "r.jsonl"
    rollouts.to_jsonl(path)
    back = FwRollouts.from_jsonl(path)
    same_rollouts(rollouts, back)
    assert back[0].logprobs is not None and sample.logprobs is not None
    assert back[0].logprobs.top_token_ids == sample.logprobs.top_token_ids
    order = [list(d or {}) for d in back[0].logprobs.top_token_ids or ()]
    assert order == [list(d or {}) for d in sample.logprobs.top_logprobs]
    lines = [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]
    assert "top_token_ids" in lines[1]["response"]["logprobs"]
    assert "top_token_ids" not in lines[2]["response"]["logprobs"]  # written as before they were kept
    assert back[1].logprobs is not None and back[1].logprobs.top_token_ids is None


def test_content_format_samples_sharing_a_prompt_part_keep_their_ids(make_client: MakeClient, tmp_path: Path) -> None:
    async def main() -> FwRollouts:
        async with make_client(max_tokens=12, logprobs=3, logprobs_format="content") as client:
            return await client.generate("Once upon a time", 3, seed=1, raw=True)

    rollouts = asyncio.run(main())
    rollouts.to_jsonl(tmp_path / "r.jsonl")
    back = FwRollouts.from_jsonl(tmp_path / "r.jsonl")
    same_rollouts(rollouts, back)
    for a, b in zip(rollouts, back, strict=True):
        assert a.logprobs is not None and b.logprobs is not None and a.logprobs.num_prompt_tokens > 0
        assert b.logprobs.top_token_ids == a.logprobs.top_token_ids is not None


def test_an_interrupted_write_leaves_the_old_file_and_no_debris(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = FwRollouts(prompt="p", num_responses=1, temperature=0.7, top_p=None, max_tokens=8, model="m",
                      responses=[awkward_sample()])  # fmt: skip
    good.to_jsonl(path)
    before = path.read_bytes()
    broken = FwResponse(full="x", seed={1, 2})  # type: ignore[arg-type]  # a value JSON cannot hold
    bad = FwRollouts(prompt="p", num_responses=2, temperature=None, top_p=None, max_tokens=None, model="m",
                     responses=[awkward_sample(), broken])  # fmt: skip
    with pytest.raises(TypeError):
        bad.to_jsonl(path)  # met on the third line, after the first two were written
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]


HEADER = json.dumps({"format": FORMAT, "version": VERSION, "rollouts": {}})


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        ("", "empty"),
        ("not json\n", "line 1 is not JSON"),
        ('{"format": "something else"}\n', "line 1 is not its header"),
        (json.dumps({"format": FORMAT, "version": 99, "rollouts": {}}) + "\n", "version 99"),
        (HEADER + "\n", "header lacks a field"),
        (HEADER + '\n{"response": {"full": "x"}}\n', "line 2 is not a sample"),
        (HEADER + "\n" + "[" * 100_000 + "\n", "line 2 is not JSON"),
    ],
    ids=["empty", "not json", "other format", "future version", "header incomplete", "sample incomplete", "nested"],
)
def test_a_file_that_is_not_a_rollouts_file_is_a_clear_error(tmp_path: Path, content: str, mentions: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValidationError) as info:
        FwRollouts.from_jsonl(path)
    assert mentions in str(info.value) and str(path) in str(info.value) and info.value.argument == "path"


# -- samples sharing a prompt part (echo paid once) -------------------------------------------------------------


LONG_PROMPT = " ".join(["Tell me a story about a lighthouse keeper and the ships she saw."] * 8)


def shared_rollouts(prompts: tuple[str, ...] = (LONG_PROMPT,), n: int = 4) -> FwRollouts:
    """Samples parsed from simulator replies: per prompt, one with echo, the rest without, all sharing one part."""

    from fw_rollouts._echo import PromptPart, with_prompt
    from fw_rollouts._parsing import ResponseSpec, decode_body, parse_completion
    from fw_rollouts.testing import FireworksSimulator

    responses = []
    with FireworksSimulator() as sim:
        for prompt in prompts:
            part = None
            for seed in range(n):
                body = {"model": "accounts/fireworks/models/m", "prompt": prompt, "max_tokens": 10, "logprobs": 3,
                        "seed": seed, "echo": seed == 0}  # fmt: skip
                data = post_completion(sim, body)
                spec = ResponseSpec(prompt=prompt, echo=seed == 0, logprobs=True)
                sample = parse_completion(decode_body(data), spec, [seed])[0]
                part = part or PromptPart.of(sample)
                responses.append(with_prompt(sample, part))
    return FwRollouts(prompt=prompts[0], num_responses=len(responses), temperature=None, top_p=None, max_tokens=10,
                      model="m", responses=responses, logprobs=3, prompt_text=prompts[0])  # fmt: skip


def test_samples_sharing_a_prompt_part_round_trip_with_the_part_written_once(tmp_path: Path) -> None:
    from fw_rollouts._echo import prompt_part

    rollouts = shared_rollouts(n=5)
    part = prompt_part(rollouts[0])
    assert part is not None and all(prompt_part(r) is part for r in rollouts)
    path = tmp_path / "shared.jsonl"
    rollouts.to_jsonl(path)
    back = FwRollouts.from_jsonl(path)
    same_rollouts(rollouts, back)
    lines = [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]
    assert [next(iter(line)) for line in lines] == ["format", "prompt_part"] + ["response"] * 5
    assert all("prompt" not in line["response"] for line in lines[2:])
    back_part = prompt_part(back[0])
    assert back_part == part and all(prompt_part(r) is back_part for r in back)  # one part in memory again
    # The file holds the prompt once: about a sample without echo per sample, plus one prompt part.
    whole = dataclasses.replace(rollouts, responses=[_unshared(r) for r in rollouts])
    whole.to_jsonl(tmp_path / "whole.jsonl")
    same_rollouts(whole, FwRollouts.from_jsonl(tmp_path / "whole.jsonl"))
    assert path.stat().st_size < (tmp_path / "whole.jsonl").stat().st_size / 3


def _unshared(sample: FwResponse) -> FwResponse:
    """The same sample with its own copy of the prompt positions (as every sample had before echo-once)."""
    assert sample.logprobs is not None
    return dataclasses.replace(sample, logprobs=Logprobs.from_packed(sample.logprobs.packed()))


def test_several_parts_and_unshared_samples_in_one_file(tmp_path: Path) -> None:
    from fw_rollouts._echo import prompt_part

    shared = shared_rollouts(("First prompt, about rivers", "Second prompt, about mountains"), n=3)
    mixed = [shared[0], awkward_sample(), shared[3], shared[1], FwResponse(full="", usage=Usage()), shared[4]]
    rollouts = dataclasses.replace(shared, responses=mixed, num_responses=len(mixed))
    path = tmp_path / "mixed.jsonl"
    rollouts.to_jsonl(path)
    back = FwRollouts.from_jsonl(path)
    same_rollouts(rollouts, back)
    kinds = [next(iter(json.loads(line))) for line in path.read_text(encoding="ascii").splitlines()]
    assert kinds.count("prompt_part") == 2 and kinds.index("prompt_part", 2) == 4  # each before its first sample
    assert prompt_part(back[0]) is prompt_part(back[3]) is not prompt_part(back[2]) is prompt_part(back[5])
    assert prompt_part(back[1]) is None and back[1].get_prompt_logprobs() == awkward_sample().get_prompt_logprobs()


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        (lambda lines: [lines[0], *lines[2:]], "line 2 is not a sample (ValueError: the sample refers to prompt part"),
        (lambda lines: [lines[0], lines[1].replace('"id": 0', '"id": "0"'), *lines[2:]], "line 2 is not a prompt part"),
        (lambda lines: [lines[0], lines[1].replace('"echo": true', '"echo": false'), *lines[2:]],
         "line 2 is not a prompt part (ValueError: a prompt part's logprobs are echoed prompt positions only"),
        (lambda lines: [lines[0], '{"prompt_part": {}}', *lines[2:]], "line 2 is not a prompt part (KeyError"),
    ],
    ids=["part missing", "id not an integer", "part not echoed", "part empty"],
)  # fmt: skip
def test_a_broken_prompt_part_is_a_clear_error(tmp_path: Path, change: Any, mentions: str) -> None:
    path = tmp_path / "shared.jsonl"
    shared_rollouts(n=2).to_jsonl(path)
    path.write_text("\n".join(change(path.read_text(encoding="ascii").splitlines())) + "\n")
    with pytest.raises(ValidationError) as info:
        FwRollouts.from_jsonl(path)
    assert mentions in str(info.value)
