"""Chat requests: rendering ``messages`` into a prompt, and splitting a generation into reasoning and answer.

The chat endpoint renders the conversation with the model family's chat template (the same families the toy
model knows: DeepSeek-R1-distill, Llama 3, harmony, and a plain fallback) and then generates exactly as the
completions endpoint would for that prompt. A final ``assistant`` message is a prefill: the reply continues
it instead of starting a new turn (as OpenRouter does; unverified on Fireworks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ._model import FAM_HARMONY, FAM_LLAMA, FAM_R1, M_ANALYSIS, M_FINAL, M_THINK, State, family_of

__all__ = ["ROLES", "Message", "Span", "render_messages", "split_generation"]

#: Roles a chat message may have.
ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")

#: One validated message: (role, text content).
Message = tuple[str, str]
#: A part of a generated text: (start, end, kind) with kind ``"reasoning"`` or ``"content"``. Text outside
#: every span (``</think>``, harmony headers) belongs to neither.
Span = tuple[int, int, str]

R1_BOS: Final = "<｜begin▁of▁sentence｜>"
R1_EOS: Final = "<｜end▁of▁sentence｜>"
_R1_USER: Final = "<｜User｜>"
_R1_ASSISTANT: Final = "<｜Assistant｜>"
_THINK: Final = "<think>"
_END_THINK: Final = "</think>"

# Fireworks' llama-v3p1 chat prompts cost 10 tokens more than their content: no default system block.
_L3_BOS: Final = "<|begin_of_text|>"
_L3_HEAD: Final = "<|start_header_id|>{role}<|end_header_id|>\n\n"
_L3_EOT: Final = "<|eot_id|>"

# The HF harmony template without its ``Current date:`` line, so that a rendered prompt never changes.
_H_SYSTEM: Final = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n\nReasoning: {effort}\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
)
_H_CHANNEL: Final = "<|channel|>"
_H_MESSAGE: Final = "<|message|>"
_H_END: Final = "<|end|>"


def _continue_think(prompt: str, prefill: str) -> str:
    """A prefill after a generation prompt that opened ``<think>\\n`` (as the SDK's own templates do it)."""
    if prefill.startswith(_THINK):
        rest = prefill[len(_THINK) :]
        return prompt + (rest[1:] if rest.startswith("\n") else rest)
    # An answer-only prefill: close the thought empty first.
    return prompt.rstrip("\n") + "\n\n" + _END_THINK + "\n\n" + prefill


def _render_r1(messages: Sequence[Message], prefill: str | None, thinking: bool) -> str:
    system = ""
    for role, content in messages:
        if role in ("system", "developer"):
            system = content  # the template keeps the last system message
    out = [R1_BOS, system]
    for role, content in messages:
        if role == "assistant":
            # The template drops the reasoning of earlier assistant turns.
            out.append(_R1_ASSISTANT + content.split(_END_THINK)[-1] + R1_EOS)
        elif role in ("tool", "function"):
            out.append("<｜tool▁output▁begin｜>" + content + "<｜tool▁output▁end｜>")
        elif role == "user":
            out.append(_R1_USER + content)
    prompt = "".join(out) + _R1_ASSISTANT + _THINK + "\n"
    if prefill is not None:
        return _continue_think(prompt, prefill)
    return prompt if thinking else _continue_think(prompt, "")


def _render_llama(messages: Sequence[Message], prefill: str | None) -> str:
    out = [_L3_BOS]
    for role, content in messages:
        name = "ipython" if role in ("tool", "function") else role
        out.append(_L3_HEAD.format(role=name) + content.strip() + _L3_EOT)
    out.append(_L3_HEAD.format(role="assistant") + (prefill or ""))
    return "".join(out)


def _render_harmony(messages: Sequence[Message], prefill: str | None, effort: str) -> str:
    out = [_H_SYSTEM.format(effort=effort)]
    rest = list(messages)
    if rest and rest[0][0] in ("system", "developer"):
        out.append(f"<|start|>developer<|message|># Instructions\n\n{rest.pop(0)[1]}\n\n<|end|>")
    for role, content in rest:
        if role == "assistant":
            out.append(f"<|start|>assistant<|channel|>final<|message|>{content}<|end|>")
        elif role in ("tool", "function"):
            out.append(f"<|start|>functions to=assistant<|channel|>commentary<|message|>{content}<|end|>")
        elif role == "user":
            out.append(f"<|start|>user<|message|>{content}<|end|>")
        # Like the model's template, later system and developer messages are left out.
    out.append("<|start|>assistant")
    if prefill is not None:
        if prefill.startswith(_THINK):
            out.append("<|channel|>analysis<|message|>" + prefill[len(_THINK) :])
        else:
            out.append("<|channel|>final<|message|>" + prefill)
    return "".join(out)


def _render_plain(messages: Sequence[Message], prefill: str | None) -> str:
    out = [f"{role.capitalize()}: {content}\n\n" for role, content in messages]
    out.append("Assistant:" if prefill is None else "Assistant: " + prefill)
    return "".join(out)


def render_messages(model: str, messages: Sequence[Message], effort: str | None, thinking: bool = True) -> str:
    """Render a conversation into the prompt the model of this name would see.

    The renderings follow the SDK's built-in templates (``fw_rollouts._templates``), so a chat request and a
    completions request with the SDK-rendered prompt generate the same text; harmony has no ``Current date``
    line. ``effort`` is the request's ``reasoning_effort`` (harmony's ``Reasoning:`` line; default medium);
    ``thinking=False`` (``reasoning_effort: "none"`` or ``thinking: {"type": "disabled"}``) closes an R1
    model's ``<think>`` block at once. A final assistant message is a prefill the reply continues; one that
    starts with ``<think>`` continues the reasoning.
    """
    turns = list(messages)
    prefill: str | None = None
    if turns and turns[-1][0] == "assistant":
        prefill = turns.pop()[1]
    family = family_of(model)
    if family == FAM_R1:
        return _render_r1(turns, prefill, thinking)
    if family == FAM_LLAMA:
        return _render_llama(turns, prefill)
    if family == FAM_HARMONY:
        return _render_harmony(turns, prefill, effort if effort in ("low", "medium", "high") else "medium")
    return _render_plain(turns, prefill)


def _harmony_spans(text: str, state: State) -> list[Span]:
    spans: list[Span] = []
    pos = 0
    # Generation that starts inside a message body (after a prefill) continues that body.
    channel = "reasoning" if state.mode == M_ANALYSIS else "content" if state.mode == M_FINAL else None
    n = len(text)
    while pos <= n:
        if channel is not None:
            end = text.find(_H_END, pos)
            stop = n if end < 0 else end
            spans.append((pos, stop, channel))
            if end < 0:
                break
            pos = end + len(_H_END)
            channel = None
            continue
        head = text.find(_H_CHANNEL, pos)
        if head < 0:
            break
        body = text.find(_H_MESSAGE, head)
        if body < 0:
            break
        name = text[head + len(_H_CHANNEL) : body]
        channel = "content" if name.startswith("final") else "reasoning"
        pos = body + len(_H_MESSAGE)
    return spans


def split_generation(text: str, state: State) -> list[Span] | None:
    """Where the reasoning and the answer are in a generated ``text``; None for a model without reasoning.

    ``state`` is the format state at the end of the prompt: generation inside an open ``<think>`` (or one
    that opens it) is reasoning up to ``</think>`` and answer after it; harmony's ``analysis`` messages are
    reasoning and its ``final`` message the answer.
    """
    if state.family == FAM_HARMONY:
        return _harmony_spans(text, state)
    start = 0
    if state.mode != M_THINK:
        if not text.startswith(_THINK):
            return None
        start = len(_THINK)
    end = text.find(_END_THINK, start)
    if end < 0:
        return [(start, len(text), "reasoning")]
    return [(start, end, "reasoning"), (end + len(_END_THINK), len(text), "content")]
