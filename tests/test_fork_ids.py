"""Forks sent as token ids (issue 10, item 6): the prompt sent is the base's prompt ids, its generated ids and the
alternative's id, exactly; byte pieces fork as ids; ids are required, optional or refused by ``token_ids``;
token-id prompts through the pipeline (items with ``prompt_ids``: validated, echo off, cached under the ids).
Over loopback HTTP against the simulator, byte pieces on a hand-made base (the simulator's tokens are whole
characters)."""

from __future__ import annotations

import asyncio
import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient, completion_body
from fw_rollouts import (
    AsyncFireworks,
    Fireworks,
    FwResponse,
    InvalidTypeError,
    StudyItem,
    ValidationError,
    fork_points,
    fork_prompt_ids,
    load_study,
)
from fw_rollouts._parsing import ResponseSpec, parse_completion
from fw_rollouts.testing import FireworksSimulator


def _completions(sim: FireworksSimulator) -> list[dict[str, Any]]:
    return [r.body for r in sim.requests if r.path.endswith("/completions") and r.body is not None]


def last_word(text: str) -> str | None:
    words = text.split()
    return words[-1] if words else None


def _options(sim: FireworksSimulator, tmp_path: Path, **options: Any) -> dict[str, Any]:
    return {
        "model": "qwen-15b", "base_url": sim.base_url, "api_key": sim.api_key, "cache_dir": str(tmp_path / "cache"),
        "progress_bar": False, "max_tokens": 16, "logprobs": 5, "logprobs_format": "content", **options,
    }  # fmt: skip


async def _base(client: AsyncFireworks, **options: Any) -> FwResponse:
    """A sample with fork points above 0.2 (the simulator's text at temperature 1), prompt sent raw."""
    return (await client.generate("Once upon a time", 1, seed=3, temperature=1.0, raw=True, **options))[0]


def _expected_ids(base: FwResponse, position: int, token: str) -> list[int]:
    """The fork's ids, read the long way from the base's logprobs."""
    assert base.logprobs is not None
    prompt = base.get_prompt_logprobs()
    generated = base.get_generation_logprobs()
    assert prompt is not None and generated is not None
    assert prompt.token_ids is not None and generated.token_ids is not None and generated.top_token_ids is not None
    alternatives = generated.top_token_ids[position]
    assert alternatives is not None
    return [*prompt.token_ids, *generated.token_ids[:position], alternatives[token]]


# -- over HTTP, the simulator's samples ---------------------------------------------------------------------


def test_an_id_fork_sends_the_exact_ids_without_echo(sim: FireworksSimulator, make_client: MakeClient) -> None:
    async def main() -> None:
        async with make_client(max_tokens=16, logprobs=5, logprobs_format="content") as client:
            base = await _base(client)
            point = fork_points(base, threshold=0.2)[0]
            token = next(iter(point.alternatives))
            before = len(_completions(sim))
            fork = await client.fork(base, point.position, token, 3, answer=last_word)
        sent = _completions(sim)[before:]
        expected = _expected_ids(base, point.position, token)
        assert [body["prompt"] for body in sent] == [expected] * 3  # the exact int list, once per seed
        assert all("echo" not in body for body in sent)
        assert fork.sent_as == "ids"
        assert fork.prompt_ids == tuple(expected) == fork_prompt_ids(base, point.position, token)
        assert fork.prefix == base.prompt + base.full[: point.offset] + token  # the text they stand for
        assert fork.rollouts.prompt_text == fork.prefix and fork.rollouts.echo_enabled is False
        assert fork.texts == tuple(base.full[: point.offset] + token + r.full for r in fork.rollouts)
        assert fork.answers == tuple(last_word(t) for t in fork.texts) and len(fork.rollouts) == 3

    asyncio.run(main())


def test_forks_go_as_ids_and_a_rerun_sends_nothing(sim: FireworksSimulator, make_client: MakeClient) -> None:
    async def main() -> None:
        async with make_client(max_tokens=16, logprobs=5, logprobs_format="content") as client:
            base = await _base(client)
            before = len(_completions(sim))
            first = await client.forks(base, n_samples=2, threshold=0.2, include_chosen=True, answer=last_word)
            sent = _completions(sim)[before:]
            again = await client.forks(base, n_samples=2, threshold=0.2, include_chosen=True, answer=last_word)
            assert len(_completions(sim)) == before + len(sent)  # every sample read back from the cache
        assert first and all(f.sent_as == "ids" for f in first)
        assert sorted(tuple(b["prompt"]) for b in sent) == sorted(f.prompt_ids or () for f in first for _ in range(2))
        chosen = [f for f in first if f.token == f.chosen]
        assert chosen and all(f.prompt_ids == fork_prompt_ids(base, f.position, f.chosen) for f in chosen)
        assert [f.prompt_ids for f in again] == [f.prompt_ids for f in first]
        assert all(r.cached for f in again for r in f.rollouts)
        assert [f.texts for f in again] == [f.texts for f in first]

    asyncio.run(main())


def test_token_ids_false_sends_the_text(sim: FireworksSimulator, make_client: MakeClient) -> None:
    async def main() -> None:
        async with make_client(max_tokens=16, logprobs=5, logprobs_format="content") as client:
            base = await _base(client)
            point = fork_points(base, threshold=0.2)[0]
            token = next(iter(point.alternatives))
            before = len(_completions(sim))
            fork = await client.fork(base, point.position, token, 1, token_ids=False)
            many = await client.forks(base, n_samples=1, threshold=0.2, token_ids=False)
        sent = _completions(sim)[before:]
        assert sent[0]["prompt"] == fork.prefix == base.prompt + base.full[: point.offset] + token
        assert all(isinstance(body["prompt"], str) for body in sent)
        assert fork.sent_as == "text" and fork.prompt_ids is None and {f.sent_as for f in many} == {"text"}

    asyncio.run(main())


def test_the_legacy_format_forks_as_text_and_token_ids_true_says_what_is_missing(
    sim: FireworksSimulator, make_client: MakeClient
) -> None:
    async def main() -> None:
        async with make_client(max_tokens=16, logprobs=5) as client:  # legacy: ids of the chosen tokens only
            base = await _base(client)
            point = fork_points(base, threshold=0.2)[0]
            token = next(iter(point.alternatives))
            before = len(_completions(sim))
            for call in (
                lambda: client.fork(base, point.position, token, 2, token_ids=True),
                lambda: client.forks(base, n_samples=2, threshold=0.2, token_ids=True),
            ):
                with pytest.raises(ValidationError) as info:
                    await call()
                assert info.value.argument == "token_ids" and "logprobs_format='content'" in str(info.value)
            assert len(_completions(sim)) == before  # refused before any request
            # The chosen token's id is known in the legacy format too.
            chosen = await client.fork(base, point.position, point.chosen, 1, token_ids=True)
            fork = await client.fork(base, point.position, token, 1)  # None: text, since its id is not known
            many = await client.forks(base, n_samples=1, threshold=0.2, include_chosen=True)
        assert chosen.sent_as == "ids" and fork.sent_as == "text"
        assert {f.sent_as for f in many} == {"text"}  # one way for the whole study, though the chosen could go as ids

    asyncio.run(main())


def test_without_echo_there_are_no_prompt_ids(sim: FireworksSimulator, make_client: MakeClient) -> None:
    async def main() -> None:
        async with make_client(max_tokens=16, logprobs=5, logprobs_format="content") as client:
            base = await _base(client, echo=False)
            point = fork_points(base, threshold=0.2)[0]
            with pytest.raises(ValidationError) as info:
                await client.fork(base, point.position, point.chosen, 1, token_ids=True)
            assert "echo=True" in str(info.value)
            fork = await client.fork(base, point.position, point.chosen, 1)
        assert fork.sent_as == "text"

    asyncio.run(main())


@pytest.mark.parametrize("bad", [1, "yes", 0])
def test_token_ids_takes_none_true_or_false(make_client: MakeClient, bad: Any) -> None:
    async def main() -> None:
        async with make_client(max_tokens=8, logprobs=5, logprobs_format="content") as client:
            base = await _base(client)
            with pytest.raises(InvalidTypeError) as info:
                await client.fork(base, 0, base.get_generation_logprobs().tokens[0], 1, token_ids=bad)  # type: ignore[union-attr]
        assert info.value.argument == "token_ids"

    asyncio.run(main())


def test_alternative_ids_survive_the_cache_and_a_study_file(tmp_path: Path) -> None:
    with FireworksSimulator() as sim, Fireworks(**_options(sim, tmp_path)) as client:
        base = client.generate("Once upon a time", 1, seed=3, temperature=1.0, raw=True)[0]
        again = client.generate("Once upon a time", 1, seed=3, temperature=1.0, raw=True)[0]
        assert again.cached and base.logprobs is not None and again.logprobs is not None
        assert again.logprobs.top_token_ids == base.logprobs.top_token_ids is not None
        point = fork_points(again, threshold=0.2)[0]
        token = next(iter(point.alternatives))
        assert fork_prompt_ids(again, point.position, token) == fork_prompt_ids(base, point.position, token)
        forks = client.forks(again, n_samples=2, threshold=0.2, answer=last_word, output=tmp_path / "forks.jsonl")
        requests = len(_completions(sim))
        resumed = client.forks(
            again, n_samples=2, threshold=0.2, answer=last_word, output=tmp_path / "forks.jsonl", use_cache=False
        )
        assert len(_completions(sim)) == requests  # read back from the study file, not the cache
    assert [f.answers for f in resumed] == [f.answers for f in forks]
    study = load_study(tmp_path / "forks.jsonl")
    assert [s.prompt_text for s in study] == [f.prefix for f in forks]
    header = json.loads((tmp_path / "forks.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert [item["prompt_ids"] for item in header["items"]] == [list(f.prompt_ids or ()) for f in forks]


@pytest.mark.parametrize(("bos", "mismatch"), [("none", False), ("count", False), ("echo", True)])
def test_a_bos_the_server_adds_to_id_prompts_too_is_reported(tmp_path: Path, bos: str, mismatch: bool) -> None:
    # "count": the server counts a BOS it does not echo, and adds it to ids too: the fork's context is the base's.
    # "echo": it echoes its BOS (sent back in the ids) and adds another to an id prompt: one token more, a warning.
    with FireworksSimulator(bos=bos) as sim, Fireworks(**_options(sim, tmp_path)) as client:  # type: ignore[arg-type]
        base = client.generate("Once upon a time", 1, seed=3, temperature=1.0, raw=True)[0]
        point = fork_points(base, threshold=0.2)[0]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fork = client.fork(base, point.position, point.chosen, 1)
    assert fork.sent_as == "ids"
    assert fork.rollouts[0].usage.prompt_tokens == base.usage.prompt_tokens + point.position + 1 + mismatch
    messages = [str(w.message) for w in caught if "id fork" in str(w.message)]
    assert len(messages) == mismatch
    if mismatch:
        assert "1 more token than the base's context had" in messages[0] and "token_ids=False" in messages[0]


# -- byte pieces: a hand-made base whose tokens split a character ------------------------------------------------

# "A東 b" after the prompt "P:": 東 is three UTF-8 bytes, generated as two byte-level pieces (ids are made up).
_PROMPT = [("P", 80), (":", 58)]
_GENERATED = [
    ("A", 65, [("A", -0.1, 65), (" x", -2.5, 1001)]),
    ("bytes:\\xe6\\x9d", 230, [("bytes:\\xe6\\x9d", -0.5, 230), (" x", -1.2, 1001), ("bytes:\\xe5", -1.5, 229)]),
    ("bytes:\\xb1", 177, [("bytes:\\xb1", -0.2, 177), ("bytes:\\xb2", -1.9, 178)]),
    (" b", 1002, [(" b", -0.3, 1002), (" c", -1.5, 1003)]),
]


def _byte_piece_base(*, alternative_ids: bool = True) -> FwResponse:
    entries: list[dict[str, Any]] = []
    offset = 0
    for token, tid in _PROMPT:
        entries.append({"token": token, "logprob": -1.0, "token_id": tid, "text_offset": offset, "top_logprobs": []})
        offset += len(token)
    for (token, tid, top), text_offset in zip(_GENERATED, [2, 3, 3, 4], strict=True):
        alternatives = [
            {"token": t, "logprob": lp, **({"token_id": i} if alternative_ids else {})} for t, lp, i in top
        ]
        entries.append({
            "token": token, "logprob": top[0][1], "token_id": tid, "text_offset": text_offset,
            "top_logprobs": alternatives,
        })  # fmt: skip
    body = completion_body("P:A東 b", {"content": entries}, usage={"prompt_tokens": 2, "completion_tokens": 4})
    (response,) = parse_completion(body, ResponseSpec(prompt="P:", echo=True, logprobs=True), [0])
    return response


def test_a_byte_piece_base_has_the_ids_of_every_fork() -> None:
    base = _byte_piece_base()
    assert base.full == "A東 b" and [p.offset for p in fork_points(base)] == [0, 1, None, 2]
    assert fork_prompt_ids(base, 1, "bytes:\\xe5") == (80, 58, 65, 229)
    assert fork_prompt_ids(base, 2, "bytes:\\xb2") == (80, 58, 65, 230, 178)  # inside the character
    assert fork_prompt_ids(base, 3, " c") == (80, 58, 65, 230, 177, 1003)
    with pytest.raises(ValidationError) as info:
        fork_prompt_ids(base, 3, " zzz")
    assert "not among the alternatives" in str(info.value)
    with pytest.raises(ValidationError) as legacy:
        fork_prompt_ids(_byte_piece_base(alternative_ids=False), 3, " c")
    assert "logprobs_format='content'" in str(legacy.value)


def test_byte_pieces_fork_as_ids_and_are_refused_as_text(sim: FireworksSimulator, make_client: MakeClient) -> None:
    async def main() -> None:
        base = _byte_piece_base()
        async with make_client(max_tokens=6, logprobs=1) as client:
            before = len(_completions(sim))
            inside = await client.fork(base, 2, "bytes:\\xb2", 2, answer=last_word)
            piece = await client.fork(base, 1, "bytes:\\xe5", 1, answer=last_word)
            sent = [body["prompt"] for body in _completions(sim)[before:]]
            assert sent == [[80, 58, 65, 230, 178]] * 2 + [[80, 58, 65, 229]]
            assert (inside.sent_as, inside.offset, piece.offset) == ("ids", None, 1)
            # 0xe6 0x9d 0xb2 is a whole character (杲): the text the ids stand for decodes it.
            assert inside.prefix == "P:A\u6772" and piece.prefix == "P:A\ufffd"
            assert inside.texts == tuple("A\u6772" + r.full for r in inside.rollouts)
            with pytest.raises(ValidationError) as token:
                await client.fork(base, 1, "bytes:\\xe5", 1, token_ids=False)
            with pytest.raises(ValidationError) as position:
                await client.fork(base, 2, " x", 1, token_ids=False)
            assert (token.value.argument, position.value.argument) == ("token", "position")
            every = await client.forks(base, n_samples=1, answer=last_word)
            with pytest.warns(UserWarning, match="2 forks skipped"):
                text = await client.forks(base, n_samples=1, answer=last_word, token_ids=False)
        assert [(f.position, f.token) for f in every] == [
            (0, " x"), (1, " x"), (1, "bytes:\\xe5"), (2, "bytes:\\xb2"), (3, " c")
        ]  # fmt: skip
        assert {f.sent_as for f in every} == {"ids"} and {f.sent_as for f in text} == {"text"}
        assert [(f.position, f.token) for f in text] == [(0, " x"), (1, " x"), (3, " c")]

    asyncio.run(main())


# -- token-id prompts through the pipeline ----------------------------------------------------------------------


def test_an_id_prompt_is_sent_as_is_cached_under_its_ids_and_shown_as_its_text(
    sim: FireworksSimulator, make_client: MakeClient
) -> None:
    async def main() -> None:
        async with make_client(max_tokens=6, logprobs=2, echo=True) as client:
            first = await client.generate_many([{"prompt_ids": [5, 6, 7], "prompt": "abc"}], 2, raw=True)
            sent = _completions(sim)
            assert [b["prompt"] for b in sent] == [[5, 6, 7]] * 2 and all("echo" not in b for b in sent)
            again = await client.generate_many([StudyItem(prompt="other text", prompt_ids=(5, 6, 7))], 2, raw=True)
            assert len(_completions(sim)) == 2 and all(r.cached for r in again[0])  # the key is the ids, not the text
            other = await client.generate_many([{"prompt_ids": [5, 6, 8], "prompt": "abc"}], 1, raw=True)
            assert len(_completions(sim)) == 3 and not other[0][0].cached
            estimate = await client.estimate([{"prompt_ids": list(range(40)), "prompt": "x"}], 1, raw=True)
        rollouts = first[0]
        assert rollouts.prompt == rollouts.prompt_text == "abc" and rollouts[0].prompt == "abc"
        assert rollouts.echo_enabled is False and not rollouts[0].echo
        assert rollouts[0].logprobs is not None and rollouts[0].logprobs.num_prompt_tokens == 0
        assert again[0].prompt_text == "other text"
        assert estimate.prompt_tokens == 40

    asyncio.run(main())


@pytest.mark.parametrize(
    ("item", "raw", "error", "argument"),
    [
        ({"prompt_ids": [1, 2], "prompt": "x"}, False, ValidationError, "raw"),
        ({"prompt_ids": []}, True, ValidationError, "items[0]['prompt_ids']"),
        ({"prompt_ids": [1, True]}, True, InvalidTypeError, "items[0]['prompt_ids']"),
        ({"prompt_ids": [1, -2]}, True, ValidationError, "items[0]['prompt_ids']"),
        ({"prompt_ids": "12"}, True, InvalidTypeError, "items[0]['prompt_ids']"),
        ({"prompt_ids": [1], "prompt": [{"role": "user", "content": "x"}]}, True, InvalidTypeError, "items[0] prompt"),
        (StudyItem(prompt="x", prompt_ids=(1, 2.0)), True, InvalidTypeError, "items[0].prompt_ids"),  # type: ignore[arg-type]
    ],
)
def test_bad_id_prompts_are_refused_before_any_request(
    sim: FireworksSimulator, make_client: MakeClient, item: Any, raw: bool, error: type[Exception], argument: str
) -> None:
    async def main() -> None:
        async with make_client() as client:
            with pytest.raises(error) as info:
                await client.generate_many([item], 1, raw=raw)
        assert info.value.argument == argument  # type: ignore[attr-defined]
        assert _completions(sim) == []

    asyncio.run(main())


def test_a_list_of_ids_as_a_prompt_says_where_ids_go(make_client: MakeClient) -> None:
    async def main() -> None:
        async with make_client() as client:
            with pytest.raises(InvalidTypeError) as info:
                await client.generate([1, 2, 3], raw=True)  # type: ignore[list-item]
        assert "prompt_ids" in str(info.value)

    asyncio.run(main())


def test_id_forks_of_a_content_base_cost_as_estimated(tmp_path: Path) -> None:
    with FireworksSimulator() as sim, Fireworks(**_options(sim, tmp_path)) as client:
        base = client.generate("Once upon a time", 1, seed=3, temperature=1.0, raw=True)[0]
        items = [
            {"prompt_ids": list(fork_prompt_ids(base, p.position, t)), "prompt": ""}
            for p in fork_points(base, threshold=0.2)
            for t in p.alternatives
        ]
        estimate = client.estimate(items, 2, raw=True)
    assert estimate.prompt_tokens == 2 * sum(len(i["prompt_ids"]) for i in items)
    assert estimate.requests == 2 * len(items) and math.isfinite(estimate.minutes or 0.0)
