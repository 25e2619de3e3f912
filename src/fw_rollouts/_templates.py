"""Chat templates: messages -> the exact prompt string, and generated text -> (reasoning, content).

The completions endpoint takes a raw string, so the chat template is applied here,
client-side. The built-in templates reproduce the models' Hugging Face templates for
plain chat (system/user/assistant turns, no tools):

* DeepSeek-R1-Distill (Qwen and Llama distills):
  ``<｜begin▁of▁sentence｜>{system}<｜User｜>{user}<｜Assistant｜><think>\\n``
* Llama 3.1 / 3.3 instruct: header blocks ending in ``<|eot_id|>``. Fireworks' own serving template
  leaves out the Hugging Face default system block ("Cutting Knowledge Date ..."), so the
  default here does too; ``"llama3.1-hf"`` keeps it, byte for byte as Hugging Face renders it.
* gpt-oss (harmony): ``<|start|>{role}<|message|>{content}<|end|>``, generation prompt
  ``<|start|>assistant``; the system block carries "Current date" and "Reasoning" lines
  (``chat_template_kwargs``: ``current_date``, ``reasoning_effort``, ``model_identity``). The date is
  :data:`HARMONY_DEFAULT_DATE` unless given, never the clock's, so a prompt is the same every day.

Any other template can be given as a Jinja string (rendered like ``transformers`` does).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from ._exceptions import ConfigurationError

__all__ = [
    "BUILTIN_TEMPLATES",
    "HARMONY_DEFAULT_DATE",
    "ChatTemplate",
    "DeepSeekR1DistillTemplate",
    "HarmonyTemplate",
    "JinjaTemplate",
    "Llama31Template",
    "Message",
    "split_think",
    "template_for_model",
]

Message = Mapping[str, Any]

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@runtime_checkable
class ChatTemplate(Protocol):
    """Renders chat messages into a prompt string and splits the model's output."""

    name: str

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt for ``messages`` followed by the assistant's generation prompt."""
        ...

    def open_reasoning(self, prompt: str, reasoning: str) -> str:
        """Extend a rendered prompt so the assistant's reasoning starts with ``reasoning``."""
        ...

    def continue_assistant(self, prompt: str, text: str) -> str:
        """Extend a rendered prompt so the assistant's reply starts with ``text`` (a prefill)."""
        ...

    def split_reasoning(self, generated: str, prompt: str) -> tuple[str, str, bool | None]:
        """(reasoning, content, completed_reasoning) of the generated text."""
        ...


def _in_open_think(prompt: str) -> bool:
    opened = prompt.rfind(THINK_OPEN)
    return opened != -1 and prompt.find(THINK_CLOSE, opened) == -1


def split_think(generated: str, prompt: str) -> tuple[str, str, bool | None]:
    """Split ``<think>``-style output at the first ``</think>``.

    The reasoning is open when the prompt ends inside a ``<think>`` block (the R1
    generation prompt, or an injected thought) or when the output opens one itself.
    """
    close = generated.find(THINK_CLOSE)
    if close != -1:
        reasoning = generated[:close]
        stripped = reasoning.lstrip()
        if stripped.startswith(THINK_OPEN):
            reasoning = stripped[len(THINK_OPEN) :]
        return reasoning, generated[close + len(THINK_CLOSE) :], True
    if _in_open_think(prompt):
        return generated, "", False
    stripped = generated.lstrip()
    if stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN) :], "", False
    return "", generated, None


class _ThinkTagTemplate:
    """Shared behaviour of templates whose models reason inside ``<think>`` tags."""

    name = "think"

    def open_reasoning(self, prompt: str, reasoning: str) -> str:
        """Append the thought; reuse the template's own ``<think>`` if it already opened one."""
        if _in_open_think(prompt):
            if prompt.endswith("\n") and reasoning.startswith("\n"):
                reasoning = reasoning[1:]
            return prompt + reasoning
        return prompt + THINK_OPEN + reasoning

    def continue_assistant(self, prompt: str, text: str) -> str:
        """Append a prefill; a prefill that starts with ``<think>`` continues the reasoning."""
        if text.startswith(THINK_OPEN):
            return self.open_reasoning(prompt, text[len(THINK_OPEN) :])
        if _in_open_think(prompt):
            # An answer-only prefill where the template opened a thought: close it empty, as R1 does.
            return prompt.rstrip("\n") + "\n\n" + THINK_CLOSE + "\n\n" + text
        return prompt + text

    def split_reasoning(self, generated: str, prompt: str) -> tuple[str, str, bool | None]:
        """Split at ``</think>``."""
        return split_think(generated, prompt)


class DeepSeekR1DistillTemplate(_ThinkTagTemplate):
    """The DeepSeek-R1-Distill chat template (Qwen 1.5B/7B/14B/32B and Llama 8B/70B distills)."""

    name = "deepseek-r1-distill"
    bos_token = "<｜begin▁of▁sentence｜>"
    eos_token = "<｜end▁of▁sentence｜>"

    def render(self, messages: Sequence[Message]) -> str:
        """``<｜begin▁of▁sentence｜>{system}<｜User｜>...<｜Assistant｜><think>\\n``."""
        system = ""
        for m in messages:
            if m["role"] == "system":
                system = _text(m)  # the template keeps the last system message
        parts = [self.bos_token, system]
        for m in messages:
            role = m["role"]
            _no_tools(self.name, role)
            if role == "user":
                parts.append("<｜User｜>" + _text(m))
            elif role == "assistant":
                content = _text(m)
                if THINK_CLOSE in content:
                    content = content.split(THINK_CLOSE)[-1]
                parts.append("<｜Assistant｜>" + content + self.eos_token)
        parts.append("<｜Assistant｜><think>\n")
        return "".join(parts)


_LLAMA_HF_SYSTEM = "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n"


class Llama31Template(_ThinkTagTemplate):
    """Llama 3.1 / 3.3 instruct.

    ``hf_system_block=False`` (the default, as Fireworks serves it) renders a system
    block only for a system message; ``True`` adds Hugging Face's "Cutting Knowledge
    Date" system block exactly as ``transformers`` renders the model's template.
    """

    bos_token = "<|begin_of_text|>"

    def __init__(self, *, hf_system_block: bool = False, date_string: str = "26 Jul 2024") -> None:
        self.hf_system_block = hf_system_block
        self.date_string = date_string
        self.name = "llama3.1-hf" if hf_system_block else "llama3.1"

    def render(self, messages: Sequence[Message]) -> str:
        """Header blocks ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>``."""
        rest = list(messages)
        system: str | None = None
        if rest and rest[0]["role"] == "system":
            system = _text(rest.pop(0)).strip()
        parts = [self.bos_token]
        if self.hf_system_block:
            body = _LLAMA_HF_SYSTEM.format(date=self.date_string) + (system or "")
            parts.append(_llama_block("system", body))
        elif system is not None:
            parts.append(_llama_block("system", system))
        for m in rest:
            _no_tools(self.name, m["role"])
            parts.append(_llama_block(str(m["role"]), _text(m).strip()))
        parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
        return "".join(parts)


def _llama_block(role: str, content: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"


_HARMONY_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
_HARMONY_CHANNEL = re.compile(r"<\|channel\|>(\w+)(?:[^<]*)<\|message\|>")
_HARMONY_TERMINATORS = ("<|end|>", "<|return|>", "<|call|>")
_HARMONY_STRIPPED = re.compile(r"^\s*analysis(.*?)assistant\s*final(.*)$", re.S)


HARMONY_DEFAULT_DATE: Final = "2025-06-28"
"""The "Current date" a harmony prompt states unless ``current_date`` is given: the date of OpenAI's harmony
guide and of openai-harmony's reference renderings, so the default prompt is the one published. Fixed rather
than today's (which the model's own template renders): the date is part of the prompt, and so of every
sample's cache key, which would otherwise change at midnight UTC."""


class HarmonyTemplate:
    """gpt-oss's harmony format, as its Hugging Face template renders plain chat.

    The system block states a date: ``current_date="YYYY-MM-DD"``, by default
    :data:`HARMONY_DEFAULT_DATE` (a fixed date, so the prompt, and so the cache key, is the same
    every day), or ``"today"`` for today's date in UTC at each render, as the model's own
    template does.
    """

    name = "harmony"

    def __init__(
        self,
        *,
        reasoning_effort: str = "medium",
        current_date: str | None = None,
        model_identity: str = _HARMONY_IDENTITY,
    ) -> None:
        if reasoning_effort not in ("low", "medium", "high"):
            raise ConfigurationError(
                f"gpt-oss reasoning_effort={reasoning_effort!r} is not one of 'low', 'medium', 'high'"
            )
        if current_date is not None and (not isinstance(current_date, str) or not current_date.strip()):
            raise ConfigurationError(
                f"gpt-oss current_date={current_date!r} is not a date string ('YYYY-MM-DD', or 'today')"
            )
        self.reasoning_effort = reasoning_effort
        self.current_date = HARMONY_DEFAULT_DATE if current_date is None else current_date
        self.model_identity = model_identity

    def render(self, messages: Sequence[Message]) -> str:
        """System block, optional developer block, the turns, then ``<|start|>assistant``."""
        date = self.current_date
        if date == "today":
            date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        system = (
            f"{self.model_identity}\nKnowledge cutoff: 2024-06\nCurrent date: {date}\n\n"
            f"Reasoning: {self.reasoning_effort}\n\n"
            "# Valid channels: analysis, commentary, final. Channel must be included for every message."
        )
        parts = [f"<|start|>system<|message|>{system}<|end|>"]
        rest = list(messages)
        if rest and rest[0]["role"] in ("system", "developer"):
            parts.append(f"<|start|>developer<|message|># Instructions\n\n{_text(rest.pop(0))}\n\n<|end|>")
        for m in rest:
            role = m["role"]
            if role == "assistant":
                parts.append(f"<|start|>assistant<|channel|>final<|message|>{_text(m)}<|end|>")
            elif role == "user":
                parts.append(f"<|start|>user<|message|>{_text(m)}<|end|>")
            else:
                # The model's template renders only the first system/developer message.
                _no_tools(self.name, role)
        parts.append("<|start|>assistant")
        return "".join(parts)

    def open_reasoning(self, prompt: str, reasoning: str) -> str:
        """Open the analysis channel with ``reasoning`` as its start."""
        return prompt + "<|channel|>analysis<|message|>" + reasoning

    def continue_assistant(self, prompt: str, text: str) -> str:
        """A ``<think>`` prefill opens the analysis channel; anything else starts the final answer."""
        if text.startswith(THINK_OPEN):
            return self.open_reasoning(prompt, text[len(THINK_OPEN) :])
        return prompt + "<|channel|>final<|message|>" + text

    def split_reasoning(self, generated: str, prompt: str) -> tuple[str, str, bool | None]:
        """Analysis-channel text is the reasoning, final-channel text the content."""
        tail = prompt[prompt.rfind("<|start|>assistant") :] if "<|start|>assistant" in prompt else ""
        channel: str | None = None
        last_open = tail.rfind("<|message|>")
        if last_open != -1 and not any(t in tail[last_open:] for t in _HARMONY_TERMINATORS):
            found = _HARMONY_CHANNEL.findall(tail)
            channel = found[-1] if found else None
        if "<|channel|>" not in generated and "<|message|>" not in generated and channel is None:
            return _split_stripped_harmony(generated)
        reasoning: list[str] = []
        content: list[str] = []
        completed: bool | None = None
        pos = 0
        while pos <= len(generated):
            if channel is None:
                match = _HARMONY_CHANNEL.search(generated, pos)
                if match is None:
                    break
                channel, pos = match.group(1), match.end()
            end = min((i for i in (generated.find(t, pos) for t in _HARMONY_TERMINATORS) if i != -1), default=-1)
            body = generated[pos:] if end == -1 else generated[pos:end]
            if channel == "analysis":
                reasoning.append(body)
                completed = end != -1
            elif channel == "final":
                content.append(body)
                completed = True if completed is None and reasoning else completed
            if end == -1:
                break
            pos, channel = end, None
        if content and reasoning:
            completed = True
        return "".join(reasoning), "".join(content), completed


def _split_stripped_harmony(generated: str) -> tuple[str, str, bool | None]:
    """Servers that drop special tokens leave ``analysis...assistantfinal...``."""
    match = _HARMONY_STRIPPED.match(generated)
    if match:
        return match.group(1), match.group(2), True
    stripped = generated.lstrip()
    if stripped.startswith("analysis"):
        return stripped[len("analysis") :], "", False
    if stripped.startswith("final"):
        return "", stripped[len("final") :], None
    return "", generated, None


class JinjaTemplate(_ThinkTagTemplate):
    """A chat template given as a Jinja string, rendered the way ``transformers`` renders them.

    ``variables`` are passed to the template (for example ``bos_token``).
    """

    def __init__(self, source: str, variables: Mapping[str, Any] | None = None) -> None:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        def strftime_now(fmt: str) -> str:
            return datetime.datetime.now().strftime(fmt)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = strftime_now
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigurationError(f"chat_template is not a valid Jinja template: {exc}") from None
        self.source = source
        self.variables = dict(variables or {})
        self.name = "jinja"

    def render(self, messages: Sequence[Message]) -> str:
        """Render with ``add_generation_prompt=True``."""
        import jinja2

        context = {"bos_token": "", "eos_token": "", **self.variables}
        try:
            return self._template.render(messages=[dict(m) for m in messages], add_generation_prompt=True, **context)
        except jinja2.TemplateError as exc:
            raise ConfigurationError(f"chat_template failed to render: {exc}") from None


def _no_tools(template: str, role: Any) -> None:
    if role == "tool":
        raise ConfigurationError(
            f"the built-in {template!r} template does not render tool messages; pass chat_template= "
            "(the model's Jinja template) to use tools"
        )


def _text(message: Message) -> str:
    content = message.get("content")
    return "" if content is None else str(content)


def _builtin(name: str, kwargs: Mapping[str, Any]) -> ChatTemplate:
    if name == "deepseek-r1-distill":
        _no_kwargs(name, kwargs)
        return DeepSeekR1DistillTemplate()
    if name in ("llama3.1", "llama3.1-hf"):
        unknown = set(kwargs) - {"date_string"}
        _no_kwargs(name, {k: kwargs[k] for k in unknown})
        return Llama31Template(hf_system_block=name == "llama3.1-hf", **kwargs)
    if name == "harmony":
        unknown = set(kwargs) - {"reasoning_effort", "current_date", "model_identity"}
        _no_kwargs(name, {k: kwargs[k] for k in unknown})
        return HarmonyTemplate(**kwargs)
    raise KeyError(name)


def _no_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        raise ConfigurationError(f"chat_template_kwargs {sorted(kwargs)} mean nothing to the {name!r} template")


BUILTIN_TEMPLATES = ("deepseek-r1-distill", "harmony", "llama3.1", "llama3.1-hf")
"""Names accepted by ``chat_template=`` besides a Jinja string."""

# Model-id fragments -> built-in template. Matched against the model id's last path segment.
_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^deepseek-r1-distill-(qwen|llama)-"), "deepseek-r1-distill"),
    (re.compile(r"^llama-v3p[13]-\d+b-instruct"), "llama3.1"),
    (re.compile(r"^gpt-oss-"), "harmony"),
)


def template_for_model(
    model: str, chat_template: str | ChatTemplate | None = None, kwargs: Mapping[str, Any] | None = None
) -> ChatTemplate | None:
    """The template to use for ``model``: an explicit ``chat_template`` (a built-in name, a
    Jinja string or a :class:`ChatTemplate`), else the model family's built-in one, else None."""
    kwargs = dict(kwargs or {})
    if chat_template is not None and not isinstance(chat_template, str):
        return chat_template
    if isinstance(chat_template, str):
        if chat_template in BUILTIN_TEMPLATES:
            return _builtin(chat_template, kwargs)
        if "{{" not in chat_template and "{%" not in chat_template:
            raise ConfigurationError(
                f"chat_template={chat_template[:60]!r} is neither a built-in template "
                f"({', '.join(BUILTIN_TEMPLATES)}) nor a Jinja template string"
            )
        return JinjaTemplate(chat_template, kwargs)
    leaf = model.split("#", 1)[0].rsplit("/", 1)[-1].lower()
    for pattern, name in _FAMILIES:
        if pattern.search(leaf):
            return _builtin(name, kwargs)
    return None
