"""Model names and prompts: aliases -> Fireworks ids, and a user's prompt -> the exact string sent.

A string prompt is one user message; a list is chat messages. Both go through the
model's chat template. Thinking injection works as in ``rollouts``: in a string prompt,
the text after ``<think>`` becomes the start of the assistant's reasoning, which the
model continues. A chat list whose last message is the assistant's is a prefill that
the model continues.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._exceptions import ConfigurationError, InvalidTypeError, ValidationError
from ._suggest import closest
from ._templates import THINK_OPEN, ChatTemplate, split_think

__all__ = [
    "FIREWORKS_MODEL_PREFIX",
    "MODEL_ALIASES",
    "RenderedPrompt",
    "id_prompt",
    "model_hint",
    "render_prompt",
    "resolve_model",
    "validate_prompt",
]

FIREWORKS_MODEL_PREFIX = "accounts/fireworks/models/"

MODEL_ALIASES: dict[str, str] = {
    "qwen-15b": FIREWORKS_MODEL_PREFIX + "deepseek-r1-distill-qwen-1p5b",
    "llama-v3p1-8b": FIREWORKS_MODEL_PREFIX + "llama-v3p1-8b-instruct",
    "gpt-oss-20b": FIREWORKS_MODEL_PREFIX + "gpt-oss-20b",
    "gpt-oss-120b": FIREWORKS_MODEL_PREFIX + "gpt-oss-120b",
}
"""Short names accepted for ``model`` (those of the peer package, plus gpt-oss-120b)."""

_ROLES = ("system", "developer", "user", "assistant", "tool")


def resolve_model(model: str) -> str:
    """The full model id: an alias, ``org/name`` or a bare name becomes ``accounts/fireworks/models/<name>``;
    ``accounts/...`` ids (models or deployments, with an optional ``#deployment``) pass unchanged."""
    if not isinstance(model, str):
        raise InvalidTypeError("model", model, "a model name such as 'qwen-15b' or 'accounts/fireworks/models/<id>'")
    name = model.strip()
    if not name:
        raise ValidationError("model", model, "a non-empty model name")
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]
    if name.startswith("accounts/"):
        return name
    if "/" in name:
        org_and_rest = name.split("/")
        if len(org_and_rest) != 2 or not all(org_and_rest):
            raise ValidationError(
                "model", model, "an alias, 'org/name', a bare name or a full 'accounts/<account>/models/<id>' id"
            )
        name = org_and_rest[1]
    return FIREWORKS_MODEL_PREFIX + name


def model_hint(name: str) -> str | None:
    """``"did you mean 'qwen-15b'?"`` when ``name`` looks like a mistyped alias (or the id one stands for), else None.

    ``name`` may be as given or resolved (``accounts/.../models/<name>#<deployment>``); its
    last path segment is compared, ignoring case and separators and reading ``.`` as
    Fireworks' ``p`` (``llama-3.1-8b`` is ``llama-v3p1-8b``). A close spelling is not enough:
    the digits (version, size) must be the same, because ``qwen-7b`` or ``llama-v3p1-70b``
    are other models, not typos.
    """
    leaf = name.split("#", 1)[0].strip().rsplit("/", 1)[-1]
    digits = _digits(leaf)
    # Read afresh each time: MODEL_ALIASES is a plain dict that users may extend.
    known = dict.fromkeys([*MODEL_ALIASES, *(target.rsplit("/", 1)[-1] for target in MODEL_ALIASES.values())])
    match = closest(leaf, [k for k in known if _digits(k) == digits], key=_model_key, cutoff=0.75)
    return None if match is None else f"did you mean {match!r}?"


def _digits(name: str) -> str:
    return "".join(re.findall(r"\d", name))


def _model_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace(".", "p"))


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """The exact prompt to send (a string, or token ids) and how to read the model's output."""

    text: str
    """The prompt string, byte for byte as sent; for a token-id prompt, the text the ids stand for (not sent)."""
    template: ChatTemplate | None
    """The chat template used (None for ``raw=True``)."""
    ids: tuple[int, ...] | None = None
    """The token ids sent instead of ``text``, for a token-id prompt."""

    @property
    def sent(self) -> str | tuple[int, ...]:
        """What goes in the request's ``prompt``: the ids of a token-id prompt, else the text."""
        return self.text if self.ids is None else self.ids

    def identity(self) -> bytes:
        """Bytes that stand for what is sent (hashed into the session-affinity key)."""
        if self.ids is None:
            return self.text.encode("utf-8", "surrogatepass")
        return b"ids:" + ",".join(map(str, self.ids)).encode("ascii")

    def token_estimate(self) -> int:
        """Prompt tokens, until the server says: the ids counted, or four characters per token."""
        return len(self.ids) if self.ids is not None else max(1, len(self.text) // 4)

    def split_reasoning(self, generated: str, prompt: str) -> tuple[str, str, bool | None]:
        """(reasoning, content, completed) of generated text, per the template."""
        if self.template is None:
            return split_think(generated, prompt)
        return self.template.split_reasoning(generated, prompt)


def validate_prompt(prompt: Any) -> None:
    """Reject an empty prompt or malformed chat messages (before any request is sent)."""
    if isinstance(prompt, str):
        if not prompt:
            raise ValidationError("prompt", prompt, "a non-empty string or a non-empty list of chat messages")
        _check_encodable("prompt", prompt)
        return
    if not isinstance(prompt, Sequence) or isinstance(prompt, (bytes, bytearray)):
        raise InvalidTypeError(
            "prompt", prompt, "a string or a list of messages like {'role': 'user', 'content': '...'}"
        )
    if prompt and all(type(t) is int for t in prompt):
        raise InvalidTypeError(
            "prompt",
            prompt,
            "a string or a list of chat messages; token ids are sent as an item's prompt_ids, with raw=True: "
            "generate_many([{'prompt_ids': [...], 'prompt': '<their text>'}], raw=True)",
        )
    if not prompt:
        raise ValidationError("prompt", prompt, "a non-empty string or a non-empty list of chat messages")
    for i, message in enumerate(prompt):
        where = f"prompt[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidTypeError(where, message, "a message dict like {'role': 'user', 'content': '...'}")
        role = message.get("role")
        if role not in _ROLES:
            raise ValidationError(f"{where}['role']", role, f"one of {', '.join(_ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise InvalidTypeError(f"{where}['content']", content, "a string")
        _check_encodable(f"{where}['content']", content)


def _check_encodable(where: str, text: str) -> None:
    """Refuse text that cannot be sent as UTF-8: a lone surrogate, as ``errors="surrogateescape"`` leaves them.

    Without this, JSON escapes it (``\\ud800``), the server fails on every retry, and the cache key cannot be
    computed at all.
    """
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise ValidationError(
            where,
            text,
            f"text that can be encoded as UTF-8; it has a lone surrogate {bad!r} at position {exc.start} "
            "(common in data decoded with errors='surrogateescape': decode it with errors='replace', "
            "or remove the character)",
        ) from None


def render_prompt(
    prompt: str | Sequence[Mapping[str, Any]], *, template: ChatTemplate | None, raw: bool
) -> RenderedPrompt:
    """Build the exact prompt string for ``prompt`` (validated first)."""
    validate_prompt(prompt)
    if raw:
        if not isinstance(prompt, str):
            raise ValidationError("prompt", "<list of messages>", "a string when raw=True (it is sent verbatim)")
        return RenderedPrompt(prompt, None)
    if template is None:
        raise ConfigurationError("no chat template")  # the caller names the model; see _config.require_template
    if isinstance(prompt, str):
        if THINK_OPEN in prompt:
            return RenderedPrompt(_inject_thinking(prompt, template), template)
        return RenderedPrompt(template.render([{"role": "user", "content": prompt}]), template)
    messages = list(prompt)
    if messages[-1]["role"] == "assistant":
        base = template.render(messages[:-1])
        return RenderedPrompt(template.continue_assistant(base, str(messages[-1]["content"])), template)
    return RenderedPrompt(template.render(messages), template)


def id_prompt(ids: tuple[int, ...], text: str, *, raw: bool) -> RenderedPrompt:
    """A token-id prompt: ``ids`` sent as they are, ``text`` (what they stand for) kept for display only.

    Ids are the model's own input, which no chat template applies to: ``raw`` must be True.
    """
    if not raw:
        raise ValidationError(
            "raw", raw, "True for a prompt of token ids (they are sent as they are: no chat template applies)"
        )
    if text:
        _check_encodable("prompt", text)
    return RenderedPrompt(text, None, ids)


def _inject_thinking(prompt: str, template: ChatTemplate) -> str:
    if prompt.count(THINK_OPEN) > 1:
        warnings.warn(
            "Multiple <think> tags detected; the prompt is split at the first one.", UserWarning, stacklevel=4
        )
    user_part, thought = prompt.split(THINK_OPEN, 1)
    if user_part and thought.endswith(" "):
        warnings.warn(
            "You have included a <think> token, but your post-<think> text has a trailing space. "
            "This is likely to create tokenization issues (e.g., increases the likelihood of the next "
            "token being a number). You should probably change your prompt.",
            UserWarning,
            stacklevel=4,
        )
    user_part = user_part.strip()
    messages = [{"role": "user", "content": user_part}] if user_part else []
    return template.open_reasoning(template.render(messages), thought)
