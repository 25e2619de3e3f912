"""Results on disk as JSON Lines: :class:`FwRollouts` written and read back exactly, logprobs included.

A file is one header line, then one line per sample::

    {"format": "fw_rollouts.rollouts", "version": 1, "rollouts": {<the call's fields, without responses>}}
    {"response": {<FwResponse fields>, "logprobs": {<every Logprobs column>} or null}}

Every value is JSON that reads back as the same Python value: floats are written with
``repr`` precision (so each logprob is the same float), strings are ASCII-escaped (so text
that holds a lone surrogate, which some servers return, survives), and a line is a plain
object a reader in any language can use. Reading runs no code from the file. A file is
written whole to a temporary name and renamed into place: an interrupted write leaves the
old file or none, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any, Final

from ._exceptions import ValidationError
from ._logprobs import Logprobs
from ._models import FwResponse, FwRollouts, Usage

__all__ = ["FORMAT", "VERSION", "read_rollouts", "response_from_dict", "response_to_dict", "write_rollouts"]

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


def response_to_dict(response: FwResponse) -> dict[str, Any]:
    """One sample as JSON-ready data, with every logprobs column (``sampling_logprobs`` included)."""
    data = {name: getattr(response, name) for name in _RESPONSE_FIELDS}
    data["usage"] = response.usage.to_dict()
    lp = response.logprobs
    data["logprobs"] = None if lp is None else {**lp.to_dict(), "sampling_logprobs": lp.sampling_logprobs}
    return data


def response_from_dict(data: Mapping[str, Any]) -> FwResponse:
    """The sample :func:`response_to_dict` wrote (KeyError/TypeError/ValueError for anything else)."""
    lp = data["logprobs"]
    logprobs = None
    if lp is not None:
        logprobs = Logprobs(
            lp["tokens"],
            lp["token_logprobs"],
            lp["top_logprobs"],
            lp["text_offset"],
            lp["token_ids"],
            sampling_logprobs=lp["sampling_logprobs"],
            num_prompt_tokens=lp["num_prompt_tokens"],
            prompt_length=lp["prompt_length"],
            echo=lp["echo"],
        )
    return FwResponse(
        **{name: data[name] for name in _RESPONSE_FIELDS}, usage=Usage(**data["usage"]), logprobs=logprobs
    )


def _lines(rollouts: FwRollouts) -> Iterator[str]:
    header = {"format": FORMAT, "version": VERSION, "rollouts": {n: getattr(rollouts, n) for n in _CALL_FIELDS}}
    # allow_nan=False: a NaN would not be JSON; the parser refuses such replies, so none should be here.
    yield json.dumps(header, allow_nan=False)
    for response in rollouts.responses:
        yield json.dumps({"response": response_to_dict(response)}, allow_nan=False)


def write_rollouts(rollouts: FwRollouts, path: str | os.PathLike[str]) -> None:
    """Write ``rollouts`` to ``path`` (replacing it) as a rollouts JSON Lines file, all or nothing."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    handle, temporary = tempfile.mkstemp(prefix=".fw_rollouts-", suffix=".jsonl.part", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="ascii", newline="\n") as out:
            for line in _lines(rollouts):
                out.write(line)
                out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


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
            try:
                responses.append(response_from_dict(data["response"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise bad(f"line {number} is not a sample ({type(exc).__name__}: {exc})") from None
    if header is None:
        raise bad("it is empty")
    try:
        return FwRollouts(**{name: header[name] for name in _CALL_FIELDS}, responses=responses)
    except (KeyError, TypeError) as exc:
        raise bad(f"its header lacks a field ({type(exc).__name__}: {exc})") from None
