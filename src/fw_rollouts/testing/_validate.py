"""Request validation: Fireworks' ``CompletionRequest`` and ``ChatCompletionRequest`` schemas and their errors.

:func:`validate` checks a decoded body the way the service does (pydantic's 422 ``detail`` list for type and
range errors, then the 400 and 404 checks) and reduces it to a :class:`CompletionRequest`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._chat import ROLES, Message, render_messages
from ._config import Config
from ._errors import MODEL_NOT_FOUND, ApiError, FieldErrors, detail_error, extra_fields_error, flat_error
from ._model import Sampling

__all__ = ["CHAT_FIELDS", "KNOWN_FIELDS", "CompletionRequest", "PromptInput", "validate"]

# fmt: off
#: The fields of Fireworks' ``CompletionRequest`` (reference §2); anything else is an extra field.
KNOWN_FIELDS: Final = frozenset((
    "model", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
    "typical_p", "frequency_penalty", "presence_penalty", "repetition_penalty", "mirostat_target",
    "mirostat_lr", "n", "logprobs", "top_logprobs", "echo", "echo_last", "stop", "seed", "logit_bias",
    "ignore_eos", "context_length_exceeded_behavior", "raw_output", "return_token_ids",
    "perf_metrics_in_response", "stream", "response_format", "reasoning_effort", "thinking",
    "reasoning_history", "prompt_cache_key", "prompt_cache_isolation_key", "prompt_cache_max_len",
    "speculation", "prediction", "images", "metadata", "service_tier", "user",
))
# fmt: on
#: The fields of Fireworks' ``ChatCompletionRequest``: the completions fields with ``messages`` for ``prompt``.
CHAT_FIELDS: Final = (KNOWN_FIELDS - {"prompt", "images"}) | {
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "prompt_truncate_len",
    "safe_tokenization",
}
_FLOATS: Final[dict[str, tuple[float | None, float | None]]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "min_p": (0, 1),
    "typical_p": (0, 1),
    "frequency_penalty": (-2, 2),
    "presence_penalty": (-2, 2),
    "repetition_penalty": (0, 2),
    "mirostat_target": (None, None),
    "mirostat_lr": (None, None),
}
_INTS: Final[dict[str, tuple[int | None, int | None]]] = {
    "max_tokens": (0, None),
    "max_completion_tokens": (0, None),
    "top_k": (0, 100),
    "n": (1, 128),
    "top_logprobs": (0, 5),
    "echo_last": (0, None),
    "seed": (None, None),
    "prompt_cache_max_len": (0, None),
    "prompt_truncate_len": (0, None),
}
_BOOLS: Final = (
    "echo",
    "ignore_eos",
    "raw_output",
    "return_token_ids",
    "perf_metrics_in_response",
    "stream",
    "parallel_tool_calls",
    "safe_tokenization",
)
_STRS: Final = ("user", "prompt_cache_key", "prompt_cache_isolation_key")
_ENUMS: Final[dict[str, tuple[str, ...]]] = {
    "context_length_exceeded_behavior": ("truncate", "error"),
    "service_tier": ("auto", "default", "flex", "priority"),
    "reasoning_history": ("disabled", "interleaved", "preserved"),
}
_DICTS: Final = ("metadata", "prediction", "thinking", "response_format")
_RESPONSE_FORMATS: Final = ("json_object", "json_schema", "grammar", "text")
# Accepted and validated, but the toy model only mixes them into its sampling seed.
_UNMODELLED: Final = (
    "typical_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "mirostat_target",
    "mirostat_lr",
)
_EFFORTS: Final = ("low", "medium", "high", "none")

_RESOURCE = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_MODEL_RE: Final = re.compile(
    rf"accounts/{_RESOURCE}/(?:models|deployments)/{_RESOURCE}(?:#accounts/{_RESOURCE}/deployments/{_RESOURCE})?"
)
_TOKEN_ID_LIMIT: Final = 201_088  # the largest vocabulary among the target models (o200k_harmony)

_MISSING: Final = ("field required", "value_error.missing")
_INT_ERR: Final = ("value is not a valid integer", "type_error.integer")
_FLOAT_ERR: Final = ("value is not a valid float", "type_error.float")
_STR_ERR: Final = ("str type expected", "type_error.str")
_DICT_ERR: Final = ("value is not a valid dict", "type_error.dict")
_LIST_ERR: Final = ("value is not a valid list", "type_error.list")

#: One prompt: text, or token ids.
PromptInput = str | tuple[int, ...]


@dataclass(frozen=True)
class CompletionRequest:
    """A validated completions request, reduced to what generation and rendering need."""

    model: str
    prompts: tuple[PromptInput, ...]
    max_tokens: int | None
    n: int
    sampling: Sampling
    seed: int
    params_hash: int
    legacy_k: int | None
    content_k: int | None
    echo_last: int | None  # None: no echo; -1: the whole prompt
    stops: tuple[str, ...]
    stream: bool
    ignore_eos: bool
    raw_output: bool
    return_token_ids: bool
    perf_metrics: bool
    ctx_error: bool
    #: A chat request: its one prompt is the rendered conversation (which holds its own BOS).
    chat: bool = False

    @property
    def wants_logprobs(self) -> bool:
        """Whether logprobs were asked for, in either format."""
        return self.legacy_k is not None or self.content_k is not None


def _fmt(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


def _check_range(errs: FieldErrors, loc: list[str | int], v: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and v < lo:
        errs.append((loc, f"ensure this value is greater than or equal to {_fmt(lo)}", "value_error.number.not_ge"))
    elif hi is not None and v > hi:
        errs.append((loc, f"ensure this value is less than or equal to {_fmt(hi)}", "value_error.number.not_le"))


def _enum_error(loc: list[str | int], allowed: tuple[str, ...]) -> tuple[list[str | int], str, str]:
    permitted = ", ".join(repr(a) for a in allowed)
    return (loc, f"value is not a valid enumeration member; permitted: {permitted}", "type_error.enum")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate_prompt(v: object, errs: FieldErrors) -> tuple[PromptInput, ...]:
    loc: list[str | int] = ["body", "prompt"]
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list):
        if v and all(_is_int(x) for x in v):
            return (tuple(v),)
        out: list[PromptInput] = []
        for i, item in enumerate(v):
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list) and all(_is_int(x) for x in item):
                out.append(tuple(item))
            else:
                errs.append(([*loc, i], *_STR_ERR))
        return tuple(out)
    errs.append((loc, *_STR_ERR))
    return ()


def _message_text(content: object, loc: list[str | int], errs: FieldErrors) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        errs.append((loc, *_STR_ERR))
        return ""
    parts: list[str] = []
    for j, part in enumerate(content):
        if isinstance(part, str):
            parts.append(part)
        elif not isinstance(part, dict):
            errs.append(([*loc, j], *_DICT_ERR))
        elif part.get("type") == "text":
            text = part.get("text")
            if isinstance(text, str):
                parts.append(text)
            else:
                errs.append(([*loc, j, "text"], *_STR_ERR))
        # Other parts (images, audio) carry no text the toy model could read.
    return "".join(parts)


def _validate_messages(v: object, errs: FieldErrors) -> list[Message]:
    loc: list[str | int] = ["body", "messages"]
    if not isinstance(v, list):
        errs.append((loc, *_LIST_ERR))
        return []
    out: list[Message] = []
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            errs.append(([*loc, i], *_DICT_ERR))
            continue
        role = m.get("role")
        if role is None:
            errs.append(([*loc, i, "role"], *_MISSING))
        elif not isinstance(role, str):
            errs.append(([*loc, i, "role"], *_STR_ERR))
        elif role not in ROLES:
            errs.append(_enum_error([*loc, i, "role"], ROLES))
        text = _message_text(m.get("content"), [*loc, i, "content"], errs)
        if isinstance(role, str):
            out.append((role, text))
    return out


def _check_scalars(get: Callable[[str], Any], errs: FieldErrors) -> None:
    """The fields the tables describe: floats and ints with their ranges, bools, strings, enumerations."""
    numeric: tuple[tuple[Mapping[str, tuple[float | None, float | None]], Callable[[object], bool], Any], ...] = (
        (_FLOATS, _is_num, _FLOAT_ERR),
        (_INTS, _is_int, _INT_ERR),
    )
    for table, is_kind, error in numeric:
        for name, (lo, hi) in table.items():
            v = get(name)
            if v is None:
                continue
            if is_kind(v):
                _check_range(errs, ["body", name], v, lo, hi)
            else:
                errs.append((["body", name], *error))
    for name in _BOOLS:
        v = get(name)
        if v is not None and not isinstance(v, bool):
            errs.append((["body", name], "value could not be parsed to a boolean", "type_error.bool"))
    for name in _STRS:
        v = get(name)
        if v is not None and not isinstance(v, str):
            errs.append((["body", name], *_STR_ERR))
    for name, allowed in _ENUMS.items():
        v = get(name)
        if v is not None and v not in allowed:
            errs.append(_enum_error(["body", name], allowed))


def _validate_stop(stop: object, errs: FieldErrors) -> tuple[str, ...]:
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list):
        if len(stop) > 4:
            errs.append((["body", "stop"], "ensure this value has at most 4 items", "value_error.list.max_items"))
        for i, s in enumerate(stop):
            if not isinstance(s, str):
                errs.append((["body", "stop", i], *_STR_ERR))
        stops = tuple(s for s in stop if isinstance(s, str))
    elif stop is not None:
        errs.append((["body", "stop"], *_STR_ERR))
    return tuple(s for s in stops if s)


def validate(cfg: Config, obj: object, request_id: str, *, chat: bool = False) -> CompletionRequest:
    """Check a decoded body against Fireworks' ``CompletionRequest`` (reference §2) or ``ChatCompletionRequest``.

    With ``cfg.strict_fields`` off, fields outside the schema are ignored instead of rejected.
    """
    if not isinstance(obj, dict):
        raise ApiError(422, detail_error([(["body"], *_DICT_ERR)]))
    known = CHAT_FIELDS if chat else KNOWN_FIELDS
    if cfg.strict_fields:
        extra = [k for k in obj if k not in known]
        if extra:
            raise ApiError(400, extra_fields_error(extra))
    errs: FieldErrors = []
    get = obj.get
    source = "messages" if chat else "prompt"
    for name in ("model", source):
        if get(name) is None:
            errs.append((["body", name], *_MISSING))
    model = get("model")
    if model is not None and not isinstance(model, str):
        errs.append((["body", "model"], *_STR_ERR))
    prompts: tuple[PromptInput, ...] = ()
    messages: list[Message] = []
    if get(source) is not None:
        if chat:
            messages = _validate_messages(get(source), errs)
        else:
            prompts = _validate_prompt(get(source), errs)
    _check_scalars(get, errs)
    if cfg.refuse_max_tokens_zero:
        for name in ("max_tokens", "max_completion_tokens"):
            if get(name) == 0 and _is_int(get(name)):  # a server whose minimum is 1 (the current spec states none)
                _check_range(errs, ["body", name], 0, 1, None)
    logprobs = get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        if _is_int(logprobs):
            _check_range(errs, ["body", "logprobs"], logprobs, 0, 5)
        else:
            errs.append((["body", "logprobs"], *_INT_ERR))
    stops = _validate_stop(get("stop"), errs)
    logit_bias = get("logit_bias")
    if logit_bias is not None:
        if not isinstance(logit_bias, dict):
            errs.append((["body", "logit_bias"], *_DICT_ERR))
        else:
            for k, b in logit_bias.items():
                if not _is_num(b):
                    errs.append((["body", "logit_bias", k], *_FLOAT_ERR))
                else:
                    _check_range(errs, ["body", "logit_bias", k], b, -100, 100)
    for name in _DICTS:
        v = get(name)
        if v is not None and not isinstance(v, dict) and not (name == "prediction" and isinstance(v, str)):
            errs.append((["body", name], *_DICT_ERR))
    rf = get("response_format")
    if isinstance(rf, dict) and rf.get("type") not in _RESPONSE_FORMATS:
        errs.append(_enum_error(["body", "response_format", "type"], _RESPONSE_FORMATS))
    thinking = get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in ("enabled", "disabled"):
        errs.append(
            (["body", "thinking", "type"], "unexpected value; permitted: 'enabled', 'disabled'", "value_error.const")
        )
    effort = get("reasoning_effort")
    if effort is not None and not isinstance(effort, (bool, int)) and effort not in _EFFORTS:
        errs.append(_enum_error(["body", "reasoning_effort"], _EFFORTS))
    images = get("images")
    if images is not None and not isinstance(images, list):
        errs.append((["body", "images"], *_LIST_ERR))
    speculation = get("speculation")
    if speculation is not None and not isinstance(speculation, (str, list)):
        errs.append((["body", "speculation"], *_STR_ERR))
    if errs:
        raise ApiError(422, detail_error(errs))

    assert isinstance(model, str)

    def bad(message: str, param: str | None) -> ApiError:
        return ApiError.nested(400, message, request_id, param)

    if get("max_tokens") is not None and get("max_completion_tokens") is not None:
        raise bad("max_tokens and max_completion_tokens cannot both be set", "max_tokens")
    if get("thinking") is not None and effort is not None:
        raise bad("thinking and reasoning_effort cannot both be set", "reasoning_effort")
    if chat and not messages:
        raise bad("messages must not be empty", "messages")
    if not chat and not prompts:
        raise bad("prompt must not be empty", "prompt")
    for item in prompts:
        if not item:
            raise bad("prompt must not be empty", "prompt")
        if isinstance(item, tuple) and any(not 0 <= t < _TOKEN_ID_LIMIT for t in item):
            raise bad(f"prompt token ids must be in [0, {_TOKEN_ID_LIMIT})", "prompt")
    _check_model(cfg, model)
    if "gpt-oss" in model and (effort == "none" or effort is False):
        raise bad("Invalid reasoning effort: none", "reasoning_effort")
    if chat:
        disabled = effort == "none" or effort is False
        if isinstance(thinking, dict) and thinking.get("type") == "disabled":
            disabled = True
        prompts = (render_messages(model, messages, effort if isinstance(effort, str) else None, not disabled),)

    def num(name: str, default: float) -> float:
        v = get(name)
        return default if v is None else float(v)

    sampling = Sampling(num("temperature", 1.0), int(num("top_k", 0)), num("top_p", 1.0), num("min_p", 0.0))
    # Parameters the toy model does not implement still change the draw, deterministically.
    untouched = (
        *(get(k) for k in _UNMODELLED),
        sorted(logit_bias.items()) if isinstance(logit_bias, dict) else None,
    )
    params_hash = zlib.crc32(repr((sampling.key, untouched)).encode())
    max_tokens = get("max_tokens")
    if max_tokens is None:
        max_tokens = get("max_completion_tokens")
    top_logprobs = get("top_logprobs")
    legacy_k = content_k = None
    if logprobs is True:
        content_k = top_logprobs or 0
    elif _is_int(logprobs):
        legacy_k = logprobs if top_logprobs is None else top_logprobs
    echo_last = get("echo_last")
    if echo_last is None and get("echo"):
        echo_last = -1
    return CompletionRequest(
        model=model,
        prompts=prompts,
        max_tokens=max_tokens,
        n=get("n") or 1,
        sampling=sampling,
        seed=get("seed") or 0,
        params_hash=params_hash,
        legacy_k=legacy_k,
        content_k=content_k,
        echo_last=echo_last,
        stops=stops,
        stream=bool(get("stream")),
        ignore_eos=bool(get("ignore_eos")),
        raw_output=bool(get("raw_output")),
        return_token_ids=bool(get("return_token_ids")),
        perf_metrics=bool(get("perf_metrics_in_response")),
        ctx_error=get("context_length_exceeded_behavior") == "error",
        chat=chat,
    )


def _check_model(cfg: Config, model: str) -> None:
    ok = model in cfg.known_models if cfg.known_models is not None else _MODEL_RE.fullmatch(model) is not None
    if not ok:
        raise ApiError(404, flat_error(404, MODEL_NOT_FOUND, "model"))
