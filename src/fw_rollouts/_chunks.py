"""Reasoning chunks with offsets: a chain of thought split into steps, each step a slice of the original text.

Every :class:`Chunk` carries ``start`` and ``end``, offsets into the text passed in, and its ``text`` is exactly
``original[start:end]``. Prompts for resampling are built by slicing the original text at those offsets
(:func:`prefix_before`, :func:`prefix_through`), never by joining chunk strings: a join turns paragraph breaks
into spaces, and the published ``" ".join(chunks[:i + 1]).replace(chunk_i, "")`` also deletes every earlier
repeat of a short sentence such as ``"Wait."``. Either way the prefix would not be the model's own text.

Rules (``rule=``):

* ``"thought-anchors"``: the published rule (Thought Anchors, ``utils.py``, ``split_solution_into_chunks``),
  with the same chunk boundaries. Only the reasoning is split: the text after the first ``<think>`` (up to a
  second ``<think>``, if any) and before the first ``</think>`` after it, whitespace-stripped at both ends. A
  piece ends at a ``.``, ``?`` or ``!`` followed by a space or ``\\n``, or at the first newline of a ``\\n\\n``
  or of a ``\\r\\n\\r\\n``; pieces are whitespace-stripped and empty ones dropped. The final piece, if it does
  not end at such a boundary, is dropped (their code that would keep it is commented out). Then a piece shorter
  than 10 characters is merged into the next one, or, if it is the last, into the previous one; lengths are
  counted as theirs are, on the pieces joined with one space. A merged chunk spans from its first piece's start
  to its last piece's end, so its text keeps the whitespace the original had between the pieces (theirs has one
  space there): the chunk texts equal theirs up to whitespace.
* ``"sentences"``: a chunk ends after a ``.``, ``?`` or ``!`` followed by whitespace; the final piece is kept
  whether or not it ends a sentence. Pieces are whitespace-stripped and empty ones dropped; nothing is merged.
* ``"paragraphs"``: chunks are separated by blank lines (a newline, optional whitespace, a newline); pieces are
  whitespace-stripped and empty ones dropped.
* a callable ``rule(text) -> [(start, end), ...]``: the spans are taken as given (not stripped), after checking
  that they are integers within the text, each non-empty, in increasing order and not overlapping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._exceptions import InvalidTypeError, ValidationError

__all__ = [
    "RULES",
    "Chunk",
    "SplitRule",
    "first_chunk",
    "prefix_before",
    "prefix_through",
    "split_reasoning",
]

SplitRule = str | Callable[[str], Sequence[tuple[int, int]]]
"""A chunking rule: one of the names in :data:`RULES`, or a callable returning ``(start, end)`` spans."""

RULES = ("thought-anchors", "sentences", "paragraphs")
"""The rule names :func:`split_reasoning` knows."""

_RULE_ALLOWED = "'thought-anchors', 'sentences', 'paragraphs' or a callable returning (start, end) spans"

_MIN_CHUNK_CHARS = 10
"""The published rule merges a chunk shorter than this into its neighbour."""

# The published scan ends a piece on the character matched here (a zero-width lookahead keeps the rest for the
# next piece): the first newline of "\n\n" or the "\r" opening "\r\n\r\n", and sentence punctuation followed by
# exactly a space or "\n" (not a tab, not "\r"). Matching inside the reasoning's slice alone reproduces their
# condition that the whole pattern fits in the text.
_THOUGHT_ANCHORS_END = re.compile(r"\n(?=\n)|\r(?=\n\r\n)|[.?!](?=[ \n])")
_SENTENCE_END = re.compile(r"[.?!](?=\s)")
_BLANK_LINE = re.compile(r"\n\s*\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One step of a chain of thought: its position in the list, its text and where the text sits in the original.

    ``text == original[start:end]`` always holds, ``original`` being the string passed to :func:`split_reasoning`.
    """

    index: int
    """Position in the list of chunks, from 0."""
    text: str
    """The chunk's text, exactly ``original[start:end]``."""
    start: int
    """Offset of the chunk's first character in the original text."""
    end: int
    """Offset one past the chunk's last character in the original text."""


def split_reasoning(text: str, rule: SplitRule = "thought-anchors") -> list[Chunk]:
    """Split ``text`` into chunks by ``rule``; each chunk holds its ``start`` and ``end`` offsets into ``text``.

    >>> [c.text for c in split_reasoning("<think>\\nLet x be 2. Then x + x is 4.\\n\\nDone, so x is 2. </think>")]
    ['Let x be 2.', 'Then x + x is 4.', 'Done, so x is 2.']

    The rules are described in this module's docstring. An unknown rule name, or a callable returning spans that
    are out of bounds, empty, out of order or overlapping, raises :class:`ValidationError` naming ``rule``.
    """
    _check_text(text)
    return [Chunk(index, text[start:end], start, end) for index, (start, end) in enumerate(_spans(text, rule))]


def first_chunk(text: str, rule: SplitRule = "thought-anchors") -> Chunk | None:
    """The first chunk of a continuation (a resample's first resampled chunk), or None for blank text.

    The first chunk by ``rule``; when the rule finds none (the text is one unterminated piece, which the
    published rule drops), the whole whitespace-stripped text as one chunk. Under ``"thought-anchors"`` "the
    whole text" is the part the rule reads: before a ``</think>``, so an answer after the reasoning is not
    taken for a reasoning step.
    """
    _check_text(text)
    spans = _spans(text, rule)
    if spans:
        start, end = spans[0]
        return Chunk(0, text[start:end], start, end)
    lo, hi = _reasoning_region(text) if rule == "thought-anchors" else (0, len(text))
    start, end = _stripped(text, lo, hi)
    if start == end:
        return None
    return Chunk(0, text[start:end], start, end)


def prefix_before(text: str, chunk: Chunk) -> str:
    """The text before ``chunk``, trailing whitespace removed: ``text[:chunk.start].rstrip()``.

    The model writes the separator itself (the published prompt strips the prefix too), and a prompt ending in
    whitespace tokenises unlike the model's own text. ``text`` is the string the chunk was split from.
    """
    _check_chunk(text, chunk)
    return text[: chunk.start].rstrip()


def prefix_through(text: str, chunk: Chunk) -> str:
    """The text up to and including ``chunk``: ``text[:chunk.end]``, ``text`` being the string it was split from."""
    _check_chunk(text, chunk)
    return text[: chunk.end]


def _spans(text: str, rule: SplitRule) -> list[tuple[int, int]]:
    if isinstance(rule, str):
        if rule == "thought-anchors":
            return _thought_anchors(text)
        if rule == "sentences":
            return _pieces(text, 0, len(text), _SENTENCE_END, keep_last=True)
        if rule == "paragraphs":
            return _paragraphs(text)
        raise ValidationError("rule", rule, _RULE_ALLOWED)
    if callable(rule):
        return _checked_spans(text, rule)
    raise InvalidTypeError("rule", rule, _RULE_ALLOWED)


def _thought_anchors(text: str) -> list[tuple[int, int]]:
    lo, hi = _reasoning_region(text)
    spans = _pieces(text, lo, hi, _THOUGHT_ANCHORS_END, keep_last=False)
    return _merge_short(spans)


def _reasoning_region(text: str) -> tuple[int, int]:
    # Theirs: `text.split("<think>")[1].strip()` when the text has a <think>, then `.split("</think>")[0].strip()`
    # when what is left has a </think>. Each strip happens only with its tag: at the end it decides whether the
    # last sentence is terminated ("x is 4. " keeps it, "x is 4." drops it).
    lo, hi = 0, len(text)
    opening = text.find("<think>")
    if opening != -1:
        second = text.find("<think>", opening + len("<think>"))
        lo, hi = _stripped(text, opening + len("<think>"), len(text) if second == -1 else second)
    closing = text.find("</think>", lo, hi)
    if closing != -1:
        lo, hi = _stripped(text, lo, closing)
    return lo, hi


def _pieces(text: str, lo: int, hi: int, boundary: re.Pattern[str], *, keep_last: bool) -> list[tuple[int, int]]:
    """The whitespace-stripped, non-empty pieces of ``text[lo:hi]`` ending where ``boundary`` matches."""
    spans = []
    piece_start = lo
    for match in boundary.finditer(text, lo, hi):
        end = match.end()
        start, stop = _stripped(text, piece_start, end)
        if start < stop:
            spans.append((start, stop))
            # Theirs resets the piece only when it was kept; a blank one runs on into the next (same result).
            piece_start = end
    if keep_last:
        start, stop = _stripped(text, piece_start, hi)
        if start < stop:
            spans.append((start, stop))
    return spans


def _paragraphs(text: str) -> list[tuple[int, int]]:
    spans = []
    piece_start = 0
    for match in _BLANK_LINE.finditer(text):
        spans.append(_stripped(text, piece_start, match.start()))
        piece_start = match.end()
    spans.append(_stripped(text, piece_start, len(text)))
    return [(start, end) for start, end in spans if start < end]


def _merge_short(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The published merge of chunks shorter than 10 characters, on spans.

    Their merge joins texts with one space and tests the joined length: each span carries that length, which can
    be shorter than the span (the original may have a paragraph break where theirs has a space).
    """
    chunks = [(start, end, end - start) for start, end in spans]
    i = 0
    while i < len(chunks):
        if chunks[i][2] < _MIN_CHUNK_CHARS:
            if i == len(chunks) - 1:
                if i > 0:
                    previous, short = chunks[i - 1], chunks[i]
                    chunks[i - 1] = (previous[0], short[1], previous[2] + 1 + short[2])
                    chunks.pop(i)
            else:
                short, following = chunks[i], chunks[i + 1]
                chunks[i + 1] = (short[0], following[1], short[2] + 1 + following[2])
                chunks.pop(i)
            if i == 0 and len(chunks) == 1:
                break
        else:
            i += 1
    return [(start, end) for start, end, _ in chunks]


def _stripped(text: str, lo: int, hi: int) -> tuple[int, int]:
    """The offsets of ``text[lo:hi].strip()``: whitespace as ``str.strip`` sees it."""
    piece = text[lo:hi]
    left = piece.lstrip()
    if not left:
        return lo, lo
    return hi - len(left), lo + len(piece.rstrip())


def _checked_spans(text: str, rule: Callable[[str], Sequence[tuple[int, int]]]) -> list[tuple[int, int]]:
    spans = []
    previous_end = 0
    for span in rule(text):
        if not (isinstance(span, tuple | list) and len(span) == 2):
            raise ValidationError("rule", rule, f"spans as (start, end) pairs of integers; got {span!r}")
        start, end = span
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
            raise ValidationError("rule", rule, f"spans as (start, end) pairs of integers; got {span!r}")
        if not 0 <= start < end <= len(text):
            raise ValidationError(
                "rule", rule, f"non-empty spans within the text (0 <= start < end <= {len(text)}); got {span!r}"
            )
        if start < previous_end:
            raise ValidationError(
                "rule", rule, f"spans in increasing order, not overlapping; {span!r} starts before {previous_end}"
            )
        spans.append((start, end))
        previous_end = end
    return spans


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise InvalidTypeError("text", text, "a str")


def _check_chunk(text: object, chunk: object) -> None:
    _check_text(text)
    if not isinstance(chunk, Chunk):
        raise InvalidTypeError("chunk", chunk, "a Chunk from split_reasoning or first_chunk")
    assert isinstance(text, str)
    if not (0 <= chunk.start <= chunk.end <= len(text) and text[chunk.start : chunk.end] == chunk.text):
        raise ValidationError(
            "chunk", chunk, "a chunk of this text: text[chunk.start:chunk.end] must equal chunk.text"
        )
