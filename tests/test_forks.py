"""Forking Paths (issue 10, item 6): fork points of a sample, forks continued from its exact generated text, all
forks of a sample as one study; over loopback HTTP against the simulator, and the offsets on hand-made samples
(byte-level pieces, byte offsets) without I/O."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from _helpers import MakeClient, completion_body, docs_block, legacy_logprobs
from fw_rollouts import (
    Fireworks,
    Fork,
    ForkPoint,
    FwResponse,
    ValidationError,
    answer_distribution,
    fork_points,
    fork_prompt,
)
from fw_rollouts._parsing import ResponseSpec, parse_completion
from fw_rollouts.testing import FireworksSimulator

NON_ASCII = (" café", " 東京", " 🙂", " naïve", " über", " 数学", " résumé")


def _completions(sim: FireworksSimulator) -> list[dict[str, Any]]:
    return [r.body for r in sim.requests if r.path.endswith("/completions") and r.body is not None]


def last_word(text: str) -> str | None:
    """The outcome the tests read: the last word of a sample's text (the simulator's text is random words)."""
    words = text.split()
    return words[-1] if words else None


def _sample(
    full: str, tokens: list[str], offsets: list[int] | None, top: list[dict[str, float] | None], prompt: str = "P:"
) -> FwResponse:
    lps = [max(t.values()) if t else -1.0 for t in top]
    body = completion_body(full, legacy_logprobs(tokens, lps, text_offset=offsets, top_logprobs=top))  # type: ignore[arg-type]
    (response,) = parse_completion(body, ResponseSpec(prompt=prompt, logprobs=True), [0])
    return response


# -- pure ------------------------------------------------------------------------------------------------------


def test_fork_points_of_a_hand_made_sample() -> None:
    log = math.log
    top: list[dict[str, float] | None] = [
        {"The": log(0.9), "A": log(0.04)},  # no alternative above 0.05
        {" cat": log(0.6), " dog": log(0.3), " cow": log(0.06), " ant": log(0.04)},
        {" sat": log(0.5), " ran": log(0.5)},
    ]
    response = _sample("The cat sat", ["The", " cat", " sat"], [0, 3, 7], top)
    points = fork_points(response)
    assert [p.position for p in points] == [1, 2]
    assert (points[0].position, points[0].offset, points[0].chosen) == (1, 3, " cat")
    assert points[0].chosen_prob == pytest.approx(0.6)
    assert points[0].alternatives == pytest.approx({" dog": 0.3, " cow": 0.06})
    assert list(points[0].alternatives) == [" dog", " cow"]  # most likely first
    assert points[1].alternatives == pytest.approx({" ran": 0.5}) and points[1].offset == 7
    assert [p.position for p in fork_points(response, threshold=0.2)] == [1, 2]
    assert fork_points(response, threshold=0.5) == []  # above, not at
    assert [len(p.alternatives) for p in fork_points(response, threshold=0.0)] == [1, 3, 1]
    assert fork_prompt(response, 2, " ran") == "P:The cat ran"
    assert fork_prompt(response, 0, "A") == "P:A"


def test_offsets_in_utf8_bytes_are_read_as_bytes() -> None:
    # "é東 x" from a server that counts bytes (é is two, 東 three, in two pieces): " x" starts at byte 5,
    # character 2. Neither the offsets read as characters nor the summed token texts spell the text.
    tokens = ["é", "bytes:\\xe6\\x9d", "bytes:\\xb1", " x"]
    top: list[dict[str, float] | None] = [
        {"é": -0.1, "e": -1.0},
        {"bytes:\\xe6\\x9d": -0.1},
        {"bytes:\\xb1": -0.1},
        {" x": -0.5, " y": -1.2},
    ]
    response = _sample("é東 x", tokens, [10, 12, 14, 15], top)
    assert [(p.position, p.offset) for p in fork_points(response, threshold=0.2)] == [(0, 0), (3, 2)]
    assert fork_prompt(response, 3, " y") == "P:é東 y"
    assert fork_prompt(response, 0, "e") == "P:e"


def test_offsets_absent_are_summed_from_the_token_texts() -> None:
    top: list[dict[str, float] | None] = [{"Hi": -0.1}, {"\n\n": -0.4, " there": -1.3}, {"Yes": -0.7, "No": -0.8}]
    response = _sample("Hi\n\nYes", ["Hi", "\n\n", "Yes"], None, top)
    assert fork_prompt(response, 2, "No") == "P:Hi\n\nNo"


def test_byte_pieces_cannot_be_forked_as_text() -> None:
    # 東 is three UTF-8 bytes, generated as two byte-level pieces; the server's offsets count characters.
    tokens = ["A", "bytes:\\xe6\\x9d", "bytes:\\xb1", " b"]
    top: list[dict[str, float] | None] = [
        {"A": -0.1},
        {"bytes:\\xe6\\x9d": -0.5, " x": -1.2, "bytes:\\xe5": -1.5},
        {"bytes:\\xb1": -0.2, "bytes:\\xb2": -1.9},
        {" b": -0.3, " c": -1.5},
    ]
    response = _sample("A東 b", tokens, [0, 1, 1, 2], top)
    assert [(p.position, p.offset) for p in fork_points(response)] == [(1, 1), (2, None), (3, 2)]
    assert fork_prompt(response, 1, " x") == "P:A x"  # before the character: fine
    assert fork_prompt(response, 3, " c") == "P:A東 c"  # after the whole character: fine
    with pytest.raises(ValidationError) as inside:
        fork_prompt(response, 2, "bytes:\\xb2")
    assert inside.value.argument == "token"
    with pytest.raises(ValidationError) as mid:
        fork_prompt(response, 2, "x")
    assert mid.value.argument == "position" and "mid-character" in str(mid.value)
    # Summing the token texts would have put " b" at 1 + 14 + 10: the server's offsets are what spell the text.
    assert sum(len(t) for t in tokens[:3]) != 2


def test_pieces_shown_as_replacement_characters_are_never_cut_after() -> None:
    # How many bytes a U+FFFD piece stands for is not known: a position after one is taken as inside a character.
    tokens = ["A", "\ufffd", "\ufffd", " b"]
    top: list[dict[str, float] | None] = [{"A": -0.1}, {"\ufffd": -0.2, " x": -1.0}, {"\ufffd": -0.3}, {" b": -0.3}]
    response = _sample("Aé b", tokens, [0, 1, 1, 2], top)
    assert fork_prompt(response, 1, " x") == "P:A x"
    for position in (2, 3):
        with pytest.raises(ValidationError):
            fork_prompt(response, position, " y")


def test_logprobs_that_do_not_spell_the_text_are_refused() -> None:
    response = _sample("something else", ["Hi", " there"], [0, 2], [{"Hi": -0.1}, {" there": -0.1, " you": -1.0}])
    with pytest.raises(ValidationError) as info:
        fork_points(response)
    assert info.value.argument == "response" and "spell" in str(info.value)


@pytest.mark.parametrize("threshold", [-0.01, 1.5, float("nan"), "0.1", True])
def test_threshold_outside_zero_to_one_is_refused(threshold: Any) -> None:
    response = _sample("Hi", ["Hi"], [0], [{"Hi": -0.1}])
    with pytest.raises(ValidationError) as info:
        fork_points(response, threshold=threshold)
    assert info.value.argument == "threshold"


def test_a_sample_without_logprobs_is_refused() -> None:
    (response,) = parse_completion(completion_body("Hi", None), ResponseSpec(prompt="P:"), [0])
    for call in (lambda: fork_points(response), lambda: fork_prompt(response, 0, "x")):
        with pytest.raises(ValidationError) as info:
            call()
        assert info.value.argument == "response"
    with pytest.raises(ValidationError) as typed:
        fork_points("not a sample")  # type: ignore[arg-type]
    assert typed.value.argument == "response"


# -- over HTTP -------------------------------------------------------------------------------------------------


async def _base(client: Any, n: int = 12, **options: Any) -> list[FwResponse]:
    rollouts = await client.generate("What is 2+2?", n, seed=0, temperature=1.0, max_tokens=60, **options)
    return list(rollouts)


def _pick(samples: list[FwResponse]) -> tuple[FwResponse, ForkPoint]:
    """A sample with a paragraph break and non-ASCII words, and a fork point after both."""
    for r in samples:
        tokens = r.get_generation_logprobs().tokens  # type: ignore[union-attr]
        seen = [tokens.index(w) for w in NON_ASCII if w in tokens]
        if "\n\n" not in tokens or len(seen) < 2:
            continue
        after = max(*seen, tokens.index("\n\n"))
        for point in fork_points(r):
            if point.position > after:
                return r, point
    raise AssertionError("no sample of the study has a fork point after a paragraph break and non-ASCII words")


def test_fork_points_match_the_samples_logprobs(make_client: MakeClient) -> None:
    async def main() -> list[FwResponse]:
        async with make_client() as client:
            return await _base(client, 3)

    for r in asyncio.run(main()):
        generated = r.get_generation_logprobs()
        assert generated is not None
        expected = []
        offset = 0
        for i, (token, lp, top) in enumerate(
            zip(generated.tokens, generated.token_logprobs, generated.top_logprobs, strict=True)
        ):
            alternatives = {t: math.exp(v) for t, v in (top or {}).items() if t != token and math.exp(v) > 0.05}
            if alternatives:
                assert lp is not None
                expected.append((i, offset, token, math.exp(lp), alternatives))
            offset += len(token)
        points = fork_points(r)
        assert [(p.position, p.offset, p.chosen, p.chosen_prob, p.alternatives) for p in points] == expected
        assert points and all(r.full[p.offset :].startswith(p.chosen) for p in points if p.offset is not None)


@pytest.mark.parametrize("echo", [True, False])
def test_a_fork_sends_exactly_the_prompt_the_generated_text_and_the_token(
    make_client: MakeClient, sim: FireworksSimulator, echo: bool
) -> None:
    async def main() -> tuple[FwResponse, ForkPoint, Fork]:
        async with make_client(echo=echo) as client:
            base, point = _pick(await _base(client))
            token = next(iter(point.alternatives))
            return base, point, await client.fork(base, point.position, token, 3, answer=last_word, seed=7)

    base, point, fork = asyncio.run(main())
    generated = base.get_generation_logprobs()
    assert generated is not None
    token = next(iter(point.alternatives))
    by_hand = base.prompt + "".join(generated.tokens[: point.position]) + token  # the simulator's tokens are text
    assert fork.prefix == by_hand == base.prompt + base.full[: point.offset] + token
    assert "\n\n" in fork.prefix[len(base.prompt) :] and any(w in fork.prefix for w in NON_ASCII)
    sent = [b for b in _completions(sim) if b["prompt"] != base.prompt]
    assert len(sent) == 3 and {b["prompt"] for b in sent} == {by_hand}
    assert all("echo" not in b for b in sent)  # a fork's prompt is not echoed unless asked
    assert [b["seed"] for b in sent] == [7, 8, 9]
    assert fork.rollouts.prompt_text == by_hand and len(fork.rollouts) == 3
    assert (fork.position, fork.offset, fork.token, fork.chosen) == (point.position, point.offset, token, point.chosen)
    assert fork.prob == pytest.approx(point.alternatives[token])
    assert fork.texts == tuple(base.full[: point.offset] + token + r.full for r in fork.rollouts)
    assert fork.answers == tuple(last_word(t) for t in fork.texts)
    assert fork.outcomes == answer_distribution(fork.answers) and sum(fork.outcomes.values()) == pytest.approx(1)
    assert fork.base_answer == last_word(base.full)


def test_the_default_answer_is_the_last_box_of_the_whole_text(make_client: MakeClient) -> None:
    async def main() -> Fork:
        async with make_client() as client:
            base = (await _base(client, 1))[0]
            with pytest.warns(UserWarning):
                return await client.fork(base, 3, " \\boxed{ 7 }", 3)

    fork = asyncio.run(main())
    assert fork.answers == ("7", "7", "7") and fork.outcomes == {"7": 1.0} and fork.base_answer is None


def test_any_token_can_be_forked_with_a_warning_when_it_is_no_alternative(
    make_client: MakeClient, sim: FireworksSimulator
) -> None:
    async def main() -> tuple[FwResponse, Fork, Fork]:
        async with make_client() as client:
            base = (await _base(client, 1))[0]
            with pytest.warns(UserWarning, match="not among the alternatives"):
                odd = await client.fork(base, 2, " 🙂 zebra", 2, answer=last_word)
            chosen = base.get_generation_logprobs().tokens[2]  # type: ignore[union-attr]
            same = await client.fork(base, 2, chosen, 2, answer=last_word)  # the base's own path: no warning
            return base, odd, same

    base, odd, same = asyncio.run(main())
    assert odd.prob is None and odd.prefix.endswith(" 🙂 zebra")
    assert same.token == same.chosen and same.prob is not None
    assert same.offset is not None and same.prefix == base.prompt + base.full[: same.offset + len(same.chosen)]


def test_all_forks_of_a_sample_run_as_one_study_and_a_rerun_is_cached(
    make_client: MakeClient, sim: FireworksSimulator, tmp_path: Path
) -> None:
    async def main() -> tuple[FwResponse, list[Fork], list[Fork]]:
        async with make_client(max_tokens=8) as client:
            base = (await _base(client, 1, echo=False))[0]
            before = len(_completions(sim))
            first = await client.forks(base, n_samples=2, threshold=0.2, answer=last_word, output=tmp_path / "f.jsonl")
            assert len(_completions(sim)) - before == 2 * len(first)
            again = await client.forks(base, n_samples=2, threshold=0.2, answer=last_word)
            assert len(_completions(sim)) - before == 2 * len(first)  # all from the cache
            return base, first, again

    base, first, again = asyncio.run(main())
    points = fork_points(base, threshold=0.2)
    assert [(f.position, f.token) for f in first] == [(p.position, t) for p in points for t in p.alternatives]
    assert len(first) > 3
    assert [f.prefix for f in again] == [f.prefix for f in first]
    assert all(r.cached for f in again for r in f.rollouts)
    assert [f.answers for f in again] == [f.answers for f in first]
    assert (tmp_path / "f.jsonl").exists()


def test_positions_and_include_chosen_choose_the_forks(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async def main() -> tuple[FwResponse, list[Fork]]:
        async with make_client(max_tokens=6) as client:
            base = (await _base(client, 1))[0]
            wanted = [p.position for p in fork_points(base)][:2]
            return base, await client.forks(
                base, n_samples=1, positions=wanted, include_chosen=True, answer=last_word
            )

    base, forks = asyncio.run(main())
    points = fork_points(base)[:2]
    assert [(f.position, f.token) for f in forks] == [
        (p.position, t) for p in points for t in [p.chosen, *p.alternatives]
    ]


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda c, r: c.fork(r, -1, " a", 1), "position"),
        (lambda c, r: c.fork(r, 10_000, " a", 1), "position"),
        (lambda c, r: c.fork(r, 1.0, " a", 1), "position"),
        (lambda c, r: c.fork(r, 0, "", 1), "token"),
        (lambda c, r: c.fork(r, 0, "bytes:\\xe6", 1), "token"),
        (lambda c, r: c.fork(r, 0, " a", 0), "n_samples"),
        (lambda c, r: c.fork(r, 0, " a", 1, answer="last"), "answer"),
        (lambda c, r: c.forks(r, n_samples=1, threshold=2.0), "threshold"),
        (lambda c, r: c.forks(r, n_samples=1, positions=[10_000]), "position"),
        (lambda c, r: c.forks(r, n_samples=1, raw=False), "raw"),
        (lambda c, r: c.fork("text", 0, " a", 1), "response"),
    ],
)
@pytest.mark.filterwarnings("ignore:fork:UserWarning")
def test_bad_arguments_are_refused_before_any_fork_is_sent(
    make_client: MakeClient, sim: FireworksSimulator, call: Any, argument: str
) -> None:
    async def main() -> None:
        async with make_client(max_tokens=6) as client:
            base = (await _base(client, 1))[0]
            sim.reset()
            await call(client, base)

    with pytest.raises(ValidationError) as info:
        asyncio.run(main())
    assert info.value.argument == argument
    assert _completions(sim) == []


def test_a_sample_without_logprobs_cannot_be_forked(make_client: MakeClient, sim: FireworksSimulator) -> None:
    async def main() -> None:
        async with make_client(max_tokens=6, logprobs=None) as client:
            base = (await _base(client, 1))[0]
            sim.reset()
            await client.forks(base, n_samples=1)

    with pytest.raises(ValidationError) as info:
        asyncio.run(main())
    assert info.value.argument == "response" and _completions(sim) == []


def test_the_sync_twins(sim: FireworksSimulator, tmp_path: Path) -> None:
    with Fireworks(
        "qwen-15b", base_url=sim.base_url, api_key=sim.api_key, cache_dir=str(tmp_path), max_tokens=6,
        progress_bar=False,
    ) as client:
        base = client.generate("What is 2+2?", 1, temperature=1.0)[0]
        point = fork_points(base)[0]
        one = client.fork(base, point.position, next(iter(point.alternatives)), 2, answer=last_word)
        every = client.forks(base, n_samples=2, positions=[point.position], answer=last_word)
    assert every[0].prefix == one.prefix and every[0].answers == one.answers


def test_the_worked_example_in_docs_runs_as_written_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/forks.md's example, run twice in a fresh directory: the second run reads every fork back from its file."""
    import re

    code = compile(docs_block("forks.md"), "docs/forks.md", "exec")
    monkeypatch.chdir(tmp_path)
    outputs = []
    for _ in range(2):
        exec(code, {"__name__": "__main__"})  # in this process: a subprocess would spend seconds importing
        outputs.append(capsys.readouterr().out)
    found = re.search(r"(\d+) forks, (\d+) samples, 0 read back", outputs[0])
    assert found is not None and int(found.group(2)) == 4 * int(found.group(1)) > 0
    assert f"{found.group(1)} forks, {found.group(2)} samples, {found.group(2)} read back" in outputs[1]
    assert outputs[0].count("alternatives {") == 3 and "the final answers is" in outputs[0]
    assert "sent as {'ids'}" in outputs[0] and "sent as {'ids'}" in outputs[1]  # the content format carries every id
    assert "not shown: 0." in outputs[0]
