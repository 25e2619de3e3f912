"""Results on disk: FwRollouts.to_jsonl / from_jsonl round-trip exactly, logprobs included; other files are refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient
from fw_rollouts import FwResponse, FwRollouts, Logprobs, Usage, ValidationError
from fw_rollouts._jsonl import FORMAT, VERSION


def exact(value: Any) -> Any:
    """``value`` with every float as its repr, so that -0.0 and 0.0 (equal as floats) differ here."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [exact(v) for v in value]
    return value


def same(a: FwRollouts, b: FwRollouts) -> None:
    assert a == b
    assert exact(a.to_dict()) == exact(b.to_dict())
    for x, y in zip(a, b, strict=True):
        assert (x.logprobs is None) == (y.logprobs is None)
        if x.logprobs is not None and y.logprobs is not None:
            assert exact(x.logprobs.sampling_logprobs) == exact(y.logprobs.sampling_logprobs)
            assert list(x.logprobs.top_logprobs[1] or {}) == list(y.logprobs.top_logprobs[1] or {})  # key order
            assert x.get_prompt_logprobs() == y.get_prompt_logprobs()


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
    same(rollouts, back)
    assert [r.seed for r in back] == list(range(7, 13)) and back.settings == rollouts.settings
    lines = path.read_text(encoding="ascii").splitlines()
    assert len(lines) == 1 + 6 and json.loads(lines[0])["format"] == FORMAT  # a header, then a line per sample


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
    same(rollouts, FwRollouts.from_jsonl(tmp_path / "r.jsonl"))


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
