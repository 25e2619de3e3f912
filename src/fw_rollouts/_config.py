"""Settings: defaults, validation of every option, and the request body they produce.

A :class:`Settings` is frozen. The client holds one built from its constructor; each
call derives another with ``settings.replace(**overrides)``, validating every value
before anything is sent. Unknown names are rejected with the list of valid ones,
because the service itself rejects unknown body fields.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from ._exceptions import ConfigurationError, InvalidTypeError, ValidationError
from ._prompts import resolve_model
from ._templates import ChatTemplate

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "SERVICE_FIELDS",
    "Settings",
]

DEFAULT_BASE_URL = "https://api.fireworks.ai/inference/v1"
DEFAULT_CACHE_DIR = ".fw_rollouts"
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_MAX_RETRIES = 8
DEFAULT_TIMEOUT = 300.0
MAX_LOGPROBS = 5
MAX_STOP_SEQUENCES = 4
MAX_N = 128
"""The service's limit on ``n`` (choices per request), and so on ``samples_per_request``."""

# Fireworks completions fields a caller may set beyond the named options. Everything
# else is refused before sending: the service answers unknown fields with a 400.
SERVICE_FIELDS: frozenset[str] = frozenset(
    {
        "top_logprobs",
        "typical_p",
        "logit_bias",
        "ignore_eos",
        "context_length_exceeded_behavior",
        "mirostat_target",
        "mirostat_lr",
        "response_format",
        "user",
        "service_tier",
        "prompt_cache_key",
    }
)

# Body fields that do not change what the model generates, so they stay out of the cache key.
NON_OUTPUT_FIELDS: frozenset[str] = frozenset({"user", "service_tier", "prompt_cache_key"})


def _number(name: str, lo: float, hi: float, *, lo_open: bool = False) -> Callable[[Any], float | None]:
    def check(value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidTypeError(name, value, f"a number from {lo} to {hi}, or None")
        if math.isnan(value) or value < lo or value > hi or (lo_open and value == lo):
            bracket = "(" if lo_open else "["
            raise ValidationError(name, value, f"must be in {bracket}{lo}, {hi}]")
        return float(value)

    return check


def _integer(name: str, lo: int, hi: int | None = None, *, allow_none: bool = True) -> Callable[[Any], int | None]:
    def check(value: Any) -> int | None:
        if value is None and allow_none:
            return None
        span = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidTypeError(name, value, f"an integer {span}" + (", or None" if allow_none else ""))
        if value < lo or (hi is not None and value > hi):
            raise ValidationError(name, value, f"must be an integer {span}")
        return value

    return check


def _positive(name: str, *, allow_none: bool) -> Callable[[Any], float | None]:
    def check(value: Any) -> float | None:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise InvalidTypeError(name, value, "a positive number" + (", or None" if allow_none else ""))
        if value <= 0:
            raise ValidationError(name, value, "must be > 0")
        return float(value)

    return check


def _flag(name: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise InvalidTypeError(name, value, "True or False")
        return value

    return check


def _logprobs(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(
            "logprobs", value, f"an integer from 0 to {MAX_LOGPROBS} (alternatives per token), or None for off"
        )
    if not 0 <= value <= MAX_LOGPROBS:
        raise ValidationError("logprobs", value, f"must be an integer from 0 to {MAX_LOGPROBS} (0 or None: off)")
    return value or None


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise InvalidTypeError("stop", value, f"a string or a list of up to {MAX_STOP_SEQUENCES} strings")
    if len(value) > MAX_STOP_SEQUENCES:
        raise ValidationError("stop", value, f"at most {MAX_STOP_SEQUENCES} stop sequences (got {len(value)})")
    if any(not s for s in value):
        raise ValidationError("stop", value, "stop sequences must be non-empty strings")
    return tuple(value)


def _model(value: Any) -> str:
    return resolve_model(value)


def _base_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidTypeError("base_url", value, "an http(s) URL string such as 'https://api.fireworks.ai/inference/v1'")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"invalid base_url={value!r}: must be an http:// or https:// URL with a host, "
            "such as 'https://api.fireworks.ai/inference/v1'"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"invalid base_url={value!r}: must not carry a query string or fragment")
    return value.strip().rstrip("/")


def _api_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        # Never echo the value: it may be a real key with a stray character.
        raise ConfigurationError("invalid api_key: must be a non-empty string")
    return value.strip()


def _cache_dir(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise InvalidTypeError("cache_dir", value, "a directory path")
    return os.fspath(value)


def _chat_template(value: Any) -> str | ChatTemplate | None:
    if value is None or isinstance(value, (str, ChatTemplate)):
        return value
    raise InvalidTypeError("chat_template", value, "a Jinja template string, a built-in template name, or None")


def _mapping_or_none(name: str) -> Callable[[Any], dict[str, Any] | None]:
    def check(value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidTypeError(name, value, "a dict, or None")
        return dict(value)

    return check


def _logit_bias(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidTypeError("logit_bias", value, "a dict of token id -> bias from -100 to 100")
    out: dict[str, float] = {}
    for key, bias in value.items():
        if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
            raise ValidationError("logit_bias", value, f"keys must be token ids (got {key!r})")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
            raise ValidationError("logit_bias", value, f"biases must be numbers from -100 to 100 (got {bias!r})")
        out[str(key)] = float(bias)
    return out


def _choice(name: str, allowed: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        if value not in allowed:
            raise ValidationError(name, value, f"one of {', '.join(map(repr, allowed))}")
        return str(value)

    return check


def _string_or_none(name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        raise InvalidTypeError(name, value, "a string, or None")

    return check


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "model": _model,
    "temperature": _number("temperature", 0.0, 2.0),
    "top_p": _number("top_p", 0.0, 1.0),
    "max_tokens": _integer("max_tokens", 0),
    "top_k": _integer("top_k", 0, 100),
    "min_p": _number("min_p", 0.0, 1.0),
    "presence_penalty": _number("presence_penalty", -2.0, 2.0),
    "frequency_penalty": _number("frequency_penalty", -2.0, 2.0),
    "repetition_penalty": _number("repetition_penalty", 0.0, 2.0),
    "stop": _stop,
    "logprobs": _logprobs,
    "echo": _flag("echo"),
    "api_key": _api_key,
    "base_url": _base_url,
    "use_cache": _flag("use_cache"),
    "cache_dir": _cache_dir,
    "requests_per_minute": _positive("requests_per_minute", allow_none=True),
    "tokens_per_minute": _positive("tokens_per_minute", allow_none=True),
    "max_concurrency": _integer("max_concurrency", 1, allow_none=False),
    "max_retries": _integer("max_retries", 0, allow_none=False),
    "timeout": _positive("timeout", allow_none=False),
    "progress_bar": _flag("progress_bar"),
    "raw": _flag("raw"),
    "chat_template": _chat_template,
    "chat_template_kwargs": _mapping_or_none("chat_template_kwargs"),
    "samples_per_request": _integer("samples_per_request", 1, MAX_N, allow_none=False),
    # Fireworks fields sent as they are.
    "top_logprobs": _integer("top_logprobs", 0, MAX_LOGPROBS),
    "typical_p": _number("typical_p", 0.0, 1.0),
    "logit_bias": _logit_bias,
    "ignore_eos": lambda v: None if v is None else _flag("ignore_eos")(v),
    "context_length_exceeded_behavior": _choice("context_length_exceeded_behavior", ("truncate", "error")),
    "mirostat_target": _number("mirostat_target", 0.0, 1e6),
    "mirostat_lr": _number("mirostat_lr", 0.0, 1.0),
    "response_format": _mapping_or_none("response_format"),
    "user": _string_or_none("user"),
    "service_tier": _choice("service_tier", ("auto", "default", "flex", "priority")),
    "prompt_cache_key": _string_or_none("prompt_cache_key"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every option of a client or call, validated. Build with :meth:`create`, derive with :meth:`replace`."""

    model: str
    temperature: float | None = 0.7
    top_p: float | None = 0.95
    max_tokens: int | None = 4096
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = 5
    echo: bool = True
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    use_cache: bool = True
    cache_dir: str = DEFAULT_CACHE_DIR
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    progress_bar: bool = True
    raw: bool = False
    chat_template: str | ChatTemplate | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    samples_per_request: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    model_as_given: str = field(default="", compare=False)
    """``model`` before alias resolution (for servers other than Fireworks, which may want it verbatim)."""

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Every name accepted by a constructor or as a per-call override."""
        names = [f.name for f in fields(cls) if f.name not in ("extra", "model_as_given")]
        return (*names, *sorted(SERVICE_FIELDS))

    @classmethod
    def create(cls, **options: Any) -> Settings:
        """Validate ``options`` (all of them, before anything is sent) into a Settings."""
        return cls._build({}, options)

    def replace(self, **overrides: Any) -> Settings:
        """A copy with ``overrides`` applied and validated."""
        if not overrides:
            return self
        return self._build(self._as_options(), overrides)

    def _as_options(self) -> dict[str, Any]:
        options = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        options.update(self.extra)
        return options

    @classmethod
    def _build(cls, base: dict[str, Any], options: Mapping[str, Any]) -> Settings:
        known = set(_VALIDATORS)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValidationError(
                unknown[0],
                options[unknown[0]],
                "unknown option (the service rejects unknown fields); valid options are: "
                + ", ".join(cls.option_names()),
                message=f"unknown option {unknown[0]!r}" + (f" (and {unknown[1:]})" if unknown[1:] else "")
                + "; the service rejects unknown fields. Valid options are: " + ", ".join(cls.option_names()),
            )
        merged = dict(base)
        for name, value in options.items():
            merged[name] = _VALIDATORS[name](value)
        if "model" in options:
            merged["model_as_given"] = options["model"].strip()
        if "model" not in merged:
            raise ValidationError("model", None, "a model name is required")
        extra = {k: merged.pop(k) for k in list(merged) if k in SERVICE_FIELDS}
        merged["extra"] = {k: v for k, v in extra.items() if v is not None}
        for name in ("stop",):
            merged.setdefault(name, ())
        return cls(**merged)

    # -- derived -------------------------------------------------------------

    @property
    def resolved_base_url(self) -> str:
        """``base_url``, else ``FIREWORKS_BASE_URL``, else the Fireworks inference URL."""
        if self.base_url:
            return self.base_url
        env = os.environ.get("FIREWORKS_BASE_URL")
        if env:
            checked = _base_url(env)
            assert checked is not None
            return checked
        return DEFAULT_BASE_URL

    @property
    def is_fireworks(self) -> bool:
        """Whether requests go to Fireworks itself (whose model ids are ``accounts/...``)."""
        host = urlsplit(self.resolved_base_url).hostname or ""
        return host == "fireworks.ai" or host.endswith(".fireworks.ai")

    def require_api_key(self) -> str:
        """``api_key``, else ``FIREWORKS_API_KEY``; a clear error naming both when neither is set."""
        key = self.api_key or os.environ.get("FIREWORKS_API_KEY", "").strip()
        if not key:
            raise ConfigurationError(
                "no API key: pass api_key=... or set the FIREWORKS_API_KEY environment variable"
            )
        return key

    @property
    def wants_logprobs(self) -> bool:
        """Whether logprobs are requested (``logprobs`` 1-5)."""
        return bool(self.logprobs)

    @property
    def wants_echo(self) -> bool:
        """Echo is only sent with logprobs: without them it would only repeat the prompt text."""
        return self.echo and self.wants_logprobs

    def body(self, prompt: str) -> dict[str, Any]:
        """The request body for ``prompt``, without the seed (added per request)."""
        body: dict[str, Any] = {"model": self.model, "prompt": prompt}
        for name in (
            "max_tokens",
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
        ):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.stop:
            body["stop"] = list(self.stop)
        if self.samples_per_request > 1:
            body["n"] = self.samples_per_request
        if self.logprobs:
            body["logprobs"] = self.logprobs
            if self.echo:
                body["echo"] = True
        extra = self.extra
        if not self.logprobs and "top_logprobs" in extra:
            extra = {k: v for k, v in extra.items() if k != "top_logprobs"}  # meaningless without logprobs
        body.update(extra)
        return body

    def key_body(self, prompt: str) -> dict[str, Any]:
        """The body fields that shape the output (what the cache key covers besides endpoint and seed)."""
        body = self.body(prompt)
        for name in NON_OUTPUT_FIELDS:
            body.pop(name, None)
        return body

    def sampling_summary(self) -> dict[str, Any]:
        """The body fields that shape the output (for results and logs; no prompt, no secrets)."""
        body = self.body("")
        del body["prompt"]
        return body

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr and getattr(self, f.name) != f.default
        )
        return f"Settings({shown})"
