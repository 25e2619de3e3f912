"""score_span, the pure part of scoring: the fixtures' shapes and hand-built logprobs (legacy and content format, a
BOS, byte pieces placed by offsets in characters or bytes, echo_last under both offset readings, boundaries inside
a token, the first position). No I/O."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from _helpers import R1_GENERATED, R1_PROMPT, load_json_fixture
from fw_rollouts import (
    BoundaryInsideToken,
    Logprobs,
    MalformedResponseError,
    MissingLogprobsError,
    Score,
    Usage,
    ValidationError,
    score_span,
)
from fw_rollouts._parsing import parse_logprobs


def fixture_logprobs(name: str, prompt: str) -> Logprobs:
    body = load_json_fixture(name)
    usage = body["usage"]
    return parse_logprobs(
        body["choices"][0]["logprobs"],
        prompt=prompt,
        usage=Usage(usage["prompt_tokens"], usage["completion_tokens"]),
        required=True,
    )


def legacy(
    tokens: list[str], lps: list[float | None], offsets: list[int], top: list[dict[str, float] | None] | None = None
) -> Logprobs:
    """Logprobs as the reply parser makes them from a legacy body, with the whole run treated as echoed."""
    top = top if top is not None else [None if lp is None else {t: lp} for t, lp in zip(tokens, lps, strict=True)]
    return Logprobs(tokens, lps, top, offsets, list(range(100, 100 + len(tokens))))


def byte_offsets(tokens: list[str], base: int = 0) -> list[int]:
    out, pos = [], base
    for t in tokens:
        out.append(pos)
        pos += len(t.encode("utf-8"))
    return out


# -- the fixtures -------------------------------------------------------------------------------------------------

R1_QUESTION = R1_PROMPT.index("What")
R1_QUESTION_END = R1_PROMPT.index("<｜Assistant｜>")


@pytest.mark.parametrize(
    "name", ["fireworks/completion-legacy-logprobs-echo.json", "fireworks/completion-content-logprobs-echo.json"]
)
def test_fireworks_fixtures_a_span_inside_the_prompt_and_the_generated_tokens_dropped(name: str) -> None:
    lp = fixture_logprobs(name, R1_PROMPT)
    score = score_span(lp, R1_PROMPT, R1_QUESTION, R1_QUESTION_END)
    assert score.span == "What is 2+2?"
    assert score.tokens == ("What", " is", " ", "2", "+", "2", "?")
    assert score.token_logprobs == (-5.91, -1.22, -3.07, -0.41, -0.88, -0.02, -0.35)
    assert score.sum_logprob == pytest.approx(-11.86) and score.num_tokens == 7
    assert score.mean_logprob == pytest.approx(-11.86 / 7)
    assert score.token_ids == (3838, 374, 220, 17, 10, 17, 30)
    assert score.greedy == (True,) * 7 and score.greedy_all is True
    assert score.boundary_inside_token is None and score.unscored_token is None
    assert score.located_by == "spelling"
    assert not set(score.tokens) & set(R1_GENERATED.split())  # nothing generated is scored
    assert score.token_spans[0] == (R1_QUESTION, R1_QUESTION + 4)
    if "content" in name:
        assert score.sampling_logprobs is not None and len(score.sampling_logprobs) == 7
    else:
        assert score.sampling_logprobs is None


def test_fireworks_fixture_a_span_from_the_very_start_leaves_the_bos_unscored() -> None:
    lp = fixture_logprobs("fireworks/completion-content-logprobs-echo.json", R1_PROMPT)  # content[0].logprob is 0.0
    score = score_span(lp, R1_PROMPT, 0, R1_QUESTION)
    assert score.unscored_token == "<｜begin▁of▁sentence｜>"
    assert score.tokens == ("<｜User｜>",) and score.token_logprobs == (-0.0012,)


def test_llamacpp_fixture_a_bos_counted_but_not_echoed() -> None:
    lp = fixture_logprobs("llamacpp/completion-echo-logprobs5.json", "Hello world")
    score = score_span(lp, "Hello world", 5, 11)
    assert score.tokens == (" wor", "l", "d")  # the generated " V" is dropped
    assert score.token_logprobs == (-9.694751739501953, -18.83378791809082, -8.680559158325195)
    assert score.greedy == (False, False, False)
    assert score.boundary_inside_token is None


def test_llamacpp_fixture_a_boundary_inside_a_token_is_reported_and_the_token_counted() -> None:
    lp = fixture_logprobs("llamacpp/completion-echo-logprobs5.json", "Hello world")
    score = score_span(lp, "Hello world", 6, 11)  # "world": the text cut inside " wor"
    assert score.tokens == (" wor", "l", "d")
    assert score.boundary_inside_token == (BoundaryInsideToken("start", 0, 3, " wor", (5, 9)),)


def test_llamacpp_fixture_a_span_at_position_zero_has_its_first_token_unscored() -> None:
    lp = fixture_logprobs("llamacpp/completion-echo-logprobs5.json", "Hello world")
    score = score_span(lp, "Hello world", 0, 5)
    assert score.unscored_token == "H"  # its logprob is null: nothing before it
    assert score.tokens == ("el", "lo") and score.token_logprobs == (-23.285741806030273, -11.110301971435547)


# -- hand-built: BOS, content format, greedy ------------------------------------------------------------------------


@pytest.mark.parametrize("offsets", [[0, 0, 5, 11, 12], [0, 3, 8, 14, 15]], ids=["zero-width-bos", "bos-with-width"])
def test_a_bos_the_text_does_not_contain_gives_the_first_token_its_context(offsets: list[int]) -> None:
    tokens = ["<s>", "Hello", " world", "!", " Bye"]
    lp = legacy(tokens, [None, -1.5, -0.5, -0.25, -3.0], offsets)
    score = score_span(lp, "Hello world!", 0, 5)
    assert score.unscored_token is None and score.tokens == ("Hello",) and score.token_logprobs == (-1.5,)
    assert score_span(lp, "Hello world!", 5, 12).tokens == (" world", "!")


def test_content_format_index_zero_is_never_counted_and_greedy_counts_ties() -> None:
    def entry(token: str, logprob: float, offset: int, top: list[tuple[str, float]]) -> dict[str, Any]:
        return {
            "token": token, "logprob": logprob, "sampling_logprob": logprob, "bytes": list(token.encode()),
            "token_id": len(token), "text_offset": offset,
            "top_logprobs": [{"token": t, "logprob": v, "token_id": 1} for t, v in top],
        }  # fmt: skip

    raw = {
        "content": [
            entry("A", -7.0, 0, []),  # a meaningless "unconditional" number at index 0
            entry(" cat", -1.0, 1, [(" dog", -1.0), (" cat", -1.0)]),  # a tie: greedy
            entry(" sat", -2.0, 5, [(" ran", -0.5), (" sat", -2.0)]),  # not the top one
        ]
    }
    lp = parse_logprobs(raw, prompt="A cat sat", usage=Usage(3, 0), required=True)
    whole = score_span(lp, "A cat sat", 0, 9)
    assert whole.unscored_token == "A" and whole.tokens == (" cat", " sat")
    assert whole.sum_logprob == -3.0 and whole.greedy == (True, False) and whole.greedy_all is False
    assert whole.top_logprobs == ({" dog": -1.0, " cat": -1.0}, {" ran": -0.5, " sat": -2.0})
    assert whole.sampling_logprobs == (-1.0, -2.0)
    assert whole.token_ids == (4, 4)


def test_without_alternatives_greedy_is_unknown() -> None:
    lp = Logprobs(["a", " b"], [None, -0.5], None, [0, 1])
    score = score_span(lp, "a b", 1, 3)
    assert score.top_logprobs is None and score.greedy is None and score.greedy_all is None


# -- byte pieces: offsets in characters or bytes --------------------------------------------------------------------

CAFE = "Le café noir"
CAFE_TOKENS = ["Le", " caf", "\ufffd", "\ufffd", " noir", " et"]  # " et" generated
CAFE_LPS: list[float | None] = [None, -1.0, -0.5, -0.25, -2.0, -4.0]


@pytest.mark.parametrize("piece", ["\ufffd", "bytes:\\xc3"])
def test_byte_pieces_are_placed_by_byte_offsets(piece: str) -> None:
    tokens = [piece if t == "\ufffd" else t for t in CAFE_TOKENS]
    offsets = [0, 2, 6, 7, 8, 13]  # UTF-8 bytes: é is bytes 6 and 7
    score = score_span(legacy(tokens, CAFE_LPS, offsets), CAFE, 2, 7)  # " café"
    assert score.located_by == "offsets in bytes"
    assert score.tokens == (" caf", piece, piece) and score.sum_logprob == -1.75
    assert score.token_spans == ((2, 6), (6, 6), (6, 7))
    assert score_span(legacy(tokens, CAFE_LPS, offsets), CAFE, 7, 12).tokens == (" noir",)


def test_byte_pieces_are_placed_by_character_offsets() -> None:
    offsets = [0, 2, 6, 6, 7, 12]  # characters: both pieces of é at character 6
    score = score_span(legacy(CAFE_TOKENS, CAFE_LPS, offsets), CAFE, 2, 7)
    assert score.located_by == "offsets in characters"
    assert score.tokens == (" caf", "\ufffd", "\ufffd") and score.sum_logprob == -1.75
    assert score_span(legacy(CAFE_TOKENS, CAFE_LPS, offsets), CAFE, 7, 12).tokens == (" noir",)


# -- echo_last: a suffix of the text, offsets from the echoed part or from the prompt's start ------------------------

LONG = "Un très long début. Le café noir"
ECHOED = [".", " Le", " caf", "\ufffd", "\ufffd", " noir"]  # the last 6 tokens: byte pieces, so offsets place them
GENERATED = [" et"]


@pytest.mark.parametrize("generated", [GENERATED, []], ids=["max_tokens=1", "max_tokens=0"])
@pytest.mark.parametrize("reading", ["from-the-echo", "from-the-prompt"])
def test_echo_last_offsets_either_reading(reading: str, generated: list[str]) -> None:
    tokens = ECHOED + generated
    start_bytes = len(LONG.encode()) - len("".join(t for t in ECHOED if t != "\ufffd").encode()) - 2
    pieces = [t if t != "\ufffd" else "x" for t in tokens]  # one byte each, as a byte piece is
    offsets = byte_offsets(pieces, 0 if reading == "from-the-echo" else start_bytes)
    lps: list[float | None] = [-9.0, -1.0, -2.0, -0.5, -0.25, -3.0, -4.0]
    lps = lps[: len(tokens)]
    lp = legacy(tokens, lps, offsets)
    start = LONG.index(" café")
    score = score_span(lp, LONG, start, len(LONG), echo_last=len(ECHOED), generated=len(generated))
    assert score.located_by == "offsets in bytes"
    assert score.tokens == (" caf", "\ufffd", "\ufffd", " noir") and score.sum_logprob == -5.75
    assert score.token_spans[0] == (start, start + 4) and score.unscored_token is None


def test_echo_last_spelled_from_the_end_prefers_the_count_it_asked_for() -> None:
    text = "go go go go go"
    tokens = [" go", " go", " go", " go"]  # three echoed, then one generated: all four spell a suffix too
    lp = legacy(tokens, [-1.0, -2.0, -3.0, -4.0], [0, 3, 6, 9])
    score = score_span(lp, text, 11, 14, echo_last=3)
    assert score.located_by == "spelling from the end"
    assert score.tokens == (" go",) and score.token_logprobs == (-3.0,)  # not the generated -4.0


def test_an_echo_that_does_not_reach_the_span_is_missing_logprobs() -> None:
    lp = legacy([" go", " go"], [-1.0, -2.0], [0, 3])
    with pytest.raises(MissingLogprobsError, match="echoed too little"):
        score_span(lp, "go go go go", 2, 11, echo_last=2)


# -- boundaries, bad input, unplaceable replies ---------------------------------------------------------------------


def test_both_boundaries_inside_tokens() -> None:
    tokens = ["Say", ":", " Hello", " world"]
    lp = legacy(tokens, [None, -1.0, -2.0, -3.0], [0, 3, 4, 10])
    score = score_span(lp, "Say: Hello world", 5, 14)  # "Hello wor"
    assert score.tokens == (" Hello", " world") and score.sum_logprob == -5.0
    assert score.boundary_inside_token == (
        BoundaryInsideToken("start", 0, 2, " Hello", (4, 10)),
        BoundaryInsideToken("end", 1, 3, " world", (10, 16)),
    )


def test_a_span_inside_one_token_reports_both_boundaries_on_it() -> None:
    lp = legacy(["Say", " Hello"], [None, -2.0], [0, 3])
    score = score_span(lp, "Say Hello", 5, 7)  # "ll"
    assert score.tokens == (" Hello",)
    assert [b.boundary for b in score.boundary_inside_token or ()] == ["start", "end"]


@pytest.mark.parametrize(("start", "end"), [(3, 3), (-1, 2), (2, 99), (5, 2)])
def test_a_span_outside_the_text_or_empty_is_refused(start: int, end: int) -> None:
    with pytest.raises(ValidationError):
        score_span(legacy(["ab", "c"], [None, -1.0], [0, 2]), "abc", start, end)


def test_logprobs_of_some_other_text_are_not_scored() -> None:
    lp = legacy([" nothing", " echoed"], [-1.0, -2.0], [0, 8])  # only generated tokens: no echo
    with pytest.raises(MalformedResponseError, match="cannot place"):
        score_span(lp, "The prompt sent", 4, 15)


def test_a_span_token_without_a_logprob_is_missing() -> None:
    lp = legacy(["a", " b", " c"], [None, None, -1.0], [0, 1, 3])
    with pytest.raises(MissingLogprobsError, match="' b'"):
        score_span(lp, "a b c", 1, 5)


def test_a_score_is_a_value() -> None:
    lp = fixture_logprobs("llamacpp/completion-echo-logprobs5.json", "Hello world")
    score = score_span(lp, "Hello world", 6, 11)
    copy = pickle.loads(pickle.dumps(score))
    assert copy == score and isinstance(copy, Score)
    assert repr(score) == (
        "Score(span='world', num_tokens=3, sum_logprob=-37.2091, greedy_all=False, boundary_inside_token=start, "
        "cached=False)"
    )
