"""Final answers read from model text: the last balanced ``\\boxed{...}``, normalised for comparison.

Matches what Thought Anchors reads (``utils.py``: ``extract_boxed_answers``, ``normalize_answer``), with these
differences, each deliberate:

* **Which box.** We take the last box (the model's final answer, as MATH graders read it); their rollout code
  takes the first of the boxes it found. ``which="first"`` gives theirs.
* **Unclosed box.** A ``\\boxed{`` whose braces never close (the sample was cut off) is skipped: the answer is
  the box before it, or None. Theirs takes the rest of the text as the answer.
* **Empty box.** ``\\boxed{}`` (an instruction quoted back) is skipped, as theirs skips it.
* ``\\boxed 5`` (no braces) is not read: theirs does not read it either.

Braces are counted as theirs counts them, escaped ones (``\\{``) included, so ``\\boxed{\\{1, 2\\}}`` reads
``\\{1, 2\\}``.

:func:`normalize_answer` applies their normalisation (lower case; ``\\dfrac`` and ``\\tfrac`` as ``\\frac``; no
whitespace; no ``\\%``; no ``{,}``; ``\\times`` and ``\\cdot`` as ``*``; braces around simple groups removed;
``\\pi`` as ``pi``; ``\\text{...}`` and ``\\mathrm{...}`` unwrapped) and also removes what their check left to
SymPy or did not handle: ``$``, ``\\left`` and ``\\right``, LaTeX spacing (``\\,`` ``\\!`` ``\\;`` ``\\:``
``\\ `` ``~`` ``\\quad``), ``\\displaystyle``, degree marks, ``%``, a trailing period, and thousands separators in
a plain number (``1,000`` as ``1000``). Two of their rules are not kept, because they merge different answers:
braces are removed only around a single character or command, so ``\\frac{1}{23}`` and ``\\frac{12}{3}`` stay
apart (theirs makes both ``\\frac123``); and a comma between digits is not read as a decimal point, so the pair
``(1,2)`` does not become ``(1.2)``. The result is a comparison key, not LaTeX to render. Applying it twice
gives the same key as applying it once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from ._exceptions import InvalidTypeError, ValidationError

__all__ = ["AnswerFunction", "answer_function", "extract_answer", "extract_boxed", "normalize_answer"]

AnswerFunction = Callable[[str], "str | None"]
"""How a sample's text becomes its answer (None when it gives none)."""

_BOX = "\\boxed{"

# Commands whose one argument is the content: \text{cm} reads "cm".
_UNWRAP = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox)\{([^{}]*)\}")
# \left( and \right) size delimiters; a letter after the word makes another command (\rightarrow).
_SIZING = re.compile(r"\\(?:left|right|big|bigg|Big|Bigg)(?![a-zA-Z])")
_SPACING = re.compile(r"\\[,!;:> ]|~|\\q?quad(?![a-zA-Z])|\\displaystyle(?![a-zA-Z])")
_DEGREES = re.compile(r"\^\{?\\circ\}?|°")
# Braces around one character, or around one command not followed by a letter (unwrapping {\pi}r would make
# the command \pir): the group means the same without them.
_SIMPLE_GROUP = re.compile(r"(?<!\\)\{([^{}\\]|\\[a-z]+(?=\}(?![a-z])))\}")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def extract_boxed(text: str, *, which: Literal["last", "first"] = "last") -> str | None:
    """The content of the last (or first) closed, non-empty ``\\boxed{...}`` in ``text``, or None.

    Nested braces are kept: ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``. The content is returned as written;
    :func:`extract_answer` normalises it.
    """
    if not isinstance(text, str):
        raise InvalidTypeError("text", text, "a str")
    if which not in ("last", "first"):
        raise ValidationError("which", which, "'last' or 'first'")
    boxes = _boxes(text)
    if not boxes:
        return None
    return boxes[-1] if which == "last" else boxes[0]


def normalize_answer(answer: str) -> str:
    """A comparison key for a final answer: equal keys for the same answer written differently.

    >>> normalize_answer("\\\\dfrac{1}{2}") == normalize_answer("$\\\\frac12$.")
    True

    The rules are listed in this module's docstring.
    """
    if not isinstance(answer, str):
        raise InvalidTypeError("answer", answer, "a str")
    # One pass can uncover work for another ("{12}." loses its period, then its braces): run to a fixpoint, so
    # that a key normalises to itself. Every rule shortens the text or keeps it, so this ends in a few passes.
    key = _normalize_once(answer)
    for _ in range(8):
        again = _normalize_once(key)
        if again == key:
            break
        key = again
    return key


def _normalize_once(key: str) -> str:
    key = key.strip()
    key = key.replace("$", "")
    key = _fixpoint(_UNWRAP, r"\1", key)
    key = _SIZING.sub("", key)
    key = _SPACING.sub("", key)
    key = _DEGREES.sub("", key)
    key = key.lower()
    key = key.replace("dfrac", "frac").replace("tfrac", "frac")
    key = re.sub(r"\s+", "", key)
    key = key.replace("\\%", "").replace("%", "")
    key = key.replace("{,}", "")
    key = key.replace("\\times", "*").replace("\\cdot", "*")
    key = _fixpoint(_SIMPLE_GROUP, r"\1", key)
    while len(key) >= 2 and key[0] == "{" and key[-1] == "}" and _closes_at_end(key):
        key = key[1:-1]
    key = key.replace("\\pi", "pi")
    key = key.rstrip(".")
    if _THOUSANDS.fullmatch(key):
        key = key.replace(",", "")
    return key


def extract_answer(text: str, *, normalize: bool = True, which: Literal["last", "first"] = "last") -> str | None:
    """The final answer in ``text``: its last ``\\boxed{...}``, normalised (:func:`normalize_answer`); or None.

    None when there is no closed, non-empty box, or when the box normalises to nothing (``\\boxed{\\,}``).
    ``normalize=False`` returns the box's content as written.
    """
    content = extract_boxed(text, which=which)
    if content is None or not normalize:
        return content
    return normalize_answer(content) or None


def _boxes(text: str) -> list[str]:
    boxes = []
    start = text.find(_BOX)
    while start != -1:
        content_start = start + len(_BOX)
        depth = 1
        i = content_start
        while i < len(text):
            char = text[i]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        if depth == 0:
            content = text[content_start:i]
            if content.strip():
                boxes.append(content)
        # Every occurrence is read on its own, as theirs reads them: a box inside a box is a box too.
        start = text.find(_BOX, content_start)
    return boxes


def _fixpoint(pattern: re.Pattern[str], replacement: str, text: str) -> str:
    while True:
        replaced = pattern.sub(replacement, text)
        if replaced == text:
            return text
        text = replaced


def _closes_at_end(key: str) -> bool:
    """Whether the brace opening ``key`` is the one closing it (``{a}{b}`` is two groups, not one)."""
    depth = 0
    for i, char in enumerate(key):
        if char == "{" and (i == 0 or key[i - 1] != "\\"):
            depth += 1
        elif char == "}" and key[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return i == len(key) - 1
    return False


def answer_function(answer: Any) -> AnswerFunction:
    """The ``answer=`` argument of the research methods: a function text -> answer, or None for
    :func:`extract_answer`."""
    if answer is None:
        return extract_answer
    if not callable(answer):
        raise InvalidTypeError("answer", answer, "a function text -> answer (str or None), or None (extract_answer)")
    return answer  # type: ignore[no-any-return]
