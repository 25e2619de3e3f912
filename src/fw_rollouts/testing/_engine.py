"""Everything the simulator does with a request except I/O: routing, auth, validation, generation, bodies.

The HTTP layer (``_server``) hands over a method, a path, lower-cased headers and the raw body and gets a
:class:`Reply` back; faults (``_faults``) decorate or replace that reply. Keeping this module free of
sockets makes each rule unit-testable.
"""

from __future__ import annotations

import json
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from ._chat import ROLES, Message, Span, render_messages, split_generation
from ._memo import Memo
from ._model import Dist, Generation, Prompt, Sampling, Step, bos_token_for, generate, walk_prompt
from ._tokenizer import decode_id, token_bytes, tokenize

__all__ = [
    "CHAT_FIELDS",
    "CHAT_PATHS",
    "COMPLETIONS_PATHS",
    "DONE_EVENT",
    "GENERATION_PATHS",
    "KNOWN_FIELDS",
    "MODELS_PATHS",
    "ApiError",
    "BosMode",
    "Config",
    "Engine",
    "OffsetBase",
    "Reply",
    "decode_body",
    "detail_error",
    "dumps",
    "error_code",
    "flat_error",
    "is_finish_event",
    "model_names",
    "nested_error",
    "validate",
]

BosMode = Literal["none", "count", "echo"]
OffsetBase = Literal["completion", "prompt"]

COMPLETIONS_PATHS: Final = frozenset({"/inference/v1/completions", "/v1/completions", "/completions"})
CHAT_PATHS: Final = frozenset({"/inference/v1/chat/completions", "/v1/chat/completions", "/chat/completions"})
#: The endpoints that generate (and that faults apply to).
GENERATION_PATHS: Final = COMPLETIONS_PATHS | CHAT_PATHS
MODELS_PATHS: Final = frozenset({"/inference/v1/models", "/v1/models", "/models"})

#: Models listed by ``GET /models`` when the simulator accepts any model.
DEFAULT_MODELS: Final = (
    "accounts/fireworks/models/deepseek-r1-distill-qwen-1p5b",
    "accounts/fireworks/models/llama-v3p1-8b-instruct",
    "accounts/fireworks/models/gpt-oss-20b",
)

_RESOURCE = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_MODEL_RE: Final = re.compile(
    rf"accounts/{_RESOURCE}/(?:models|deployments)/{_RESOURCE}(?:#accounts/{_RESOURCE}/deployments/{_RESOURCE})?"
)
_TOKEN_ID_LIMIT: Final = 201_088  # the largest vocabulary among the target models (o200k_harmony)
_MASK64: Final = (1 << 64) - 1

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
_encode_str: Callable[[str], str] = json.encoder.encode_basestring  # the C version when available


def decode_body(body: bytes) -> object:
    """The decoded JSON of a request body, or None when it is empty or not JSON."""
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def dumps(obj: object) -> bytes:
    """Encode a body the way the simulator sends it (compact UTF-8 JSON)."""
    return _encoder.encode(obj).encode("utf-8")


@dataclass(frozen=True)
class Config:
    """Settings shared by the engine and the server (see ``FireworksSimulator`` for each meaning)."""

    api_key: str | None = "sim-key"
    latency: float = 0.0
    known_models: frozenset[str] | None = None
    bos: BosMode = "none"
    echo_text: bool = True
    stop_included: bool = False
    default_max_tokens: int = 16
    context_length: int = 131_072
    text_offset_base: OffsetBase = "completion"
    strict_fields: bool = True


class Reply:
    """A response the server must write: a body, or SSE events when ``events`` is not None."""

    __slots__ = ("body", "events", "headers", "request_id", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        request_id: str,
        headers: list[tuple[str, str]] | None = None,
        events: list[bytes] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.request_id = request_id
        self.headers = headers if headers is not None else [("content-type", "application/json")]
        self.events = events


class ApiError(Exception):
    """An error reply raised from deep inside request handling."""

    def __init__(self, status: int, body: object, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []


_CODES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHORIZED",
    402: "PAYMENT_REQUIRED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    422: "UNPROCESSABLE_ENTITY",
    425: "TOO_EARLY",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "BAD_GATEWAY",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    520: "UNKNOWN",
}


def error_code(status: int) -> str:
    """The ``code`` string used in error bodies for an HTTP status."""
    return _CODES.get(status, "UNKNOWN")


def nested_error(status: int, message: str, request_id: str, param: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "param", "code", "type"}, "request_id"}`` (fixture error-412-nested)."""
    return {
        "error": {"message": message, "param": param, "code": error_code(status), "type": "error"},
        "request_id": request_id,
    }


def flat_error(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """``{"message", "param", "code", "type"}`` (fixture error-404-flat)."""
    return {"message": message, "param": param, "code": error_code(status), "type": "error"}


def detail_error(errors: list[tuple[list[str | int], str, str]]) -> dict[str, Any]:
    """FastAPI/pydantic ``{"detail": [{"loc", "msg", "type"}]}`` (fixture error-422-detail)."""
    return {"detail": [{"loc": loc, "msg": msg, "type": typ} for loc, msg, typ in errors]}


def _extra_fields_error(fields: list[str]) -> dict[str, Any]:
    items = ", ".join(
        f"{{'loc': ('body', {f!r}), 'msg': 'extra fields not permitted', 'type': 'value_error.extra'}}" for f in fields
    )
    return {"error": {"object": "error", "type": "invalid_request_error", "message": f"[{items}]"}}


MODEL_NOT_FOUND: Final = "Model not found, inaccessible, and/or not deployed"

# ---------------------------------------------------------------------------------------------------
# Validation


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

_Errors = list[tuple[list[str | int], str, str]]


def _fmt(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


def _check_range(errs: _Errors, loc: list[str | int], v: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and v < lo:
        errs.append((loc, f"ensure this value is greater than or equal to {_fmt(lo)}", "value_error.number.not_ge"))
    elif hi is not None and v > hi:
        errs.append((loc, f"ensure this value is less than or equal to {_fmt(hi)}", "value_error.number.not_le"))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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


def _validate_prompt(v: object, errs: _Errors) -> tuple[PromptInput, ...]:
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


def _message_text(content: object, loc: list[str | int], errs: _Errors) -> str:
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


def _validate_messages(v: object, errs: _Errors) -> list[Message]:
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
            errs.append(([*loc, i, "role"], "field required", "value_error.missing"))
        elif not isinstance(role, str):
            errs.append(([*loc, i, "role"], *_STR_ERR))
        elif role not in ROLES:
            permitted = ", ".join(repr(r) for r in ROLES)
            msg = f"value is not a valid enumeration member; permitted: {permitted}"
            errs.append(([*loc, i, "role"], msg, "type_error.enum"))
        text = _message_text(m.get("content"), [*loc, i, "content"], errs)
        if isinstance(role, str):
            out.append((role, text))
    return out


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
            raise ApiError(400, _extra_fields_error(extra))
    errs: _Errors = []
    get = obj.get
    source = "messages" if chat else "prompt"
    for name in ("model", source):
        if get(name) is None:
            errs.append((["body", name], "field required", "value_error.missing"))
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
    for name, (flo, fhi) in _FLOATS.items():
        v = get(name)
        if v is not None:
            if _is_num(v):
                _check_range(errs, ["body", name], v, flo, fhi)
            else:
                errs.append((["body", name], *_FLOAT_ERR))
    for name, (ilo, ihi) in _INTS.items():
        v = get(name)
        if v is not None:
            if _is_int(v):
                _check_range(errs, ["body", name], v, ilo, ihi)
            else:
                errs.append((["body", name], *_INT_ERR))
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
            permitted = ", ".join(repr(a) for a in allowed)
            errs.append(
                (["body", name], f"value is not a valid enumeration member; permitted: {permitted}", "type_error.enum")
            )
    logprobs = get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        if _is_int(logprobs):
            _check_range(errs, ["body", "logprobs"], logprobs, 0, 5)
        else:
            errs.append((["body", "logprobs"], *_INT_ERR))
    stop = get("stop")
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
    stops = tuple(s for s in stops if s)
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
    for name in ("metadata", "prediction", "thinking", "response_format"):
        v = get(name)
        if v is not None and not isinstance(v, dict) and not (name == "prediction" and isinstance(v, str)):
            errs.append((["body", name], *_DICT_ERR))
    rf = get("response_format")
    if isinstance(rf, dict) and rf.get("type") not in _RESPONSE_FORMATS:
        permitted = ", ".join(repr(a) for a in _RESPONSE_FORMATS)
        errs.append(
            (
                ["body", "response_format", "type"],
                f"value is not a valid enumeration member; permitted: {permitted}",
                "type_error.enum",
            )
        )
    thinking = get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in ("enabled", "disabled"):
        errs.append(
            (["body", "thinking", "type"], "unexpected value; permitted: 'enabled', 'disabled'", "value_error.const")
        )
    effort = get("reasoning_effort")
    if effort is not None and not isinstance(effort, (bool, int)) and effort not in _EFFORTS:
        errs.append(
            (
                ["body", "reasoning_effort"],
                "value is not a valid enumeration member; permitted: 'low', 'medium', 'high', 'none'",
                "type_error.enum",
            )
        )
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
        return ApiError(400, nested_error(400, message, request_id, param))

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


# ---------------------------------------------------------------------------------------------------
# Rendering


def _jstr(s: str) -> str:
    """JSON string literal of a token text (memoised: token texts repeat constantly)."""
    r = _jstr_cache.get(s)
    if r is None:
        r = _encode_str(s)
        if len(_jstr_cache) < 65536:
            _jstr_cache[s] = r
    return r


def _jbytes(s: str) -> str:
    r = _jbytes_cache.get(s)
    if r is None:
        r = "[" + ",".join(map(str, token_bytes(s))) + "]"
        if len(_jbytes_cache) < 65536:
            _jbytes_cache[s] = r
    return r


_jstr_cache: dict[str, str] = {}
_jbytes_cache: dict[str, str] = {}


def _float(x: float | None) -> str:
    return "null" if x is None else repr(x)


# Logprob objects are the bulk of every response, and their alternatives repeat (each Dist is shared by
# many positions), so they are rendered as JSON text with the alternatives cached on the Dist.


def _entries(d: Dist, kind: int) -> tuple[str, ...]:
    """Pre-encoded JSON of each candidate: ``"text":lp`` (kind 0) or a content ``top_logprobs`` item (1)."""
    hit = d.frags.get(kind)
    if hit is not None:
        return hit  # type: ignore[return-value]
    if d.base is not None:  # a substituted copy differs from its template in one slot only
        entries = list(_entries(d.base, kind))
        ranks: Iterable[int] = (d.rank,)
    else:
        entries = [""] * len(d.ids)
        ranks = range(len(d.ids))
    for r in ranks:
        t, lp = d.texts[r], d.lps[r]
        if kind == 0:
            entries[r] = f"{_jstr(t)}:{lp!r}"
        else:
            entries[r] = f'{{"token":{_jstr(t)},"logprob":{lp!r},"token_id":{d.ids[r]},"bytes":{_jbytes(t)}}}'
    out = tuple(entries)
    d.frags[kind] = out
    return out


def _top(d: Dist, kind: int, k: int) -> str:
    hit = d.frags.get((kind, k))
    if hit is None:
        hit = ",".join(_entries(d, kind)[:k])
        d.frags[(kind, k)] = hit
    return hit  # type: ignore[return-value]


def _legacy_top(st: Step, k: int) -> str:
    d = st.dist
    assert d is not None
    frag = _top(d, 0, k)
    if st.tid in d.ids[:k] or st.text in d.texts[:k]:
        return "{" + frag + "}"
    own = f"{_jstr(st.text)}:{st.lp!r}"
    return "{" + frag + "," + own + "}" if frag else "{" + own + "}"


def _legacy(steps: list[Step], offsets: list[int], first_null: bool, k: int) -> str:
    lps: list[str] = []
    tops: list[str] = []
    for i, st in enumerate(steps):
        if st.lp is None or (i == 0 and first_null):
            lps.append("null")
            tops.append("null")
        else:
            lps.append(repr(st.lp))
            tops.append(_legacy_top(st, k))
    return (
        f'{{"tokens":[{",".join([_jstr(st.text) for st in steps])}],"token_logprobs":[{",".join(lps)}],'
        f'"top_logprobs":[{",".join(tops)}],"text_offset":[{",".join(map(str, offsets))}],'
        f'"token_ids":[{",".join([str(st.tid) for st in steps])}]}}'
    )


def _content(steps: list[Step], offsets: list[int], first_null: bool, k: int) -> str:
    parts = []
    for i, (st, off) in enumerate(zip(steps, offsets, strict=True)):
        if st.lp is None or (i == 0 and first_null):
            parts.append(
                f'{{"token":{_jstr(st.text)},"logprob":0.0,"sampling_logprob":null,"bytes":{_jbytes(st.text)},'
                f'"token_id":{st.tid},"text_offset":{off},"top_logprobs":[]}}'
            )
        else:
            parts.append(
                f'{{"token":{_jstr(st.text)},"logprob":{st.lp!r},"sampling_logprob":{_float(st.slp)},'
                f'"bytes":{_jbytes(st.text)},"token_id":{st.tid},"text_offset":{off},'
                f'"top_logprobs":[{_top(st.dist, 1, k) if st.dist is not None else ""}]}}'
            )
    return '{"content":[' + ",".join(parts) + "]}"


def _ids(ids: Iterable[int]) -> str:
    return "[" + ",".join(map(str, ids)) + "]"


class _Choice:
    """The pieces of one choice before it becomes JSON."""

    __slots__ = ("echo_steps", "echo_text", "first_null", "gen", "index", "offset0", "prompt", "zero_width")

    def __init__(
        self,
        index: int,
        prompt: Prompt,
        gen: Generation,
        echo_steps: list[Step],
        echo_text: str,
        first_null: bool,
        zero_width: bool,
        offset0: int,
    ) -> None:
        self.index = index
        self.prompt = prompt
        self.gen = gen
        self.echo_steps = echo_steps
        self.echo_text = echo_text
        self.first_null = first_null  # the first echoed position is the start of the sequence
        self.zero_width = zero_width  # the first echoed step is an implicit BOS absent from the text
        self.offset0 = offset0  # text_offset of the first completion token


def _offsets(steps: list[Step], start: int, zero_width_first: bool) -> list[int]:
    out = []
    pos = start
    for i, st in enumerate(steps):
        out.append(pos)
        if not (i == 0 and zero_width_first):
            pos += len(st.text)
    return out


class Engine:
    """Request handling shared by every connection of one simulator (holds memo caches)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        # Bounded by tokens held (about 100 bytes each), not entries: one prompt may be 100k tokens.
        self._prompts: Memo[tuple[str, PromptInput, bool], Prompt] = Memo(1_000_000)
        self._gens: Memo[tuple[object, ...], Generation] = Memo(1_000_000)

    # -- routing ------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[Reply, object]:
        """Answer one request; also returns the decoded JSON body (None if absent or unparseable)."""
        request_id = headers.get("x-request-id") or str(uuid.uuid4())
        obj = decode_body(body)
        try:
            if path in COMPLETIONS_PATHS:
                return self.completion(self._json_post(method, headers, obj, body, request_id), request_id), obj
            if path in CHAT_PATHS:
                return self.chat(self._json_post(method, headers, obj, body, request_id), request_id), obj
            if path in MODELS_PATHS:
                if method != "GET":
                    raise self._method_not_allowed("GET", request_id)
                self._auth(headers, request_id)
                return Reply(200, dumps(self._models_body()), request_id, self._headers(request_id)), obj
            raise ApiError(404, nested_error(404, f"Not found: {method} {path}", request_id))
        except ApiError as e:
            return self.error_reply(e, request_id), obj

    def _json_post(self, method: str, headers: Mapping[str, str], obj: object, body: bytes, request_id: str) -> object:
        """The checks every POST endpoint makes, in the service's order: method, key, then a JSON body."""
        if method != "POST":
            raise self._method_not_allowed("POST", request_id)
        self._auth(headers, request_id)
        if obj is None:
            msg = "Request body must be a JSON object" if not body else "Request body is not valid JSON"
            raise ApiError(400, nested_error(400, msg, request_id))
        return obj

    def _method_not_allowed(self, allow: str, request_id: str) -> ApiError:
        return ApiError(405, nested_error(405, "Method Not Allowed", request_id), [("allow", allow)])

    def _auth(self, headers: Mapping[str, str], request_id: str) -> None:
        auth = headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, nested_error(401, "Missing or malformed Authorization header", request_id))
        if self.cfg.api_key is not None and key != self.cfg.api_key:
            raise ApiError(401, nested_error(401, "The API key you provided is invalid.", request_id))

    def _headers(self, request_id: str, content_type: str = "application/json") -> list[tuple[str, str]]:
        return [("content-type", content_type), ("x-request-id", request_id), ("x-ratelimit-over-limit", "no")]

    def error_reply(self, e: ApiError, request_id: str) -> Reply:
        """Render an :class:`ApiError` as a reply."""
        return Reply(e.status, dumps(e.body), request_id, self._headers(request_id) + e.headers)

    def _models_body(self) -> dict[str, Any]:
        names = sorted(self.cfg.known_models) if self.cfg.known_models is not None else DEFAULT_MODELS
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": 1_700_000_000,
                    "owned_by": name.split("/")[1] if name.count("/") >= 2 else "fireworks",
                    "kind": "HF_BASE_MODEL",
                    "supports_chat": True,
                    "supports_image_input": False,
                    "supports_tools": False,
                    "context_length": self.cfg.context_length,
                }
                for name in names
            ],
        }

    # -- completions --------------------------------------------------------------------------------

    def prompt(self, model: str, item: PromptInput, implicit_bos: bool = True) -> Prompt:
        """Tokenise and score a prompt (memoised per model, prompt and BOS mode).

        ``implicit_bos=False`` ignores the ``bos`` option (a rendered chat prompt holds its own BOS).
        """
        key = (model, item, implicit_bos)
        p = self._prompts.get(key)
        if p is not None:
            return p
        if isinstance(item, str):
            text = item
            texts, ids = tokenize(text)
        else:
            ids = item
            texts = tuple(decode_id(t) for t in ids)
            text = "".join(texts)
        bos = self.cfg.bos if implicit_bos else "none"
        if bos != "none":
            bos_text, bos_id = bos_token_for(model)
            texts, ids = (bos_text, *texts), (bos_id, *ids)
        p = walk_prompt(model, texts, ids, text, bos_hidden=bos == "count")
        self._prompts.put(key, p, len(ids))
        return p

    def _generate(self, req: CompletionRequest, prompt: Prompt, j: int, max_tokens: int) -> Generation:
        seed_key = ((req.seed & _MASK64) * 0x9E3779B97F4A7C15 ^ (j + 1) * 0xBF58476D1CE4E5B9) & _MASK64
        seed_key ^= prompt.end_state.h ^ (req.params_hash << 17)
        key = (seed_key, prompt.end_state.h, req.sampling.key, max_tokens, req.stops, req.ignore_eos)
        g = self._gens.get(key)
        if g is None:
            g = generate(
                prompt,
                seed_key=seed_key,
                sampling=req.sampling,
                max_tokens=max_tokens,
                stops=req.stops,
                stop_included=self.cfg.stop_included,
                ignore_eos=req.ignore_eos,
            )
            self._gens.put(key, g, len(g.steps))
        return g

    def _max_tokens(self, req: CompletionRequest, prompt: Prompt, request_id: str) -> int:
        ctx = self.cfg.context_length
        mt = self.cfg.default_max_tokens if req.max_tokens is None else req.max_tokens
        p = len(prompt.ids)
        if p > ctx or (req.ctx_error and p + mt > ctx):
            raise ApiError(
                400,
                nested_error(
                    400,
                    f"The prompt is too long: {p} prompt tokens plus max_tokens={mt} exceeds the model's "
                    f"maximum context length of {ctx} tokens.",
                    request_id,
                    "prompt",
                ),
            )
        return min(mt, ctx - p)

    def _choices(self, req: CompletionRequest, request_id: str) -> tuple[list[_Choice], int, int]:
        choices: list[_Choice] = []
        prompt_tokens = completion_tokens = 0
        cfg = self.cfg
        for pi, item in enumerate(req.prompts):
            prompt = self.prompt(req.model, item, not req.chat)
            max_tokens = self._max_tokens(req, prompt, request_id)
            prompt_tokens += len(prompt.ids)
            shown = prompt.steps[1:] if prompt.bos_hidden else prompt.steps
            if req.echo_last is None:
                echo_steps: list[Step] = []
            elif req.echo_last < 0 or req.echo_last >= len(shown):
                echo_steps = shown
            else:
                echo_steps = shown[len(shown) - req.echo_last :] if req.echo_last else []
            first_null = bool(echo_steps) and echo_steps[0] is shown[0]
            zero_width = cfg.bos == "echo" and first_null and not req.chat
            echo_text = "".join(st.text for st in (echo_steps[1:] if zero_width else echo_steps))
            if req.echo_last is not None:
                offset0 = len(echo_text)
            else:
                offset0 = len(prompt.text) if cfg.text_offset_base == "prompt" else 0
            for j in range(req.n):
                gen = self._generate(req, prompt, j, max_tokens)
                completion_tokens += len(gen.steps)
                choices.append(
                    _Choice(pi * req.n + j, prompt, gen, echo_steps, echo_text, first_null, zero_width, offset0)
                )
        return choices, prompt_tokens, completion_tokens

    def _logprobs(self, req: CompletionRequest, steps: list[Step], offsets: list[int], first_null: bool) -> str:
        if req.legacy_k is not None:
            return _legacy(steps, offsets, first_null, req.legacy_k)
        if req.content_k is not None:
            return _content(steps, offsets, first_null, req.content_k)
        return "null"

    def _raw_output(self, req: CompletionRequest, c: _Choice) -> str:
        steps = c.gen.steps
        if req.content_k is not None or req.legacy_k is not None:
            logprobs = _content(steps, _offsets(steps, c.offset0, False), False, req.content_k or 0)
        else:
            logprobs = "null"
        return (
            f'{{"prompt_fragments":[{_encode_str(c.prompt.text)}],"prompt_token_ids":{_ids(c.prompt.ids)},'
            f'"completion":{_encode_str(c.gen.text)},"completion_token_ids":{_ids(st.tid for st in steps)},'
            f'"completion_logprobs":{logprobs},"grammar":null,"images":null}}'
        )

    def _choice_json(
        self,
        req: CompletionRequest,
        c: _Choice,
        text: str,
        finish_reason: str | None,
        logprobs: str,
        extra: str = "",
    ) -> str:
        fr = "null" if finish_reason is None else f'"{finish_reason}"'
        return f'{{"index":{c.index},"text":{_encode_str(text)},"finish_reason":{fr},"logprobs":{logprobs}{extra}}}'

    def completion(self, obj: object, request_id: str) -> Reply:
        """Answer a decoded completions body (auth already checked)."""
        return self._answer(validate(self.cfg, obj, request_id), request_id)

    def chat(self, obj: object, request_id: str) -> Reply:
        """Answer a decoded chat completions body (auth already checked)."""
        return self._answer(validate(self.cfg, obj, request_id, chat=True), request_id)

    def _answer(self, req: CompletionRequest, request_id: str) -> Reply:
        choices, prompt_tokens, completion_tokens = self._choices(req, request_id)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        kind = ("chat.completion.chunk" if req.stream else "chat.completion") if req.chat else "text_completion"
        head = (
            f'{{"id":"{uuid.uuid4()}","object":"{kind}","created":{int(time.time())},'
            f'"model":{_encode_str(req.model)},"choices":['
        )
        tail = '],"usage":' + _encoder.encode(usage)
        if req.perf_metrics:
            tail += ',"perf_metrics":' + _encoder.encode(_perf_metrics(prompt_tokens, completion_tokens))
        if req.chat and req.return_token_ids:
            tail += ',"prompt_token_ids":' + _ids(choices[0].prompt.ids)
        tail += "}"
        headers = self._headers(request_id)
        if req.stream:
            headers[0] = ("content-type", "text/event-stream")
            headers.append(("cache-control", "no-cache"))
            return Reply(200, b"", request_id, headers, self._events(req, head, choices, tail))
        headers.append(("fireworks-prompt-tokens", str(prompt_tokens)))
        parts = [self._full_choice(req, c) for c in choices]
        return Reply(200, (head + ",".join(parts) + tail).encode("utf-8"), request_id, headers)

    def _full_choice(self, req: CompletionRequest, c: _Choice) -> str:
        """One choice of a non-streamed response."""
        if req.legacy_k is not None or req.content_k is not None:
            steps = c.echo_steps + c.gen.steps if c.echo_steps else c.gen.steps
            offsets = _offsets(c.echo_steps, 0, c.zero_width) + _offsets(c.gen.steps, c.offset0, False)
            logprobs = self._logprobs(req, steps, offsets, c.first_null)
        else:
            logprobs = "null"
        extra = ""
        if req.raw_output:
            extra += ',"raw_output":' + self._raw_output(req, c)
        if req.return_token_ids:
            if not req.chat:
                extra += f',"prompt_token_ids":{_ids(c.prompt.ids)}'
            extra += f',"token_ids":{_ids(st.tid for st in c.gen.steps)}'
        if req.chat:
            message = _message(c.gen.text, split_generation(c.gen.text, c.prompt.end_state))
            return (
                f'{{"index":{c.index},"message":{message},"finish_reason":"{c.gen.finish_reason}",'
                f'"logprobs":{logprobs}{extra}}}'
            )
        echo = req.echo_last is not None and self.cfg.echo_text
        text = c.echo_text + c.gen.text if echo else c.gen.text
        return self._choice_json(req, c, text, c.gen.finish_reason, logprobs, extra)

    def _text_events(self, req: CompletionRequest, c: _Choice) -> list[_Event]:
        """A completions choice's events: an echo event, then one per token."""
        evs: list[_Event] = []
        if c.echo_steps:
            text = c.echo_text if self.cfg.echo_text else ""
            evs.append((c, text, c.echo_steps, _offsets(c.echo_steps, 0, c.zero_width), c.first_null, ""))
        offsets = _offsets(c.gen.steps, c.offset0, False)
        ids = req.return_token_ids
        for st, off in zip(c.gen.steps, offsets, strict=True):
            evs.append((c, st.text, [st], [off], False, f',"token_ids":[{st.tid}]' if ids else ""))
        if not c.gen.steps:
            evs.append((c, "", [], [], False, ',"token_ids":[]' if ids else ""))
        if ids:
            first = evs[0]
            extra = f',"prompt_token_ids":{_ids(c.prompt.ids)}' + (first[5] or ',"token_ids":[]')
            evs[0] = (*first[:5], extra)
        return evs

    def _chat_events(self, req: CompletionRequest, c: _Choice) -> list[_Event]:
        """A chat choice's events: the role (with the echoed logprobs), then one delta per token."""
        ids = req.return_token_ids
        evs: list[_Event] = []
        role = '{"role":"assistant","content":null}'
        no_ids = ',"token_ids":[]' if ids else ""
        if c.echo_steps:
            evs.append((c, role, c.echo_steps, _offsets(c.echo_steps, 0, c.zero_width), c.first_null, no_ids))
        else:
            evs.append((c, role, [], [], False, no_ids))
        text = c.gen.text
        spans = split_generation(text, c.prompt.end_state)
        pos = 0
        for st, off in zip(c.gen.steps, _offsets(c.gen.steps, c.offset0, False), strict=True):
            end = pos + len(st.text)
            delta = _delta(text, pos, end, spans)
            evs.append((c, delta, [st], [off], False, f',"token_ids":[{st.tid}]' if ids else ""))
            pos = end
        return evs

    def _events(self, req: CompletionRequest, head: str, choices: list[_Choice], tail: str) -> list[bytes]:
        """SSE events: each choice's events, interleaved; finish on each choice's last, usage on the last."""
        per_choice: list[list[_Event]] = []
        for c in choices:
            evs = self._chat_events(req, c) if req.chat else self._text_events(req, c)
            if req.raw_output:
                evs[-1] = (*evs[-1][:5], evs[-1][5] + ',"raw_output":' + self._raw_output(req, c))
            per_choice.append(evs)
        # Interleave choices token by token, as a server decoding them in one batch would.
        order = []
        for i in range(max(len(e) for e in per_choice)):
            for evs in per_choice:
                if i < len(evs):
                    order.append((evs[i], i == len(evs) - 1))
        null_tail = '],"usage":null}'
        out = []
        last = len(order) - 1
        want_logprobs = req.legacy_k is not None or req.content_k is not None
        for i, ((c, piece, steps, offsets, first_null, extra), is_last) in enumerate(order):
            logprobs = self._logprobs(req, steps, offsets, first_null) if want_logprobs and steps else "null"
            finish = c.gen.finish_reason if is_last else None
            if req.chat:
                fr = "null" if finish is None else f'"{finish}"'
                choice = f'{{"index":{c.index},"delta":{piece},"finish_reason":{fr},"logprobs":{logprobs}{extra}}}'
            else:
                choice = self._choice_json(req, c, piece, finish, logprobs, extra)
            out.append(f"data: {head}{choice}{tail if i == last else null_tail}\n\n".encode())
        out.append(DONE_EVENT)
        return out


#: One SSE event of a choice before it becomes JSON: (choice, text or delta JSON, steps, offsets,
#: first_null, extra JSON).
_Event = tuple[_Choice, str, list[Step], list[int], bool, str]


def _pieces(text: str, start: int, end: int, spans: list[Span]) -> tuple[str, str]:
    """The reasoning and the answer text within ``text[start:end]``."""
    reasoning = content = ""
    for a, b, kind in spans:
        lo, hi = max(start, a), min(end, b)
        if lo < hi:
            if kind == "reasoning":
                reasoning += text[lo:hi]
            else:
                content += text[lo:hi]
    return reasoning, content


def _message(text: str, spans: list[Span] | None) -> str:
    """``choices[].message`` of a chat response; ``reasoning`` repeats ``reasoning_content`` for OpenRouter clients."""
    if spans is None:
        return f'{{"role":"assistant","content":{_encode_str(text)},"reasoning_content":null}}'
    reasoning, content = _pieces(text, 0, len(text), spans)
    r = _encode_str(reasoning)
    return f'{{"role":"assistant","content":{_encode_str(content)},"reasoning_content":{r},"reasoning":{r}}}'


def _delta(text: str, start: int, end: int, spans: list[Span] | None) -> str:
    """The ``delta`` of the chat stream event of the token at ``text[start:end]`` (``{}`` for ``</think>``)."""
    if spans is None:
        return '{"content":' + _jstr(text[start:end]) + "}"
    reasoning, content = _pieces(text, start, end, spans)
    parts = []
    if reasoning:
        r = _jstr(reasoning)
        parts.append(f'"reasoning_content":{r},"reasoning":{r}')
    if content:
        parts.append('"content":' + _jstr(content))
    return "{" + ",".join(parts) + "}"


DONE_EVENT: Final = b"data: [DONE]\n\n"


def _perf_metrics(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt-tokens": prompt_tokens,
        "cached-prompt-tokens": 0,
        "generated-tokens": completion_tokens,
        "server-time-to-first-token": 0.0,
    }


def is_finish_event(event: bytes) -> bool:
    """Whether an SSE event carries a ``finish_reason`` (used to cut streams before the end)."""
    return event == DONE_EVENT or b'"finish_reason":null' not in event


def model_names(models: Iterable[str] | None) -> frozenset[str] | None:
    """Normalise the ``known_models`` option."""
    if models is None:
        return None
    if isinstance(models, str):
        return frozenset({models})
    return frozenset(models)
