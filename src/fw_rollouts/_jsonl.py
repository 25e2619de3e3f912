"""Results on disk as JSON Lines: :class:`FwRollouts` written and read back exactly, logprobs included.

A file is one header line, then one line per sample::

    {"format": "fw_rollouts.rollouts", "version": 1, "rollouts": {<the call's fields, without responses>}}
    {"response": {<FwResponse fields>, "logprobs": {<every Logprobs column>} or null}}

(``top_token_ids``, the alternatives' ids, is there only where the server sent them.)

Samples that share their echoed prompt positions (see :mod:`._echo`) have them written once, on a
line of their own ahead of the first sample that uses them; such a sample's line holds its
generated positions and the part's number, and no ``prompt`` (the part's is the sample's)::

    {"prompt_part": {"id": 0, "prompt": "...", "generation_offset": 1519, "logprobs": {<columns>}}}
    {"response": {<FwResponse fields but prompt>, "logprobs": {<generated columns>, "prompt_part": 0}}}

Read back, the samples of one part share one :class:`~._echo.PromptPart` again.

Every value is JSON that reads back as the same Python value: floats are written with
``repr`` precision (so each logprob is the same float), strings are ASCII-escaped (so text
that holds a lone surrogate, which some servers return, survives), and a line is a plain
object a reader in any language can use. Reading runs no code from the file. A file is
written whole to a temporary name and renamed into place: an interrupted write leaves the
old file or none, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any, Final

from ._echo import PromptPart, prompt_part, with_prompt
from ._exceptions import ValidationError
from ._files import write_whole
from ._logprobs import Logprobs
from ._models import FwResponse, FwRollouts, Usage

__all__ = [
    "FORMAT",
    "VERSION",
    "SampleLines",
    "read_rollouts",
    "response_from_dict",
    "response_to_dict",
    "write_rollouts",
]

FORMAT: Final = "fw_rollouts.rollouts"
"""The ``format`` of a rollouts file's header line."""
VERSION: Final = 1
"""The version this code writes, and the only one it reads so far."""

_CALL_FIELDS: Final = (
    "prompt", "num_responses", "temperature", "top_p", "max_tokens", "model", "cache_dir", "logprobs_enabled",
    "echo_enabled", "logprobs", "prompt_text", "settings",
)  # fmt: skip
_RESPONSE_FIELDS: Final = (
    "full", "content", "reasoning", "finish_reason", "completed_reasoning", "seed", "model", "response_id",
    "created", "echo", "prompt", "index", "cached", "provider", "object",
)  # fmt: skip


def _logprobs_to_dict(lp: Logprobs) -> dict[str, Any]:
    data = lp.to_dict()
    if data["top_token_ids"] is None:  # only where sent: a line without them is the line written before they were kept
        del data["top_token_ids"]
    return data


def _logprobs_from_dict(lp: Mapping[str, Any]) -> Logprobs:
    return Logprobs(
        lp["tokens"],
        lp["token_logprobs"],
        lp["top_logprobs"],
        lp["text_offset"],
        lp["token_ids"],
        sampling_logprobs=lp["sampling_logprobs"],
        top_token_ids=lp.get("top_token_ids"),
        num_prompt_tokens=lp["num_prompt_tokens"],
        prompt_length=lp["prompt_length"],
        echo=lp["echo"],
    )


def response_to_dict(response: FwResponse, part: int | None = None) -> dict[str, Any]:
    """One sample as JSON-ready data, with every logprobs column (``sampling_logprobs`` included).

    ``part``: the number of the prompt part line the sample's shared prompt positions were
    written on; the sample's own positions are then written alone, with that number, and no prompt.
    """
    data = {name: getattr(response, name) for name in _RESPONSE_FIELDS}
    data["item"] = response.item
    data["usage"] = response.usage.to_dict()
    lp = response.logprobs
    if lp is not None and part is not None:
        del data["prompt"]
        data["logprobs"] = {**_logprobs_to_dict(lp.get_generation_logprobs()), "prompt_part": part}
    else:
        data["logprobs"] = None if lp is None else _logprobs_to_dict(lp)
    return data


def response_from_dict(data: Mapping[str, Any], parts: Mapping[int, PromptPart] | None = None) -> FwResponse:
    """The sample :func:`response_to_dict` wrote (KeyError/TypeError/ValueError for anything else).

    ``parts``: the prompt parts read so far, by number, for a sample that shares one.
    """
    lp = data["logprobs"]
    if lp is None or "prompt_part" not in lp:
        logprobs = None if lp is None else _logprobs_from_dict(lp)
        return FwResponse(
            **{name: data[name] for name in _RESPONSE_FIELDS},
            item=_item(data),
            usage=Usage(**data["usage"]),
            logprobs=logprobs,
        )
    number = lp["prompt_part"]
    if parts is None or type(number) is not int or number not in parts:
        raise ValueError(f"the sample refers to prompt part {number!r}, which no line above defines")
    part = parts[number]
    fields = {name: data[name] for name in _RESPONSE_FIELDS if name != "prompt"}
    own = FwResponse(
        **fields, prompt=part.prompt, item=_item(data), usage=Usage(**data["usage"]), logprobs=_logprobs_from_dict(lp)
    )
    return with_prompt(own, part)


def _item(data: Mapping[str, Any]) -> int:
    """The sample's item index (files written before samples knew theirs say nothing: 0)."""
    item = data.get("item", 0)
    if type(item) is not int or item < 0:
        raise ValueError(f"item must be a non-negative integer, not {item!r}")
    return item


def _part_to_dict(part: PromptPart, number: int) -> dict[str, Any]:
    return {
        "id": number,
        "prompt": part.prompt,
        "generation_offset": part.generation_offset,
        "logprobs": _logprobs_to_dict(part.logprobs),
    }


def _part_from_dict(data: Mapping[str, Any]) -> tuple[int, PromptPart]:
    number, prompt, offset = data["id"], data["prompt"], data["generation_offset"]
    if type(number) is not int or type(prompt) is not str or type(offset) is not int or offset < 0:
        raise ValueError("a prompt part has an integer id, a prompt string and a non-negative generation offset")
    logprobs = _logprobs_from_dict(data["logprobs"])
    if not logprobs.echo or logprobs.num_prompt_tokens != len(logprobs) or not len(logprobs):
        raise ValueError("a prompt part's logprobs are echoed prompt positions only")
    return number, PromptPart(prompt, logprobs, offset)


class SampleLines:
    """The JSON Lines of samples, in order, each shared prompt part written once, before its first sample.

    For a file written as samples arrive: feed each sample to :meth:`lines` and write what it returns.
    """

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        # id(part) -> (number, part): the part is held so that its id is not reused while this lives.
        self._parts: dict[int, tuple[int, PromptPart]] = {}

    def lines(self, response: FwResponse) -> list[str]:
        """The lines that write ``response``: its prompt part's first, if not written yet, then its own."""
        part = prompt_part(response)
        if part is None:
            return [json.dumps({"response": response_to_dict(response)}, allow_nan=False)]
        out = []
        known = self._parts.get(id(part))
        if known is None:
            known = self._parts[id(part)] = (len(self._parts), part)
            out.append(json.dumps({"prompt_part": _part_to_dict(part, known[0])}, allow_nan=False))
        out.append(json.dumps({"response": response_to_dict(response, known[0])}, allow_nan=False))
        return out


def _lines(rollouts: FwRollouts) -> Iterator[str]:
    header = {"format": FORMAT, "version": VERSION, "rollouts": {n: getattr(rollouts, n) for n in _CALL_FIELDS}}
    # allow_nan=False: a NaN would not be JSON; the parser refuses such replies, so none should be here.
    yield json.dumps(header, allow_nan=False)
    lines = SampleLines()
    for response in rollouts.responses:
        yield from lines.lines(response)


def write_rollouts(rollouts: FwRollouts, path: str | os.PathLike[str]) -> None:
    """Write ``rollouts`` to ``path`` (replacing it) as a rollouts JSON Lines file, all or nothing."""
    write_whole(os.fspath(path), "".join(line + "\n" for line in _lines(rollouts)).encode("ascii"))


def read_rollouts(path: str | os.PathLike[str]) -> FwRollouts:
    """The :class:`FwRollouts` a rollouts JSON Lines file holds.

    Raises :class:`ValidationError` naming ``path`` (and the line) for a file that is not one.
    """
    where = os.fspath(path)

    def bad(what: str) -> ValidationError:
        return ValidationError("path", where, f"a rollouts file written by FwRollouts.to_jsonl; {what}")

    with open(where, encoding="utf-8") as lines:
        header: Any = None
        responses: list[FwResponse] = []
        parts: dict[int, PromptPart] = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except (ValueError, RecursionError):
                raise bad(f"line {number} is not JSON") from None
            if header is None:
                if not isinstance(data, dict) or data.get("format") != FORMAT:
                    raise bad(f"line {number} is not its header (format {FORMAT!r})")
                if data.get("version") != VERSION:
                    raise bad(f"its version {data.get('version')!r} is not one this version reads ({VERSION})")
                header = data.get("rollouts")
                if not isinstance(header, dict):
                    raise bad(f"line {number} has no 'rollouts' object")
                continue
            if isinstance(data, dict) and "prompt_part" in data:
                try:
                    key, part = _part_from_dict(data["prompt_part"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise bad(f"line {number} is not a prompt part ({type(exc).__name__}: {exc})") from None
                parts[key] = part
                continue
            try:
                responses.append(response_from_dict(data["response"], parts))
            except (KeyError, TypeError, ValueError) as exc:
                raise bad(f"line {number} is not a sample ({type(exc).__name__}: {exc})") from None
    if header is None:
        raise bad("it is empty")
    try:
        return FwRollouts(**{name: header[name] for name in _CALL_FIELDS}, responses=responses)
    except (KeyError, TypeError) as exc:
        raise bad(f"its header lacks a field ({type(exc).__name__}: {exc})") from None
