"""Settings: every option's value, validated, and what they produce (request body, cache-key body).

A :class:`Settings` is frozen and built only from the option table (``_options``): defaults,
validators and which fields are sent or shape the output all come from there. A client holds
one; each call derives another with :meth:`Settings.for_call`, which accepts call-scoped
options only, and ``with_options`` derives a sibling client's with :meth:`Settings.replace`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from . import _validators as v
from ._exceptions import ConfigurationError, ValidationError
from ._options import DEFAULT_BASE_URL, OPTIONS, REQUIRED, SENT_OPTIONS, by_name, check_call_options, check_known
from ._templates import ChatTemplate

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Every option of a client or call, validated (see the options table in ``docs/usage.md``).

    Build with :meth:`create`; derive with :meth:`for_call` (per-call overrides) or
    :meth:`replace`. Field defaults live in the option table only.
    """

    model: str
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    top_k: int | None
    min_p: float | None
    presence_penalty: float | None
    frequency_penalty: float | None
    repetition_penalty: float | None
    stop: tuple[str, ...]
    logprobs: int | None
    logprobs_format: str
    echo: bool
    echo_last: int | None
    samples_per_request: int
    top_logprobs: int | None
    typical_p: float | None
    logit_bias: dict[str, float] | None
    ignore_eos: bool | None
    context_length_exceeded_behavior: str | None
    mirostat_target: float | None
    mirostat_lr: float | None
    response_format: dict[str, Any] | None
    user: str | None
    service_tier: str | None
    prompt_cache_key: str | None
    raw: bool
    chat_template: str | ChatTemplate | None
    chat_template_kwargs: dict[str, Any] | None
    use_cache: bool
    progress_bar: bool
    echo_once: bool
    session_affinity: bool
    api_key: str | None = field(repr=False)
    base_url: str | None
    timeout: float
    connect_timeout: float
    max_response_bytes: int | None
    max_retries: int
    max_concurrency: int
    requests_per_minute: float | None
    tokens_per_minute: float | None
    prompt_tokens_per_minute: float | None
    generated_tokens_per_minute: float | None
    cache_dir: str
    model_as_given: str = field(default="", compare=False)
    """``model`` before alias resolution (for servers other than Fireworks, which may want it verbatim)."""

    # -- building ------------------------------------------------------------

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Every option name, in table order."""
        return tuple(o.name for o in OPTIONS)

    @classmethod
    def create(cls, **options: Any) -> Settings:
        """Validate ``options`` (all of them, before anything is sent); the rest take their defaults."""
        check_known(options)
        values: dict[str, Any] = {}
        for option in OPTIONS:
            if option.name in options:
                values[option.name] = option.validate(options[option.name])
            elif option.default is REQUIRED:
                raise ValidationError(option.name, None, f"a {option.name} is required")
            else:
                values[option.name] = option.default
        values["model_as_given"] = str(options["model"]).strip()
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (of any scope) validated and applied."""
        if not changes:
            return self
        check_known(changes)
        return self._with(changes)

    def _with(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with ``changes`` (known option names) validated and applied."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in changes.items():
            values[name] = by_name(name).validate(value)
        if "model" in changes:
            values["model_as_given"] = str(changes["model"]).strip()
        return Settings(**values)

    def for_call(self, overrides: Mapping[str, Any], *, where: str = "generate") -> Settings:
        """The settings of one call: call-scoped ``overrides`` applied; a client option is an error."""
        if not overrides:
            return self
        check_call_options(overrides, where=where)  # names checked there: no second pass in replace()
        return self._with(overrides)

    # -- derived -------------------------------------------------------------

    @property
    def resolved_base_url(self) -> str:
        """``base_url``, else ``FIREWORKS_BASE_URL``, else the Fireworks inference URL."""
        if self.base_url:
            return self.base_url
        env = os.environ.get("FIREWORKS_BASE_URL")
        if env:
            checked = v.base_url(env)
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
            raise ConfigurationError("no API key: pass api_key=... or set the FIREWORKS_API_KEY environment variable")
        return key

    @property
    def wants_logprobs(self) -> bool:
        """Whether logprobs are requested (``logprobs`` 1-5)."""
        return bool(self.logprobs)

    @property
    def wants_echo(self) -> bool:
        """Echo is only sent with logprobs: without them it would only repeat the prompt text."""
        return self.echo and self.wants_logprobs

    def body(self, prompt: str | Sequence[int]) -> dict[str, Any]:
        """The request body for ``prompt`` (a string, or token ids), without the seed (added per request)."""
        body: dict[str, Any] = {"prompt": prompt if isinstance(prompt, str) else list(prompt)}
        for option in SENT_OPTIONS:
            value = getattr(self, option.name)
            # What an option requires comes earlier in the table, so "sent" chains: echo_last needs echo, which
            # needs logprobs.
            if option.omit(value) or (option.requires and by_name(option.requires).field not in body):
                continue
            body[option.field] = option.encode(value)
        if self.logprobs_format == "content" and "logprobs" in body:
            # The OpenAI-style request: a flag, with the count of alternatives in top_logprobs.
            body["top_logprobs"] = body.get("top_logprobs", body["logprobs"])
            body["logprobs"] = True
        return body

    def key_body(self, prompt: str | Sequence[int]) -> dict[str, Any]:
        """The body fields that shape the output (what the cache key covers besides endpoint and seed)."""
        body = self.body(prompt)
        for option in SENT_OPTIONS:
            if not option.shapes_output:
                body.pop(option.field, None)
        return body

    def sampling_summary(self) -> dict[str, Any]:
        """The body fields that shape the output (for results and logs; no prompt, no secrets)."""
        body = self.key_body("")
        del body["prompt"]
        return body

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{o.name}={getattr(self, o.name)!r}"
            for o in OPTIONS
            if o.name != "api_key" and getattr(self, o.name) != o.default
        )
        return f"Settings({shown})"
