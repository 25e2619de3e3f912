"""Pure parsing of completions response bodies into :class:`FwResponse` samples.

Both logprob shapes the service documents are read into the same :class:`Logprobs`:
integer ``logprobs`` gives the legacy arrays (``tokens``, ``token_logprobs``,
``top_logprobs``, ``text_offset``, ``token_ids``); ``logprobs: true`` gives OpenAI-style
``content`` entries. With echo, the prompt is split from the generation exactly at the
end of the prompt string that was sent, whether or not the server echoes a BOS token
that is not part of that string, and whether or not it prepends the prompt to
``choices[].text`` (both are unverified for Fireworks, and servers differ).

A reply no model can have produced is an error, never data (it would be cached for good):
logprobs that are not numbers (booleans included), NaN, infinite or positive beyond
rounding noise (:data:`LOGPROB_TOLERANCE`); token strings that are not a list of strings;
offsets or ids that are not lists of non-negative integers; malformed alternatives; choice
indexes that repeat or do not match the ``n`` asked for; a body nested too deeply to parse.
Each is a :class:`MalformedResponseError` (retried like any unusable body); logprobs asked
for whose every value is null are a :class:`MissingLogprobsError`. Whatever a body holds,
parsing raises nothing but those (and :class:`ResponseError` for ``finish_reason="error"``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final

import orjson

from ._columns import LOGPROB_TOLERANCE, Columns, ImpossibleValue
from ._exceptions import MalformedResponseError, MissingLogprobsError, ResponseError
from ._logprobs import Logprobs
from ._models import FwResponse, Usage

__all__ = [
    "LOGPROB_TOLERANCE",
    "ReasoningSplit",
    "ResponseSpec",
    "count_echoed_tail",
    "count_prompt_tokens",
    "decode_body",
    "parse_completion",
    "parse_logprobs",
]

ReasoningSplit = Callable[[str, str], "tuple[str, str, bool | None]"]
"""(generated_text, prompt) -> (reasoning, content, completed_reasoning)."""

# An auto-added BOS (or two) may be echoed ahead of the prompt text without being part of it.
_MAX_LEADING_EXTRA_TOKENS = 2

_NUMBER_TYPES: Final[frozenset[type]] = frozenset({float, int})  # type(): True and False are no numbers here
_STR_TYPES: Final[frozenset[type]] = frozenset({str})
_INT_TYPES: Final[frozenset[type]] = frozenset({int})
_DICT_TYPES: Final[frozenset[type]] = frozenset({dict})
_TOP_ENTRY_TYPES: Final[frozenset[type]] = frozenset({dict, type(None)})
# What a hostile body can make the parsing code raise (a wrong type where a field should be, a
# missing key, a number too large for a float, nesting too deep): all become MalformedResponseError.
_UNEXPECTED: Final = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError)


def _no_reasoning(generated: str, prompt: str) -> tuple[str, str, bool | None]:
    return "", generated, None


@dataclass(frozen=True, slots=True)
class ResponseSpec:
    """What the parser must know about the request that produced a body."""

    prompt: str
    """The exact prompt string sent."""
    echo: bool = False
    """Whether echo was requested."""
    logprobs: bool = False
    """Whether logprobs were requested (so their absence is an error)."""
    stop: tuple[str, ...] = ()
    """Stop sequences sent; stripped from the end of the text if the server left them in."""
    split_reasoning: ReasoningSplit = _no_reasoning
    """How to split generated text into reasoning and content (from the chat template)."""
    echo_last: int | None = None
    """``echo_last`` sent with echo: the server echoes only the prompt's last that many tokens."""


class _TooDeep(Exception):
    pass


def _loads(content: bytes | str) -> Any:
    # orjson parses a logprobs body about 8x faster than json, which is most of a sample's client CPU;
    # json still reads what orjson refuses (NaN/Infinity literals, which the checks below then reject
    # with a message that says what was wrong), except nesting past orjson's limit of 1024 levels
    # (a completions body has about 8): json would only recurse until Python's own limit.
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise _TooDeep from None
    try:
        return json.loads(content)
    except RecursionError:
        raise _TooDeep from None


def decode_body(content: bytes | str) -> dict[str, Any]:
    """JSON-decode a response body, raising :class:`MalformedResponseError` if it is not a JSON object."""
    try:
        body = _loads(content)
    except _TooDeep:
        raise MalformedResponseError(
            "response body is nested too deeply to be a completions body (over 1,024 levels)"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        snippet = content[:120] if isinstance(content, str) else content[:120].decode("utf-8", "replace")
        raise MalformedResponseError(f"response body is not valid JSON ({exc}): {snippet!r}") from None
    if not isinstance(body, dict):
        raise MalformedResponseError(f"response body is a JSON {type(body).__name__}, not an object")
    return body


def parse_completion(body: Mapping[str, Any], spec: ResponseSpec, seeds: Sequence[int | None]) -> list[FwResponse]:
    """Turn a completions body into one :class:`FwResponse` per choice, ordered by choice index.

    ``seeds`` has one entry per choice asked for (``n``): ``seeds[i]`` is the seed to record on
    choice ``i``. A body with another number of choices, or whose indexes repeat or fall outside
    ``range(n)``, is a :class:`MalformedResponseError`.
    """
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponseError("response has no choices: not a completions response")
    n = len(seeds)
    if len(choices) != n:
        raise MalformedResponseError(f"asked for n={n} choices, the response has {len(choices)}")
    try:
        usage = _parse_usage(body.get("usage"))
        meta = (_str(body.get("model")), _str(body.get("id")), _int(body.get("created")))
        parsed = [_parse_choice(choice, position, spec, usage, n) for position, choice in enumerate(choices)]
    except _UNEXPECTED as exc:
        raise _shape_error("response does not", exc) from None
    if n > 1:
        _check_indexes([p.index for p in parsed])
        parsed.sort(key=lambda p: p.index)
    # The reasoning split runs outside the guard above: it is the chat template's code (perhaps the
    # user's), whose bugs must surface as themselves, not as a malformed reply to retry.
    model, response_id, created = meta
    out: list[FwResponse] = []
    for p in parsed:
        reasoning, content, completed = spec.split_reasoning(p.full, spec.prompt)
        out.append(
            FwResponse(
                full=p.full,
                content=content,
                reasoning=reasoning,
                finish_reason=p.finish_reason,
                completed_reasoning=completed,
                usage=p.usage,
                seed=seeds[p.index],
                model=model,
                response_id=response_id,
                created=created,
                logprobs=p.logprobs,
                echo=spec.echo,
                prompt=spec.prompt,
                index=p.index,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class _Choice:
    """One choice, parsed: everything of its sample but the reasoning split."""

    index: int
    full: str
    finish_reason: str
    usage: Usage
    logprobs: Logprobs | None


def _check_indexes(indexes: list[int]) -> None:
    if len(set(indexes)) != len(indexes):
        repeated = next(i for i in indexes if indexes.count(i) > 1)
        raise MalformedResponseError(
            f"choice index {repeated} appears {indexes.count(repeated)} times (asked for n={len(indexes)} "
            "choices, each index once)"
        )


def _parse_choice(choice: Any, position: int, spec: ResponseSpec, usage: Usage, n: int) -> _Choice:
    if not isinstance(choice, Mapping):
        raise MalformedResponseError(f"choice {position} is not an object")
    index = choice.get("index", position)
    if type(index) is not int or not 0 <= index < n:
        raise MalformedResponseError(
            f"choice {position} has index {_short(index)}, not an integer from 0 to {n - 1} (asked for n={n})"
        )
    text = choice.get("text")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise MalformedResponseError(f"choice {index} text is a {type(text).__name__}, not a string")
    finish_reason = choice.get("finish_reason")
    if finish_reason is None:
        finish_reason = ""
    elif not isinstance(finish_reason, str):
        raise MalformedResponseError(f"choice {index} finish_reason is a {type(finish_reason).__name__}, not a string")
    if finish_reason == "error":
        raise ResponseError(f"the service reported finish_reason='error' for choice {index}")

    raw_lp = choice.get("logprobs")
    logprobs: Logprobs | None = None
    if raw_lp is not None:
        # Usage is counted per request: with several choices its completion count is not this choice's.
        lp_usage = usage if n == 1 else Usage(prompt_tokens=usage.prompt_tokens)
        logprobs = parse_logprobs(
            raw_lp,
            prompt=spec.prompt if spec.echo else None,
            usage=lp_usage,
            required=spec.logprobs,
            echo_last=spec.echo_last,
        )
    # An empty logprobs object for a non-empty text is as missing as null (and must not be cached).
    if spec.logprobs and (logprobs is None or len(logprobs) == 0) and (text or spec.echo):
        raise MissingLogprobsError(
            "logprobs were requested but the response has none (does this server support logprobs?)"
        )
    if spec.logprobs and logprobs is None:
        logprobs = Logprobs()

    full = _generated_text(text, spec, logprobs)
    if finish_reason == "stop":
        full = _strip_stop(full, spec.stop)
    return _Choice(index, full, finish_reason, usage if n == 1 else _choice_usage(usage, logprobs, n), logprobs)


def _generated_text(text: str, spec: ResponseSpec, logprobs: Logprobs | None) -> str:
    if not spec.echo:
        return text
    # Servers differ on whether echo prepends the prompt to the text; strip it only if it is there,
    # with any BOS the server echoed ahead of it.
    if text.startswith(spec.prompt):
        return text[len(spec.prompt) :]
    if logprobs is not None and logprobs.num_prompt_tokens:
        echoed = "".join(logprobs.get_prompt_logprobs().tokens)
        if echoed and text.startswith(echoed):
            return text[len(echoed) :]
    return text


def _strip_stop(text: str, stop: tuple[str, ...]) -> str:
    # Older Fireworks docs say the stop sequence is included, the current spec says it is not.
    for s in stop:
        if s and text.endswith(s):
            return text[: -len(s)]
    return text


def parse_logprobs(
    raw: Any,
    *,
    prompt: str | None = None,
    usage: Usage | None = None,
    required: bool = False,
    echo_last: int | None = None,
) -> Logprobs:
    """Parse either logprobs shape into :class:`Logprobs`.

    ``prompt`` is the exact prompt string when echo was requested: the leading
    positions that spell it (plus any BOS the server echoed ahead of it) are marked as
    prompt, and the first echoed position gets no logprob. Values no model produces
    (see the module docstring) raise :class:`MalformedResponseError`; with ``required``
    (logprobs were asked for), a run whose every generated (or every echoed prompt)
    logprob is null raises :class:`MissingLogprobsError`. Under ``echo_last`` the echo may be
    the prompt's tail only (:func:`count_echoed_tail`); its first position then has context and
    keeps its logprob.
    """
    if not isinstance(raw, Mapping):
        raise MalformedResponseError(f"logprobs is a {type(raw).__name__}, not an object")
    try:
        content = "content" in raw and "tokens" not in raw
        columns = _content_columns(raw.get("content")) if content else _legacy_columns(raw)
        tokens, lps, top, offsets, ids, sampling, top_ids = columns
        n_prompt = 0
        if prompt is not None and tokens:
            whole = True
            if echo_last is None:
                n_prompt = count_prompt_tokens(tokens, offsets, prompt, usage)
            else:
                n_prompt, whole = count_echoed_tail(tokens, offsets, prompt, usage, echo_last)
            if n_prompt and whole:
                # The first echoed position has no context: its value (null, or a meaningless number) is not a
                # logprob, so it is neither kept nor checked.
                lps[0] = None
                if top is not None:
                    top[0] = None
                if top_ids is not None:
                    top_ids[0] = None
                if sampling is not None:
                    sampling[0] = None
        if required:
            _check_present(lps, n_prompt)
        try:
            checked = Columns.build(tokens, lps, top, offsets, ids, sampling, top_token_ids=top_ids, strict=True)
        except ImpossibleValue:
            raise _impossible(lps, top, sampling, content) from None
        return Logprobs._of(
            checked,
            num_prompt_tokens=n_prompt,
            prompt_length=len(prompt) if prompt is not None and n_prompt else 0,
            echo=bool(n_prompt),
        )
    except _UNEXPECTED as exc:
        raise _shape_error("logprobs do not", exc) from None


_Columns = tuple[
    list[str],
    list[float | None],
    "list[dict[str, float] | None] | None",
    "list[int] | None",
    "list[int] | None",
    "list[float | None] | None",
    "list[dict[str, int] | None] | None",
]


def _legacy_columns(raw: Mapping[str, Any]) -> _Columns:
    tokens = _list(raw.get("tokens"), "tokens")
    if not set(map(type, tokens)) <= _STR_TYPES:
        raise _column_error("tokens[{}]", tokens, _STR_TYPES, "a string")
    lps = list(_list(raw.get("token_logprobs"), "token_logprobs"))  # a copy: the echo position is cleared
    top_raw = raw.get("top_logprobs")
    top = None if top_raw is None else list(_list(top_raw, "top_logprobs"))
    if top is not None and not set(map(type, top)) <= _TOP_ENTRY_TYPES:
        raise _column_error("top_logprobs[{}]", top, _TOP_ENTRY_TYPES, "an object or null")
    offsets = _ints(_list(raw.get("text_offset"), "text_offset"), "text_offset[{}]")
    ids = _ints(_list(raw.get("token_ids"), "token_ids"), "token_ids[{}]")
    return tokens, lps, top, offsets, ids, None, None


def _content_columns(content: Any) -> _Columns:
    entries = _list(content, "content")
    if not set(map(type, entries)) <= _DICT_TYPES:
        raise _column_error("content[{}]", entries, _DICT_TYPES, "an object")
    tokens: list[str] = [e["token"] for e in entries]
    lps: list[float | None] = [e.get("logprob") for e in entries]
    try:
        top: list[dict[str, float] | None] = [
            {t["token"]: t["logprob"] for t in (e.get("top_logprobs") or ())} for e in entries
        ]
    except (TypeError, KeyError, AttributeError):
        raise _alternatives_error(entries) from None
    if not set(map(type, chain.from_iterable(top))) <= _STR_TYPES:  # type: ignore[arg-type]  # no None in top
        raise _alternatives_error(entries)
    # Keyed as the logprobs are, so that a token the server lists twice keeps the id beside the logprob kept.
    top_ids: list[dict[str, int] | None] | None = [
        {t["token"]: t.get("token_id") for t in (e.get("top_logprobs") or ())} for e in entries
    ]
    values: list[Any] = list(chain.from_iterable(map(dict.values, top_ids)))  # type: ignore[arg-type]  # no None
    if not values or None in values:
        top_ids = None  # no alternatives, or one without its id: the column is not sent
    else:
        _ints(values, "content[].top_logprobs[].token_id (alternative {} of the reply)")
    offsets: list[Any] = [e.get("text_offset") for e in entries]
    ids: list[Any] = [e.get("token_id") for e in entries]
    sampling: list[float | None] = [e.get("sampling_logprob") for e in entries]
    if not set(map(type, tokens)) <= _STR_TYPES:
        raise _column_error("content[{}].token", tokens, _STR_TYPES, "a string")
    return (
        tokens,
        lps,
        top,
        None if None in offsets else _ints(offsets, "content[{}].text_offset"),
        None if None in ids else _ints(ids, "content[{}].token_id"),
        sampling if any(v is not None for v in sampling) else None,
        top_ids,
    )


def _alternatives_error(entries: list[dict[str, Any]]) -> MalformedResponseError:
    """The error naming the first malformed ``content[i].top_logprobs`` entry."""
    for i, entry in enumerate(entries):
        alternatives = entry.get("top_logprobs")
        if alternatives is None:
            continue
        where = f"content[{i}].top_logprobs"
        if type(alternatives) is not list:
            return _shape(f"{where} is {_short(alternatives)}, not a list")
        for j, alternative in enumerate(alternatives):
            if type(alternative) is not dict:
                return _shape(f"{where}[{j}] is {_short(alternative)}, not an object")
            for key in ("token", "logprob"):
                if key not in alternative:
                    return _shape(f"{where}[{j}] has no {key!r}")
            if type(alternative["token"]) is not str:
                return _shape(f"{where}[{j}].token is {_short(alternative['token'])}, not a string")
    return _shape("content[].top_logprobs entries must be objects with a string token and a logprob")


def _shape(detail: str) -> MalformedResponseError:
    return MalformedResponseError(f"logprobs do not have the documented shape: {detail}")


# -- checks ------------------------------------------------------------------------------------------------
# Each is a C-level pass over a whole column (set(map(type, ...)), min); the logprob values themselves are
# checked by Columns.build(strict=True) on the lists it flattens anyway. The loops that find and name the
# offending position run only once something is wrong.


def _list(value: Any, name: str) -> list[Any]:
    """The JSON array ``value`` (null: empty); anything else, a string included, is malformed."""
    if value is None:
        return []
    if type(value) is not list:
        raise MalformedResponseError(
            f"logprobs do not have the documented shape: {name} is a {type(value).__name__}, not a list"
        )
    return value


def _ints(values: list[Any], where: str) -> list[int] | None:
    """A column of non-negative integers (text offsets, token ids), or None when empty."""
    if not values:
        return None
    if not set(map(type, values)) <= _INT_TYPES:
        raise _column_error(where, values, _INT_TYPES, "an integer")
    lowest = min(values)
    if lowest < 0:
        raise MalformedResponseError(
            f"logprobs do not have the documented shape: {where.format(values.index(lowest))} is {lowest}, "
            "not a non-negative integer"
        )
    return values


def _impossible(
    lps: list[Any], top: list[Any] | None, sampling: list[Any] | None, content: bool
) -> MalformedResponseError:
    """The error naming the first impossible value, once :meth:`Columns.build` found there is one."""
    found = _first_impossible(lps, ("content[{}].logprob" if content else "token_logprobs[{}]").format)
    if found is None and sampling is not None:
        found = _first_impossible(sampling, "content[{}].sampling_logprob".format)
    where = "content[{}].top_logprobs[{!r}]" if content else "top_logprobs[{}][{!r}]"
    for position, entry in enumerate(top or ()):
        if found is None and entry:
            found = _first_impossible(list(entry.values()), _namer(where, position, list(entry)), allow_none=False)
    return found or MalformedResponseError("impossible logprobs: their total is beyond the range of a float")


def _namer(where: str, position: int, tokens: list[str]) -> Callable[[int], str]:
    """Names the ``i``-th alternative at ``position``: ``top_logprobs[3]['the']``."""
    return lambda i: where.format(position, tokens[i])


def _first_impossible(
    values: list[Any], where: Callable[[int], str], *, allow_none: bool = True
) -> MalformedResponseError | None:
    """The error for the first value that is no logprob; ``where(i)`` names position ``i``."""
    for position, value in enumerate(values):
        if value is None and allow_none:
            continue
        if type(value) not in _NUMBER_TYPES:
            return MalformedResponseError(
                f"logprobs do not have the documented shape: {where(position)} is {_short(value)}, not a number"
            )
        try:
            number = float(value)
        except OverflowError:
            reason = "too large for a float"
        else:
            reason = (
                "not a number" if math.isnan(number)
                else "infinite" if math.isinf(number)
                else "positive: a probability above 1" if number > LOGPROB_TOLERANCE
                else ""
            )  # fmt: skip
        if reason:
            return MalformedResponseError(f"impossible logprobs: {where(position)} is {_short(value)} ({reason})")
    return None


def _check_present(lps: list[float | None], n_prompt: int) -> None:
    """Logprobs were asked for: a run of them that is all null is as missing as none at all."""
    generated = lps[n_prompt:]
    if generated and generated.count(None) == len(generated):
        raise MissingLogprobsError(
            f"logprobs were requested but the logprob of every generated token is null ({len(generated)} of them)"
        )
    prompt = lps[1:n_prompt]  # the first echoed position never has one
    if prompt and prompt.count(None) == len(prompt):
        raise MissingLogprobsError(
            f"echo was requested but the logprob of every echoed prompt token is null ({n_prompt} of them)"
        )


def _column_error(where: str, values: list[Any], allowed: frozenset[type], what: str) -> MalformedResponseError:
    """The error naming the first value of ``values`` whose type is not ``allowed`` (``where``: "tokens[{}]")."""
    position, value = next((i, v) for i, v in enumerate(values) if type(v) not in allowed)
    return MalformedResponseError(
        f"logprobs do not have the documented shape: {where.format(position)} is {_short(value)}, not {what}"
    )


def _shape_error(subject: str, exc: BaseException) -> MalformedResponseError:
    """An unexpected exception from a hostile body, as the error it is (``subject``: "logprobs do not")."""
    detail = "nested too deeply" if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}"
    return MalformedResponseError(f"{subject} have the documented shape ({_truncate(detail)})")


def _short(value: Any) -> str:
    """A short description of a value from a hostile body (its repr could be huge or nested too deeply)."""
    if value is None or isinstance(value, (bool, int, float)):
        return _truncate(repr(value))
    if isinstance(value, str):
        return _truncate(repr(value))
    return f"a {type(value).__name__}"


def _truncate(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def count_prompt_tokens(
    tokens: Sequence[str],
    text_offset: Sequence[int] | None,
    prompt: str,
    usage: Usage | None = None,
) -> int:
    """How many leading echoed positions belong to ``prompt`` (the exact string sent).

    First by spelling the prompt out of the token texts (allowing a BOS or two that the
    server added ahead of it). Token texts that do not spell it (byte-level pieces) are
    counted as not echoed at all when there are no more of them than the completion
    tokens in ``usage`` (which must then be this choice's own); else by ``text_offset``
    in characters or in UTF-8 bytes (the one that agrees with ``usage.prompt_tokens``
    when both match); then by ``usage.prompt_tokens``.
    """
    end = len(prompt)
    for lead in range(min(_MAX_LEADING_EXTRA_TOKENS, len(tokens) - 1) + 1):
        pos, i = 0, lead
        while pos < end and i < len(tokens):
            token = tokens[i]
            if not token or not prompt.startswith(token, pos):
                break
            pos += len(token)
            i += 1
        if pos == end:
            return i
    # Checked before the offsets: a generated token may start at offset len(prompt) by chance.
    if usage is not None and usage.completion_tokens and len(tokens) <= usage.completion_tokens:
        return 0  # the server did not echo at all
    if text_offset:
        offsets = list(text_offset)
        found = [offsets.index(t) for t in (end, len(prompt.encode("utf-8"))) if t in offsets]
        # With byte offsets, a prompt token may start at the prompt's length in characters: trust usage first.
        if usage is not None and usage.prompt_tokens in found:
            return usage.prompt_tokens
        if found:
            return found[0]
    if usage is not None and usage.prompt_tokens:
        return min(usage.prompt_tokens, len(tokens))
    return 0


def count_echoed_tail(
    tokens: Sequence[str],
    text_offset: Sequence[int] | None,
    prompt: str,
    usage: Usage | None,
    echo_last: int,
) -> tuple[int, bool]:
    """(echoed prompt positions, whether they start at the prompt's start) under ``echo_last``.

    A server echoes the prompt's last ``echo_last`` tokens, or all of them when the prompt has
    no more (as plain echo, BOS and all): the first case is told by the leading ``echo_last``
    token texts spelling the prompt's end, the second as :func:`count_prompt_tokens` tells
    plain echo. Token texts that spell nothing (byte pieces) leave the counts: ``echo_last``
    positions when the prompt has more tokens than that (``usage.prompt_tokens``), else plain echo's.
    """
    whole = count_prompt_tokens(tokens, text_offset, prompt, usage)
    if whole and "".join(tokens[:whole]).endswith(prompt):
        return whole, True
    k = min(echo_last, len(tokens))
    if k and prompt.endswith("".join(tokens[:k])) and all(tokens[:k]):
        return k, False
    if usage is not None and usage.prompt_tokens > echo_last:
        return k, False
    return whole, bool(whole)


def _parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, Mapping):
        return Usage()
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    prompt = _int(raw.get("prompt_tokens"))
    completion = _int(raw.get("completion_tokens"))
    total = _int(raw.get("total_tokens")) or prompt + completion
    return Usage(prompt, completion, total, cached if type(cached) is int else None)


def _choice_usage(usage: Usage, logprobs: Logprobs | None, n_choices: int) -> Usage:
    """Per-choice usage when one request produced several choices (usage is reported per request)."""
    if logprobs is not None:
        completion = len(logprobs) - logprobs.num_prompt_tokens
    else:
        completion = usage.completion_tokens // n_choices
    return Usage(usage.prompt_tokens, completion, usage.prompt_tokens + completion, usage.cached_tokens)


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _str(value: Any) -> str:
    # Never str() of an arbitrary value: a nested list's repr recurses, a huge one costs memory.
    if type(value) is str:
        return value
    return str(value) if type(value) is int else ""


