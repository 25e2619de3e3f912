"""Validators: one pure function per kind of option value, each raising an error that names the option.

Each validator takes the value a user passed and returns it normalised (``stop`` as a tuple,
``logprobs=0`` as None, numbers as floats), or raises :class:`ValidationError` /
:class:`InvalidTypeError` / :class:`ConfigurationError` saying what is allowed. They run
before any request is sent. The option table (``_options``) says which validator each option uses.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from ._exceptions import ConfigurationError, InvalidTypeError, ValidationError
from ._prompts import resolve_model
from ._templates import ChatTemplate

__all__ = [
    "MAX_LOGPROBS",
    "MAX_N",
    "MAX_STOP_SEQUENCES",
    "api_key",
    "base_url",
    "cache_dir",
    "chat_template",
    "choice",
    "flag",
    "integer",
    "logit_bias",
    "logprobs",
    "mapping_or_none",
    "model",
    "number",
    "on_error",
    "optional_flag",
    "positive",
    "positive_integer",
    "stop",
    "string_or_none",
]

MAX_LOGPROBS = 5
MAX_STOP_SEQUENCES = 4
MAX_N = 128
"""The service's limit on ``n`` (choices per request), and so on ``samples_per_request``."""


def number(name: str, lo: float, hi: float, *, lo_open: bool = False) -> Callable[[Any], float | None]:
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


def integer(name: str, lo: int, hi: int | None = None, *, allow_none: bool = True) -> Callable[[Any], int | None]:
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


def positive(name: str, *, allow_none: bool) -> Callable[[Any], float | None]:
    def check(value: Any) -> float | None:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise InvalidTypeError(name, value, "a positive number" + (", or None" if allow_none else ""))
        if value <= 0:
            raise ValidationError(name, value, "must be > 0")
        return float(value)

    return check


def flag(name: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise InvalidTypeError(name, value, "True or False")
        return value

    return check


def logprobs(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(
            "logprobs", value, f"an integer from 0 to {MAX_LOGPROBS} (alternatives per token), or None for off"
        )
    if not 0 <= value <= MAX_LOGPROBS:
        raise ValidationError("logprobs", value, f"must be an integer from 0 to {MAX_LOGPROBS} (0 or None: off)")
    return value or None


def stop(value: Any) -> tuple[str, ...]:
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


def model(value: Any) -> str:
    return resolve_model(value)


def base_url(value: Any) -> str | None:
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


def api_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        # Never echo the value: it may be a real key with a stray character.
        raise ConfigurationError("invalid api_key: must be a non-empty string")
    return value.strip()


def cache_dir(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise InvalidTypeError("cache_dir", value, "a directory path")
    return os.fspath(value)


def chat_template(value: Any) -> str | ChatTemplate | None:
    if value is None or isinstance(value, (str, ChatTemplate)):
        return value
    raise InvalidTypeError("chat_template", value, "a Jinja template string, a built-in template name, or None")


def mapping_or_none(name: str) -> Callable[[Any], dict[str, Any] | None]:
    def check(value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidTypeError(name, value, "a dict, or None")
        return dict(value)

    return check


def logit_bias(value: Any) -> dict[str, float] | None:
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


def choice(name: str, allowed: tuple[str, ...], *, allow_none: bool = True) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and allow_none:
            return None
        if value not in allowed:
            raise ValidationError(name, value, f"one of {', '.join(map(repr, allowed))}")
        return str(value)

    return check


def string_or_none(name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        raise InvalidTypeError(name, value, "a string, or None")

    return check


def optional_flag(name: str) -> Callable[[Any], bool | None]:
    """True, False or None (not sent)."""
    check = flag(name)

    def optional(value: Any) -> bool | None:
        return None if value is None else check(value)

    return optional


def positive_integer(name: str, value: Any) -> int:
    """``value`` as a count of at least 1 (``n_samples``, ``forced_max_tokens``); a bool is not a count."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(name, value, "a positive integer")
    if value < 1:
        raise ValidationError(name, value, "must be an integer >= 1")
    return value


def on_error(value: Any) -> str:
    """A study's ``on_error``: ``"raise"`` (the default) or ``"return"``."""
    if value not in ("raise", "return"):
        raise ValidationError("on_error", value, "must be 'raise' or 'return'")
    return str(value)
