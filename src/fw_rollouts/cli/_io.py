"""The commands' files: input read from a path or stdin, and results written as JSON Lines.

Output lines are plain JSON objects, one per line, UTF-8 (floats at ``repr`` precision, so every
logprob reads back as the same float). A file given with ``--output`` is written whole at the end,
under a temporary name and renamed into place: a re-run replaces it (no line twice), and an
interrupted run leaves the previous file or none, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import CommandError

__all__ = ["Source", "check_output", "count", "dump", "finite", "json_lines", "logprobs_json", "read_source",
           "write_lines"]


@dataclass(frozen=True, slots=True)
class Source:
    """An input's text and how messages name it (``prompts.jsonl``, ``stdin``)."""

    name: str
    text: str
    path: str | None
    """The absolute path (None for stdin)."""

    def lines(self) -> list[tuple[int, str]]:
        """``(line number, line)`` of each line that is not blank, without its line ending."""
        return [(n, line.rstrip("\r\n")) for n, line in enumerate(self.text.splitlines(), start=1) if line.strip()]

    def where(self, number: int) -> str:
        """``line N of NAME``."""
        return f"line {number} of {self.name}"

    def is_jsonl(self, fmt: str) -> bool:
        """Whether to read it as JSON Lines: ``fmt`` if it is not ``auto``; else by the suffix (``.jsonl``,
        ``.ndjson``; ``.txt`` and ``.tsv`` are not), else whether the first line is a JSON object."""
        if fmt != "auto":
            return fmt == "jsonl"
        suffix = os.path.splitext(self.name)[1].lower()
        if suffix in (".jsonl", ".ndjson"):
            return True
        if suffix in (".txt", ".tsv", ".tab"):
            return False
        first = next(iter(self.lines()), (0, ""))[1].strip()
        if not first.startswith("{"):
            return False
        try:
            return isinstance(json.loads(first), dict)
        except ValueError:
            return False


def read_source(path: str, flag: str = "--file") -> Source:
    """The input at ``path`` (``-``: stdin), as UTF-8 text."""
    if path == "-":
        return Source("stdin", sys.stdin.read(), None)
    try:
        with open(path, encoding="utf-8") as file:
            return Source(path, file.read(), os.path.abspath(path))
    except FileNotFoundError:
        raise CommandError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"{flag} {path}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"{flag} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def json_lines(source: Source) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each line of a JSON Lines input; a line that is not an object is an error."""
    out = []
    for number, line in source.lines():
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise CommandError(f"{source.where(number)}: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise CommandError(f"{source.where(number)}: not a JSON object (a line is {{\"prompt\": ...}})")
        out.append((number, value))
    return out


def dump(value: Mapping[str, Any]) -> bytes:
    """One output line: compact JSON, UTF-8, newline-terminated.

    A lone surrogate (servers return them for tokens that split a character) cannot be UTF-8: it is
    written as its JSON escape (``\\udc80``), which any JSON reader reads back as the same string.
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace") + b"\n"


def count(n: int, noun: str) -> str:
    """``1 prompt``, ``3 prompts``, ``2 entries``: a count and its noun."""
    if n == 1:
        return f"1 {noun}"
    return f"{n:,} " + (noun[:-1] + "ies" if noun.endswith("y") else noun + "s")


def finite(value: float) -> float | None:
    """``value``, or None where JSON has no number for it (NaN, infinities)."""
    return value if math.isfinite(value) else None


_WHOLE = ("num_prompt_tokens", "prompt_length", "echo")  # of the whole Logprobs, not of each position


def logprobs_json(lp: Any) -> dict[str, Any] | None:
    """Logprobs as an output line holds them: the per-position lists (tokens, token_logprobs, top_logprobs,
    text_offset, token_ids, and sampling_logprobs and top_token_ids where sent); None when there are none."""
    if lp is None or not len(lp):
        return None
    return {k: v for k, v in lp.to_dict().items() if v is not None and k not in _WHOLE}


def check_output(output: str | None, source: Source | None = None) -> None:
    """Refuse an ``--output`` that cannot be written, before the run rather than after it."""
    if output is None or output == "-":
        return
    if os.path.isdir(output):
        raise CommandError(f"--output {output}: is a directory, not a file")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise CommandError(f"--output {output}: the directory {directory} does not exist")
    if source is not None and source.path == os.path.abspath(output):
        raise CommandError(f"--output {output} is the input file: write to another path")


def write_lines(lines: Iterable[Mapping[str, Any]], output: str | None) -> None:
    """Write ``lines`` to ``output`` whole (a temporary name, then renamed), or to stdout when it is None."""
    data = b"".join(map(dump, lines))
    if output is None or output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from .._files import write_whole

    write_whole(output, data)
