"""The option table: every option of the SDK, once.

Each :class:`Option` says its name, default, validator, whether it is sent to the service
(and under which field name), whether it shapes the output (and so the cache key), whether
it belongs to the client or may change per call, and its doc line. Everything else derives
from this table: :class:`~fw_rollouts.Settings` (defaults and validation), the request
body, the cache-key body, the unknown-option message, the constructor-signature test and
the options table in ``docs/usage.md``.

Adding an option is one entry here (plus a parameter in ``AsyncFireworks.__init__``, which a
test holds to this table, and a field in ``Settings``).

Scopes:

* ``"client"``: fixed when the client is made (the key, the URL, timeouts, retries, limits
  and the cache location); ``client.with_options(...)`` makes a sibling with other values.
* ``"call"``: a client default that every ``generate`` call may override.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from . import _validators as v
from ._exceptions import ValidationError
from ._suggest import did_you_mean

__all__ = [
    "CALL_OPTIONS",
    "CLIENT_OPTIONS",
    "DEFAULT_BASE_URL",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "OPTIONS",
    "REQUIRED",
    "SENT_OPTIONS",
    "Option",
    "Scope",
    "by_name",
    "check_call_options",
    "check_known",
    "options_markdown",
]

DEFAULT_BASE_URL: Final = "https://api.fireworks.ai/inference/v1"
"""The Fireworks inference API, used when neither ``base_url`` nor ``FIREWORKS_BASE_URL`` is set."""
DEFAULT_CACHE_DIR: Final = ".fw_rollouts"
"""Where samples are cached when ``cache_dir`` is not given (relative to the working directory)."""
DEFAULT_MAX_CONCURRENCY: Final = 64
DEFAULT_MAX_RETRIES: Final = 8
DEFAULT_TIMEOUT: Final = 300.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
"""Seconds to establish a connection: an unreachable host fails in seconds, not at ``timeout``."""
DEFAULT_MAX_RESPONSE_BYTES: Final = 256 * 1024 * 1024
"""The largest reply body accepted (256 MiB), far above any reply the defaults can produce.

A legacy-format position with ``logprobs=5`` (the token, its logprob, six alternatives, its
offset and id) takes about 180 bytes of JSON (183 on the simulator); allow 256. 256 MiB then
holds 1,048,576 positions: the largest ``n`` (128 samples per request) times 4,096 generated
tokens plus a 4,096-token echoed prompt each. 64 MiB would refuse ``samples_per_request=128``
at the default ``max_tokens`` (128 x 4,108 x 183 B = 96 MB).
"""

Scope = Literal["client", "call"]


class _Required:
    """The default of an option that has none (``model``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


def _is_none(value: Any) -> bool:
    return value is None


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Option:
    """One option: what it is called, its default, how it is checked and where it goes."""

    name: str
    """The keyword argument's name."""
    default: Any
    """The default (``REQUIRED`` for ``model``); after validation, as ``Settings`` holds it."""
    validate: Callable[[Any], Any]
    """Checks a user's value and returns it normalised; raises an error naming the option."""
    scope: Scope
    """``"client"`` (fixed per client, see ``with_options``) or ``"call"`` (overridable per call)."""
    doc: str
    """One line for the docs' options table."""
    sent: bool = False
    """Whether it goes into the request body."""
    shapes_output: bool = False
    """Whether it changes what the model generates, and so is part of the cache key. Options that
    are not sent but shape the prompt (``raw``, ``chat_template``) reach the key through the prompt."""
    wire: str = ""
    """The body field's name when it differs from ``name``."""
    omit: Callable[[Any], bool] = _is_none
    """Values that are not sent at all (by default None: the service's own default applies)."""
    encode: Callable[[Any], Any] = _identity
    """The value as sent (``stop`` goes as a list)."""
    requires: str = ""
    """Another option, earlier in the table, that must be sent for this one to be (``echo`` and ``top_logprobs``
    need ``logprobs``, ``echo_last`` needs ``echo``)."""
    shapes_prompt: bool = False
    """Whether it changes the prompt string (and so, through the prompt, the cache key)."""
    annotation: str = ""
    """The type as the docs show it."""

    @property
    def field(self) -> str:
        """The request-body field name."""
        return self.wire or self.name


def _sampling(name: str, default: Any, validate: Callable[[Any], Any], doc: str, annotation: str, **kw: Any) -> Option:
    return Option(name, default, validate, "call", doc, sent=True, shapes_output=True, annotation=annotation, **kw)


def _service(name: str, validate: Callable[[Any], Any], doc: str, annotation: str, *, shapes: bool = True) -> Option:
    """A Fireworks body field sent as given, off (not sent) by default."""
    return Option(name, None, validate, "call", doc, sent=True, shapes_output=shapes, annotation=annotation)


def _client(name: str, default: Any, validate: Callable[[Any], Any], doc: str, annotation: str) -> Option:
    return Option(name, default, validate, "client", doc, annotation=annotation)


def _call(
    name: str, default: Any, validate: Callable[[Any], Any], doc: str, annotation: str, *, prompt: bool = False
) -> Option:
    return Option(name, default, validate, "call", doc, shapes_prompt=prompt, annotation=annotation)


OPTIONS: Final[tuple[Option, ...]] = (
    # -- what to sample (sent, part of the cache key) -------------------------------------------
    _sampling("model", REQUIRED, v.model, "Model alias (`qwen-15b`), `org/name`, or a full `accounts/...` id.", "str"),
    _sampling("temperature", 0.7, v.number("temperature", 0.0, 2.0), "Sampling temperature.", "float | None"),
    _sampling("top_p", 0.95, v.number("top_p", 0.0, 1.0), "Nucleus sampling threshold.", "float | None"),
    _sampling("max_tokens", 4096, v.integer("max_tokens", 0), "Generation budget per sample.", "int | None"),
    _sampling("top_k", None, v.integer("top_k", 0, 100), "Sample only among the k likeliest tokens.", "int | None"),
    _sampling("min_p", None, v.number("min_p", 0.0, 1.0), "Minimum probability relative to the top token.",
              "float | None"),
    _sampling("presence_penalty", 0.0, v.number("presence_penalty", -2.0, 2.0), "Penalty for tokens already present.",
              "float | None"),
    _sampling("frequency_penalty", 0.0, v.number("frequency_penalty", -2.0, 2.0),
              "Penalty growing with a token's count so far.", "float | None"),
    _sampling("repetition_penalty", None, v.number("repetition_penalty", 0.0, 2.0),
              "Multiplicative repetition penalty.", "float | None"),
    _sampling("stop", (), v.stop, "Up to 4 stop sequences (a string or a list).", "str | Sequence[str] | None",
              omit=lambda value: not value, encode=list),
    _sampling("logprobs", 5, v.logprobs, "Alternatives per token, 1-5; 0 or None turns logprobs off.", "int | None",
              omit=lambda value: not value),
    Option("logprobs_format", "legacy", v.choice("logprobs_format", ("legacy", "content"), allow_none=False), "call",
           "`legacy` sends `logprobs: N`; `content` sends `logprobs: true, top_logprobs: N`, Fireworks' OpenAI-style "
           "form, which also carries `sampling_logprob` and token ids.", shapes_output=True, annotation="str"),
    _sampling("echo", True, v.flag("echo"), "Also return the prompt's logprobs (only with logprobs on).", "bool",
              omit=lambda value: not value, requires="logprobs"),
    _sampling("echo_last", None, v.integer("echo_last", 1),
              "With echo: return only the last N prompt positions, a smaller reply (`echo_once` does not apply).",
              "int | None", requires="echo"),
    _sampling("samples_per_request", 1, v.integer("samples_per_request", 1, v.MAX_N, allow_none=False),
              f"Choices per request (`n`, up to {v.MAX_N}); each choice is cached as its own sample.", "int",
              wire="n", omit=lambda value: value == 1),
    # -- Fireworks fields sent as given (off unless set) -----------------------------------------
    Option("top_logprobs", None, v.integer("top_logprobs", 0, v.MAX_LOGPROBS), "call",
           "Fireworks' `top_logprobs` (only with logprobs on).", sent=True, shapes_output=True, requires="logprobs",
           annotation="int | None"),
    _service("typical_p", v.number("typical_p", 0.0, 1.0), "Typical sampling mass.", "float | None"),
    _service("logit_bias", v.logit_bias, "Token id -> bias from -100 to 100.", "Mapping[int | str, float] | None"),
    _service("ignore_eos", v.optional_flag("ignore_eos"), "Keep generating past the end-of-sequence token.",
             "bool | None"),
    _service("context_length_exceeded_behavior", v.choice("context_length_exceeded_behavior", ("truncate", "error")),
             "`truncate` or `error` when prompt + max_tokens exceed the context.", "str | None"),
    _service("mirostat_target", v.number("mirostat_target", 0.0, 1e6), "Mirostat target surprise.", "float | None"),
    _service("mirostat_lr", v.number("mirostat_lr", 0.0, 1.0), "Mirostat learning rate.", "float | None"),
    _service("response_format", v.mapping_or_none("response_format"), "Structured-output constraint.",
             "Mapping[str, Any] | None"),
    _service("user", v.string_or_none("user"), "End-user id for the service's logs.", "str | None", shapes=False),
    _service("service_tier", v.choice("service_tier", ("auto", "default", "flex", "priority")),
             "Fireworks service tier.", "str | None", shapes=False),
    _service("prompt_cache_key", v.string_or_none("prompt_cache_key"), "Routing hint for the service's prompt cache.",
             "str | None", shapes=False),
    # -- how a call runs (not sent; raw and the template shape the prompt string) ----------------
    _call("raw", False, v.flag("raw"), "Send a string prompt verbatim, without the chat template.", "bool",
          prompt=True),
    _call("chat_template", None, v.chat_template,
          "A built-in template name, a Jinja template string, or a `ChatTemplate`.", "str | ChatTemplate | None",
          prompt=True),
    _call("chat_template_kwargs", None, v.mapping_or_none("chat_template_kwargs"),
          "Extra template variables (`reasoning_effort`, `current_date`, ...).", "Mapping[str, Any] | None",
          prompt=True),
    _call("use_cache", True, v.flag("use_cache"), "Read and write the cache.", "bool"),
    _call("progress_bar", True, v.flag("progress_bar"), "Show a progress bar for calls of more than one sample.",
          "bool"),
    _call("echo_once", True, v.flag("echo_once"),
          "With echo: fetch, hold and cache the prompt's logprobs once per prompt, not with every sample.", "bool"),
    _call("session_affinity", True, v.flag("session_affinity"),
          "Send each prompt's samples with an `x-session-affinity` key, so one replica serves them from its "
          "prompt cache.", "bool"),
    # -- the client's own configuration ------------------------------------------------------------
    _client("api_key", None, v.api_key, "API key; default `FIREWORKS_API_KEY`. Never logged or cached.", "str | None"),
    _client("base_url", None, v.base_url,
            "Completions server; default `FIREWORKS_BASE_URL`, else the Fireworks inference URL.", "str | None"),
    _client("timeout", DEFAULT_TIMEOUT, v.positive("timeout", allow_none=False),
            "Seconds one attempt may take, end to end (the read timeout): connecting, sending, waiting, reading.",
            "float"),
    _client("connect_timeout", DEFAULT_CONNECT_TIMEOUT, v.positive("connect_timeout", allow_none=False),
            "Seconds to establish a connection, at most `timeout` (raise it on a slow network).", "float"),
    _client("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES, v.integer("max_response_bytes", 1, allow_none=True),
            "Largest reply body accepted (256 MiB); a larger one is refused as it streams in. None: no cap.",
            "int | None"),
    _client("max_retries", DEFAULT_MAX_RETRIES, v.integer("max_retries", 0, allow_none=False),
            "Retries after the first attempt, for transient failures.", "int"),
    _client("max_concurrency", DEFAULT_MAX_CONCURRENCY, v.integer("max_concurrency", 1, allow_none=False),
            "Requests in flight at once (the window narrows on overload).", "int"),
    _client("requests_per_minute", None, v.positive("requests_per_minute", allow_none=True),
            "Requests per rolling minute, each choice counted (as Fireworks counts `n`).", "float | None"),
    _client("tokens_per_minute", None, v.positive("tokens_per_minute", allow_none=True),
            "Prompt + generated tokens per rolling minute (`max_tokens` reserved, settled from usage).",
            "float | None"),
    _client("prompt_tokens_per_minute", None, v.positive("prompt_tokens_per_minute", allow_none=True),
            "Prompt tokens per rolling minute, cached ones included (Fireworks' prompt TPM).", "float | None"),
    _client("generated_tokens_per_minute", None, v.positive("generated_tokens_per_minute", allow_none=True),
            "Generated tokens per rolling minute (`max_tokens` reserved, settled from usage).", "float | None"),
    _client("cache_dir", DEFAULT_CACHE_DIR, v.cache_dir, "Directory of the local sample cache.", "str | PathLike"),
)

_BY_NAME: Final[Mapping[str, Option]] = {option.name: option for option in OPTIONS}
CLIENT_OPTIONS: Final = frozenset(o.name for o in OPTIONS if o.scope == "client")
CALL_OPTIONS: Final = frozenset(o.name for o in OPTIONS if o.scope == "call")
SENT_OPTIONS: Final[tuple[Option, ...]] = tuple(o for o in OPTIONS if o.sent)


def by_name(name: str) -> Option:
    """The option called ``name`` (KeyError if none)."""
    return _BY_NAME[name]


def check_known(options: Iterable[str], *, extra: Iterable[str] = ()) -> None:
    """Raise for names that are no option, naming each and suggesting the closest for the first."""
    allowed = [*_BY_NAME, *extra]
    unknown = [name for name in options if name not in allowed]
    if unknown:
        first = unknown[0]
        more = f" (and {', '.join(map(repr, unknown[1:]))})" if unknown[1:] else ""
        raise ValidationError(
            first,
            None,
            "unknown option",
            message=f"unknown option {first!r}{did_you_mean(first, allowed)}{more}; the service rejects unknown "
            "fields. Valid options are: " + ", ".join(allowed),
        )


def check_call_options(options: Iterable[str], *, where: str = "generate") -> None:
    """Raise if a client-scoped option is passed per call, pointing at ``with_options``."""
    names = list(options)
    check_known(names)
    for name in names:
        if name in CLIENT_OPTIONS:
            raise ValidationError(
                name,
                None,
                "a client option",
                message=f"{name} is fixed when the client is created and cannot be passed to {where}(); use "
                f"client.with_options({name}=...) for a client with a different {name} (it shares the rest)",
            )


def options_markdown() -> str:
    """The options table for ``docs/usage.md`` (a test keeps the docs equal to it)."""
    lines = [
        "| option | default | scope | sent | cache key | what it does |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for o in OPTIONS:
        default = "required" if o.default is REQUIRED else f"`{o.default!r}`"
        sent = f"`{o.field}`" if o.sent else "no"
        key = "yes" if o.shapes_output else "via the prompt" if o.shapes_prompt else "no"
        lines.append(f"| `{o.name}` | {default} | {o.scope} | {sent} | {key} | {o.doc} |")
    return "\n".join(lines) + "\n"
