"""Pure parsing of completions response bodies into :class:`FwResponse` samples.

Both logprob shapes the service documents are read into the same :class:`Logprobs`:
integer ``logprobs`` gives the legacy arrays (``tokens``, ``token_logprobs``,
``top_logprobs``, ``text_offset``, ``token_ids``); ``logprobs: true`` gives OpenAI-style
``content`` entries. With echo, the prompt is split from the generation exactly at the
end of the prompt string that was sent, whether or not the server echoes a BOS token
that is not part of that string, and whether or not it prepends the prompt to
``choices[].text`` (both are unverified for Fireworks, and servers differ).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ._exceptions import MalformedResponseError, MissingLogprobsError, ResponseError
from ._logprobs import Logprobs
from ._models import FwResponse, Usage

__all__ = [
    "ReasoningSplit",
    "ResponseSpec",
    "count_prompt_tokens",
    "decode_body",
    "parse_completion",
    "parse_logprobs",
]

ReasoningSplit = Callable[[str, str], "tuple[str, str, bool | None]"]
"""(generated_text, prompt) -> (reasoning, content, completed_reasoning)."""

# An auto-added BOS (or two) may be echoed ahead of the prompt text without being part of it.
_MAX_LEADING_EXTRA_TOKENS = 2


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


def _loads(content: bytes | str) -> Any:
    # orjson parses a logprobs body about 8x faster than json, which is most of a sample's client CPU;
    # json still reads what orjson refuses (NaN/Infinity literals some servers send for -inf logprobs).
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content)


def decode_body(content: bytes | str) -> dict[str, Any]:
    """JSON-decode a response body, raising :class:`MalformedResponseError` if it is not a JSON object."""
    try:
        body = _loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        snippet = content[:120] if isinstance(content, str) else content[:120].decode("utf-8", "replace")
        raise MalformedResponseError(f"response body is not valid JSON ({exc}): {snippet!r}") from None
    if not isinstance(body, dict):
        raise MalformedResponseError(f"response body is a JSON {type(body).__name__}, not an object")
    return body


def parse_completion(body: Mapping[str, Any], spec: ResponseSpec, seeds: Sequence[int | None]) -> list[FwResponse]:
    """Turn a completions body into one :class:`FwResponse` per choice, ordered by choice index.

    ``seeds[i]`` is the seed to record on choice ``i``.
    """
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponseError("response has no choices: not a completions response")
    usage = _parse_usage(body.get("usage"))
    meta = (str(body.get("model") or ""), str(body.get("id") or ""), _int(body.get("created")))
    out: list[FwResponse] = []
    for position, choice in enumerate(choices):
        if not isinstance(choice, Mapping):
            raise MalformedResponseError(f"choice {position} is not an object")
        index = choice.get("index", position)
        index = index if isinstance(index, int) and 0 <= index < len(seeds) else position
        seed = seeds[index] if index < len(seeds) else None
        out.append(_parse_choice(choice, spec, usage, meta, seed, index, len(choices)))
    out.sort(key=lambda r: r.index)
    return out


def _parse_choice(
    choice: Mapping[str, Any],
    spec: ResponseSpec,
    usage: Usage,
    meta: tuple[str, str, int],
    seed: int | None,
    index: int,
    n_choices: int,
) -> FwResponse:
    text = choice.get("text")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise MalformedResponseError(f"choice {index} text is a {type(text).__name__}, not a string")
    finish_reason = choice.get("finish_reason") or ""
    if finish_reason == "error":
        raise ResponseError(f"the service reported finish_reason='error' for choice {index}")

    raw_lp = choice.get("logprobs")
    logprobs: Logprobs | None = None
    if raw_lp is not None:
        # Usage is counted per request: with several choices its completion count is not this choice's.
        lp_usage = usage if n_choices == 1 else Usage(prompt_tokens=usage.prompt_tokens)
        logprobs = parse_logprobs(raw_lp, prompt=spec.prompt if spec.echo else None, usage=lp_usage)
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
    reasoning, content, completed = spec.split_reasoning(full, spec.prompt)
    model, response_id, created = meta
    return FwResponse(
        full=full,
        content=content,
        reasoning=reasoning,
        finish_reason=str(finish_reason),
        completed_reasoning=completed,
        usage=usage if n_choices == 1 else _choice_usage(usage, logprobs, n_choices),
        seed=seed,
        model=model,
        response_id=response_id,
        created=created,
        logprobs=logprobs,
        echo=spec.echo,
        prompt=spec.prompt,
        index=index,
    )


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


def parse_logprobs(raw: Any, *, prompt: str | None = None, usage: Usage | None = None) -> Logprobs:
    """Parse either logprobs shape into :class:`Logprobs`.

    ``prompt`` is the exact prompt string when echo was requested: the leading
    positions that spell it (plus any BOS the server echoed ahead of it) are marked as
    prompt, and the first echoed position gets no logprob.
    """
    if not isinstance(raw, Mapping):
        raise MalformedResponseError(f"logprobs is a {type(raw).__name__}, not an object")
    try:
        if "content" in raw and "tokens" not in raw:
            columns = _content_columns(raw.get("content") or [])
        else:
            columns = _legacy_columns(raw)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedResponseError(f"logprobs do not have the documented shape: {exc!r}") from None
    tokens, lps, top, offsets, ids, sampling = columns
    n_prompt = 0
    if prompt is not None and tokens:
        n_prompt = count_prompt_tokens(tokens, offsets, prompt, usage)
        if n_prompt:
            # The first echoed position has no context: its value (null, or a meaningless number) is not a logprob.
            lps[0] = None
            if top is not None:
                top[0] = None
            if sampling is not None:
                sampling[0] = None
    try:
        return Logprobs(
            tokens,
            lps,
            top,
            offsets,
            ids,
            sampling_logprobs=sampling,
            num_prompt_tokens=n_prompt,
            prompt_length=len(prompt) if prompt is not None and n_prompt else 0,
            echo=bool(n_prompt),
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise MalformedResponseError(f"logprobs do not have the documented shape: {exc}") from None


_Columns = tuple[
    list[str],
    list[float | None],
    "list[dict[str, float] | None] | None",
    "list[int] | None",
    "list[int] | None",
    "list[float | None] | None",
]


def _legacy_columns(raw: Mapping[str, Any]) -> _Columns:
    tokens = list(raw.get("tokens") or [])
    lps = list(raw.get("token_logprobs") or [])
    top_raw = raw.get("top_logprobs")
    top = None if top_raw is None else list(top_raw)
    if top is not None and not set(map(type, top)) <= {dict, type(None)}:
        raise TypeError("top_logprobs entries must be objects or null")
    offsets = raw.get("text_offset")
    ids = raw.get("token_ids")
    if not set(map(type, tokens)) <= {str}:
        raise TypeError("tokens must be strings")
    return tokens, lps, top, (list(offsets) if offsets else None), (list(ids) if ids else None), None


def _content_columns(content: Sequence[Mapping[str, Any]]) -> _Columns:
    tokens: list[str] = [e["token"] for e in content]
    lps: list[float | None] = [e.get("logprob") for e in content]
    top: list[dict[str, float] | None] = [
        {t["token"]: t["logprob"] for t in (e.get("top_logprobs") or ())} for e in content
    ]
    offsets: list[Any] = [e.get("text_offset") for e in content]
    ids: list[Any] = [e.get("token_id") for e in content]
    sampling: list[float | None] = [e.get("sampling_logprob") for e in content]
    if not set(map(type, tokens)) <= {str}:
        raise TypeError("tokens must be strings")
    return (
        tokens,
        lps,
        top,
        None if None in offsets else offsets,
        None if None in ids else ids,
        sampling if any(v is not None for v in sampling) else None,
    )


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


def _parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, Mapping):
        return Usage()
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    prompt = _int(raw.get("prompt_tokens"))
    completion = _int(raw.get("completion_tokens"))
    total = _int(raw.get("total_tokens")) or prompt + completion
    return Usage(prompt, completion, total, cached if isinstance(cached, int) else None)


def _choice_usage(usage: Usage, logprobs: Logprobs | None, n_choices: int) -> Usage:
    """Per-choice usage when one request produced several choices (usage is reported per request)."""
    if logprobs is not None:
        completion = len(logprobs) - logprobs.num_prompt_tokens
    else:
        completion = usage.completion_tokens // n_choices
    return Usage(usage.prompt_tokens, completion, usage.prompt_tokens + completion, usage.cached_tokens)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


