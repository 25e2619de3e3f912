"""Reasoning chunks with offsets: the published Thought Anchors boundaries, the other rules, the prefix builders."""

from __future__ import annotations

import itertools
import random

import pytest

from fw_rollouts import (
    Chunk,
    InvalidTypeError,
    ValidationError,
    first_chunk,
    prefix_before,
    prefix_through,
    split_reasoning,
)


def published_chunks(text: str) -> list[str]:
    """The published rule as strings, written independently of ours: pieces, then the short-piece merge.

    Thought Anchors, utils.py, split_solution_into_chunks (interp-reasoning/thought-anchors, MIT), as
    docs/research-metrics.md describes it. Our implementation works on offsets; this one joins strings as theirs
    does, so each checks the other.
    """
    if "<think>" in text:
        text = text.split("<think>")[1].strip()
    if "</think>" in text:
        text = text.split("</think>")[0].strip()
    pieces = []
    current = ""
    for i, ch in enumerate(text):
        current += ch
        rest = text[i:]
        ends = rest.startswith(("\n\n", "\r\n\r\n")) or (ch in ".?!" and text[i + 1 : i + 2] in (" ", "\n"))
        if ends and current.strip():
            pieces.append(current.strip())
            current = ""
    # The unterminated remainder in `current` is dropped. Short pieces accumulate forward until 10 characters;
    # a short remainder at the end joins the last chunk, or stands alone if there is none.
    merged: list[str] = []
    pending = ""
    for piece in pieces:
        joined = f"{pending} {piece}" if pending else piece
        if len(joined) < 10:
            pending = joined
        else:
            merged.append(joined)
            pending = ""
    if pending:
        if merged:
            merged[-1] = f"{merged[-1]} {pending}"
        else:
            merged.append(pending)
    return merged


def squash(text: str) -> str:
    return " ".join(text.split())


def assert_exact_slices(text: str, chunks: list[Chunk]) -> None:
    for index, chunk in enumerate(chunks):
        assert chunk.index == index
        assert text[chunk.start : chunk.end] == chunk.text
    starts_ends = [(c.start, c.end) for c in chunks]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(starts_ends))


def texts(chunks: list[Chunk]) -> list[str]:
    return [c.text for c in chunks]


# --- the published rule, on hand-worked cases -------------------------------------------------------------------


def test_sentences_inside_think_tags_with_offsets() -> None:
    text = (
        "Problem: add.\n<think>\nLet x be 2. Then x + x is 4.\n\nSo the answer is 4. I will write it. \n</think>\n"
        "The answer is 4."
    )
    chunks = split_reasoning(text)
    # The reasoning is stripped, so "I will write it." ends it unterminated and is dropped, as theirs is.
    assert texts(chunks) == ["Let x be 2.", "Then x + x is 4.", "So the answer is 4."]
    assert_exact_slices(text, chunks)
    # Offsets count in the text passed in, prompt and tag included.
    assert chunks[0].start == text.index("Let x")
    assert chunks[2].end == text.index(" I will")


def test_final_unterminated_piece_is_dropped() -> None:
    # "and then" ends no sentence: the published code drops it (the line that kept it is commented out).
    assert texts(split_reasoning("First we set up. Then we solve it. and then")) == [
        "First we set up.",
        "Then we solve it.",
    ]
    # Inside tags the reasoning is stripped, so a last "." at the very end terminates nothing...
    assert texts(split_reasoning("<think>Set up the sum. Solve it now.</think>")) == ["Set up the sum."]
    # ...while without tags nothing is stripped and the trailing newline terminates it.
    assert texts(split_reasoning("Set up the sum. Solve it now.\n")) == ["Set up the sum.", "Solve it now."]


def test_boundaries_need_space_or_newline_after_the_punctuation() -> None:
    # 3.14 is one number; "?\t" and ".\r\n" are no boundary (only " " and "\n" count after the punctuation).
    text = "Is pi 3.14?\tMaybe so.\r\nIt is close to that. Yes it is. "
    assert texts(split_reasoning(text)) == ["Is pi 3.14?\tMaybe so.\r\nIt is close to that.", "Yes it is."]


def test_paragraph_breaks_end_a_chunk() -> None:
    text = "First paragraph here\n\nSecond paragraph here\r\n\r\nThird one here\n\n"
    chunks = split_reasoning(text)
    assert texts(chunks) == ["First paragraph here", "Second paragraph here", "Third one here"]
    assert_exact_slices(text, chunks)


def test_short_chunks_merge_into_the_next_and_the_last_into_the_previous() -> None:
    # "Wait." (5) + " " + "Hmm." (4) = 10 characters joined, no longer short; "Ok." at the end joins the previous.
    text = "Wait. Hmm. Let me check the sum. Ok. "
    chunks = split_reasoning(text)
    assert texts(chunks) == ["Wait. Hmm.", "Let me check the sum. Ok."]
    assert_exact_slices(text, chunks)
    assert published_chunks(text) == ["Wait. Hmm.", "Let me check the sum. Ok."]


def test_merge_counts_the_joined_length_not_the_span() -> None:
    # Joined with one space "Wait. No." is 9 < 10, so it merges on; the span "Wait.\n\nNo." is 10 characters.
    text = "Wait.\n\nNo.\n\nThe sum is twelve. "
    chunks = split_reasoning(text)
    assert texts(chunks) == ["Wait.\n\nNo.\n\nThe sum is twelve."]
    assert published_chunks(text) == ["Wait. No. The sum is twelve."]


def test_a_merged_chunk_spans_its_pieces_and_keeps_the_original_whitespace() -> None:
    text = "Wait.\n\nThe sum is twelve. "
    (chunk,) = split_reasoning(text)
    assert (chunk.start, chunk.end) == (0, len("Wait.\n\nThe sum is twelve."))
    assert chunk.text == "Wait.\n\nThe sum is twelve."
    assert published_chunks(text) == ["Wait. The sum is twelve."]


def test_a_lone_short_chunk_is_kept_and_blank_text_has_none() -> None:
    assert texts(split_reasoning("Yes. ")) == ["Yes."]
    assert split_reasoning("") == []
    assert split_reasoning(" \n\n \t") == []
    assert split_reasoning("<think>\n\n</think>") == []


def test_only_the_part_between_the_first_two_think_tags_is_read() -> None:
    text = "<think>A first thought. <think>A second thought. "
    assert texts(split_reasoning(text)) == []  # "A first thought." is the unterminated end of its region
    assert published_chunks(text) == []
    text = "<think>A first thought. Here it is. <think>x"
    assert texts(split_reasoning(text)) == ["A first thought."]


def test_closing_tag_alone_limits_the_reasoning() -> None:
    text = "The reasoning goes here. More of it.\n</think>\nAnswer: 5. Done."
    assert texts(split_reasoning(text)) == ["The reasoning goes here."]


# --- the published rule, swept at random ------------------------------------------------------------------------

PARTS = [
    "Let x be 2.", "Wait.", "Wait.", "Hmm", "So 3.14 is pi?", "Yes!", "Right?!", "...", "e.g. this", "ok", "a",
    ".", "?", "!", "The sum is 12. ", "  Then we add 5 to both sides.", "x=1.5", "done",
    " ", "\n", "\n\n", "\r\n", "\r\n\r\n", "\t", "\u00a0", "<think>", "</think>", "\n\n\n",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_random_texts_match_the_published_rule(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2_500):
        text = "".join(rng.choice(PARTS) + rng.choice(["", "", " ", "\n"]) for _ in range(rng.randint(0, 16)))
        chunks = split_reasoning(text)
        assert_exact_slices(text, chunks)
        assert [squash(c.text) for c in chunks] == [squash(c) for c in published_chunks(text)], repr(text)


# --- the prefix builders ----------------------------------------------------------------------------------------


REPEATS = (
    "Let me try 7 first, as a guess.\n\nHmm, that gives 14. Wait, no.\n\nLet me try 7 again, carefully.\n\n"
    "Hmm, that gives 14. Wait, no.\n\nSo the answer is 12. "
)


def test_prefixes_slice_and_keep_every_repeat_and_paragraph_break() -> None:
    chunks = split_reasoning(REPEATS)
    assert texts(chunks) == [
        "Let me try 7 first, as a guess.",
        "Hmm, that gives 14.",
        "Wait, no.\n\nLet me try 7 again, carefully.",
        "Hmm, that gives 14.",
        "Wait, no.\n\nSo the answer is 12.",
    ]
    repeat = chunks[3]
    assert prefix_before(REPEATS, repeat) == (
        "Let me try 7 first, as a guess.\n\nHmm, that gives 14. Wait, no.\n\nLet me try 7 again, carefully."
    )
    assert prefix_through(REPEATS, repeat) == prefix_before(REPEATS, repeat) + "\n\nHmm, that gives 14."
    for chunk in chunks:
        assert prefix_before(REPEATS, chunk) == REPEATS[: chunk.start].rstrip()
        assert prefix_through(REPEATS, chunk) + REPEATS[chunk.end :] == REPEATS
    assert prefix_before(REPEATS, chunks[0]) == ""


def test_the_published_join_and_replace_loses_repeats_and_paragraph_breaks() -> None:
    # Their prefix before chunk i: " ".join(chunks[:i + 1]).replace(chunks[i], "").strip() on their chunk strings.
    theirs = published_chunks(REPEATS)
    i = 3
    published = " ".join(theirs[: i + 1]).replace(theirs[i], "").strip()
    # replace() deleted the earlier "Hmm, that gives 14." too (leaving two spaces), and the joins dropped every
    # paragraph break: the model never wrote this text.
    assert published == "Let me try 7 first, as a guess.  Wait, no. Let me try 7 again, carefully."
    ours = prefix_before(REPEATS, split_reasoning(REPEATS)[i])
    assert ours.count("Hmm, that gives 14.") == 1 and ours.count("\n\n") == 2
    assert REPEATS.startswith(ours)


def test_prefix_builders_reject_a_chunk_of_another_text() -> None:
    chunk = split_reasoning(REPEATS)[1]
    with pytest.raises(ValidationError) as info:
        prefix_before("some other text", chunk)
    assert info.value.argument == "chunk"
    with pytest.raises(InvalidTypeError):
        prefix_through(REPEATS, (0, 3))  # type: ignore[arg-type]


# --- first_chunk ------------------------------------------------------------------------------------------------


def test_first_chunk_of_a_continuation() -> None:
    text = "\nWait. Maybe I should use 7 instead. Then x is 7. "
    chunk = first_chunk(text)
    assert chunk is not None and chunk.text == "Wait. Maybe I should use 7 instead."
    assert text[chunk.start : chunk.end] == chunk.text
    # An unterminated piece only: the rule finds no chunk, the whole stripped text stands for one.
    chunk = first_chunk("  so x is 7")
    assert chunk == Chunk(0, "so x is 7", 2, 11)
    # Under the published rule, only what precedes </think> counts as reasoning.
    chunk = first_chunk(" so x is 7\n</think>\nThe answer is \\boxed{7}.")
    assert chunk is not None and chunk.text == "so x is 7"
    assert first_chunk(" \n ") is None
    assert first_chunk("", rule="sentences") is None
    chunk = first_chunk("one two", rule="sentences")
    assert chunk is not None and chunk.text == "one two"


# --- the other rules --------------------------------------------------------------------------------------------


def test_sentences_rule_keeps_the_last_piece_and_merges_nothing() -> None:
    text = "  Wait. Is it 3.14?\tYes!\n\nSo it is pi"
    chunks = split_reasoning(text, rule="sentences")
    assert texts(chunks) == ["Wait.", "Is it 3.14?", "Yes!", "So it is pi"]
    assert_exact_slices(text, chunks)


def test_paragraphs_rule_splits_at_blank_lines() -> None:
    text = "\nFirst line\nstill first.\n \t\nSecond.\r\n\r\nThird\n\n\n"
    chunks = split_reasoning(text, rule="paragraphs")
    assert texts(chunks) == ["First line\nstill first.", "Second.", "Third"]
    assert_exact_slices(text, chunks)
    assert split_reasoning("\n\n", rule="paragraphs") == []


def test_callable_rule_spans_are_taken_as_given() -> None:
    text = "alpha beta gamma"
    chunks = split_reasoning(text, rule=lambda t: [(0, 5), (5, 11), (11, len(t))])
    assert texts(chunks) == ["alpha", " beta ", "gamma"]
    assert [(c.start, c.end) for c in chunks] == [(0, 5), (5, 11), (11, 16)]


@pytest.mark.parametrize(
    "spans",
    [[(0, 99)], [(-1, 3)], [(3, 3)], [(4, 2)], [(0, 5), (3, 8)], [(6, 8), (0, 3)], [(0, 2.0)], [(0,)], [(True, 3)]],
)
def test_callable_rule_spans_are_checked(spans: list[tuple[int, int]]) -> None:
    with pytest.raises(ValidationError) as info:
        split_reasoning("alpha beta gamma", rule=lambda _: spans)
    assert info.value.argument == "rule"


def test_unknown_rule_names_the_argument_and_the_choices() -> None:
    with pytest.raises(ValidationError) as info:
        split_reasoning("text", rule="sentence")
    assert info.value.argument == "rule"
    assert info.value.value == "sentence"
    assert info.value.allowed == (
        "'thought-anchors', 'sentences', 'paragraphs' or a callable returning (start, end) spans"
    )
    with pytest.raises(InvalidTypeError) as info:
        split_reasoning("text", rule=3)  # type: ignore[arg-type]
    assert info.value.argument == "rule"
    with pytest.raises(InvalidTypeError) as info:
        split_reasoning(b"text")  # type: ignore[arg-type]
    assert info.value.argument == "text"
