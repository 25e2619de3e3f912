"""Reasoning formats: per template family, how a model's reasoning is continued from a prefix and how its
answer is forced.

Resampling from a reasoning step sends the prompt with the model's own reasoning written up to that step,
in the place the model writes it. Where that is depends on the chat format:

* ``<think>`` (DeepSeek-R1 distills, and any other ``<think>``-style template): the reasoning goes after the
  template's ``<think>``; an answer is forced by closing it, ``"\\n</think>\\n\\n" + cue``.
* Llama 3.1 (no reasoning channel): the reasoning is the assistant's own reply, a prefill; an answer is forced
  after a paragraph break, ``"\\n\\n" + cue``.
* harmony (gpt-oss): the reasoning is the analysis channel; an answer is forced by ending it and opening the
  final channel, ``"<|end|><|start|>assistant<|channel|>final<|message|>" + cue``.
* raw (``raw=True``): the prompt string ends where the reasoning goes (the published
  ``"... Solution: \\n<think>\\n{prefix}"``); it is forced like ``<think>``.

Each format is a small strategy object (:class:`ReasoningFormat`) that builds prompt strings and reads a
sample's reasoning and answer text back; :func:`format_for` picks one for a template.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from ._models import FwResponse
from ._templates import (
    THINK_CLOSE,
    ChatTemplate,
    HarmonyTemplate,
    Llama31Template,
)

__all__ = [
    "DEFAULT_ANSWER_CUE",
    "HarmonyFormat",
    "LlamaFormat",
    "RawFormat",
    "ReasoningFormat",
    "ThinkFormat",
    "format_for",
]

DEFAULT_ANSWER_CUE = "Therefore, the final answers is \\boxed{"
"""The Thought Anchors forced-answer cue, their typo ("answers") kept: their numbers were measured with it."""

_HARMONY_FINAL = "<|end|><|start|>assistant<|channel|>final<|message|>"


class ReasoningFormat(Protocol):
    """Where a template family's reasoning goes, how an answer is forced, and how a sample is read back."""

    name: str

    def continue_reasoning(self, base: str, prefix: str) -> str:
        """The prompt that has the model continue its reasoning after ``prefix`` (``base``: the rendered prompt)."""
        ...

    def force_answer(self, continued: str, prefix: str, cue: str) -> str:
        """``continued`` (from :meth:`continue_reasoning`) with the reasoning closed and ``cue`` appended."""
        ...

    def sample(self, response: FwResponse, prompt: str) -> FwResponse:
        """``response`` (a sample of the raw ``prompt``) with its reasoning and content split as this format
        writes them."""
        ...

    def reasoning_text(self, response: FwResponse) -> str:
        """The reasoning a sample generated (for the Llama format, its whole reply)."""
        ...

    def answer_text(self, response: FwResponse) -> str:
        """The text a sample's answer is read from (after the reasoning; for the Llama format, its whole reply)."""
        ...


class ThinkFormat:
    """``<think>`` reasoning (R1 distills, or any template with ``<think>`` tags): the template's own
    ``open_reasoning`` places the prefix, ``"\\n</think>\\n\\n"`` closes it."""

    name = "think"

    def __init__(self, template: ChatTemplate) -> None:
        self.template = template

    def continue_reasoning(self, base: str, prefix: str) -> str:
        """``template.open_reasoning(base, prefix)``."""
        return self.template.open_reasoning(base, prefix)

    def force_answer(self, continued: str, prefix: str, cue: str) -> str:
        """``continued + "\\n</think>\\n\\n" + cue``."""
        return continued + "\n" + THINK_CLOSE + "\n\n" + cue

    def sample(self, response: FwResponse, prompt: str) -> FwResponse:
        """Unchanged: the client split it at ``</think>`` already."""
        return response

    def reasoning_text(self, response: FwResponse) -> str:
        """``response.reasoning``."""
        return response.reasoning

    def answer_text(self, response: FwResponse) -> str:
        """``response.content``."""
        return response.content

    def __repr__(self) -> str:
        return f"ThinkFormat(template={self.template.name!r})"


class RawFormat(ThinkFormat):
    """``raw=True``: the prompt string ends where the reasoning goes, so the prompt is ``prompt + prefix``.

    Forced like ``<think>``. A prompt without an open ``<think>`` (a base model) has no reasoning split: the
    whole generated text is both the reasoning and the answer text.
    """

    name = "raw"

    def __init__(self) -> None:
        pass

    def continue_reasoning(self, base: str, prefix: str) -> str:
        """``base + prefix``."""
        return base + prefix

    def reasoning_text(self, response: FwResponse) -> str:
        """The reasoning before ``</think>``, or all the text when the prompt opened no ``<think>``."""
        return response.reasoning if response.completed_reasoning is not None else response.full

    def answer_text(self, response: FwResponse) -> str:
        """The content after ``</think>``, or all the text when the prompt opened no ``<think>``."""
        return response.content if response.completed_reasoning is not None else response.full

    def __repr__(self) -> str:
        return "RawFormat()"


class LlamaFormat:
    """Llama 3.1: no reasoning channel, so the reasoning is the assistant's reply itself, continued as a
    prefill (``template.continue_assistant``, no think tags); an answer is forced after ``"\\n\\n"``."""

    name = "llama"

    def __init__(self, template: ChatTemplate) -> None:
        self.template = template

    def continue_reasoning(self, base: str, prefix: str) -> str:
        """``template.continue_assistant(base, prefix)``."""
        return self.template.continue_assistant(base, prefix)

    def force_answer(self, continued: str, prefix: str, cue: str) -> str:
        """``continued + "\\n\\n" + cue`` (no break before the cue when the reply is still empty)."""
        return continued + ("\n\n" if prefix else "") + cue

    def sample(self, response: FwResponse, prompt: str) -> FwResponse:
        """Unchanged (the reply is all content)."""
        return response

    def reasoning_text(self, response: FwResponse) -> str:
        """The whole reply."""
        return response.full

    def answer_text(self, response: FwResponse) -> str:
        """The whole reply."""
        return response.full

    def __repr__(self) -> str:
        return f"LlamaFormat(template={self.template.name!r})"


class HarmonyFormat:
    """gpt-oss's harmony: the prefix opens the analysis channel (``template.open_reasoning``); an answer is
    forced by ending it and opening the final channel."""

    name = "harmony"

    def __init__(self, template: ChatTemplate) -> None:
        self.template = template

    def continue_reasoning(self, base: str, prefix: str) -> str:
        """``template.open_reasoning(base, prefix)``: ``base + "<|channel|>analysis<|message|>" + prefix``."""
        return self.template.open_reasoning(base, prefix)

    def force_answer(self, continued: str, prefix: str, cue: str) -> str:
        """``continued + "<|end|><|start|>assistant<|channel|>final<|message|>" + cue``."""
        return continued + _HARMONY_FINAL + cue

    def sample(self, response: FwResponse, prompt: str) -> FwResponse:
        """The response split into the analysis (reasoning) and final (content) channels.

        The prompts are sent raw, and a raw prompt is read as ``<think>`` text, which harmony is not. Where
        the analysis channel is open decides what the generated text continues, so ``prompt`` is passed in
        (a sample read back from a study file need not carry its prompt).
        """
        reasoning, content, completed = self.template.split_reasoning(response.full, prompt)
        if (reasoning, content, completed) == (response.reasoning, response.content, response.completed_reasoning):
            return response
        return dataclasses.replace(response, reasoning=reasoning, content=content, completed_reasoning=completed)

    def reasoning_text(self, response: FwResponse) -> str:
        """``response.reasoning`` (after :meth:`sample`)."""
        return response.reasoning

    def answer_text(self, response: FwResponse) -> str:
        """``response.content`` (after :meth:`sample`)."""
        return response.content

    def __repr__(self) -> str:
        return f"HarmonyFormat(template={self.template.name!r})"


def format_for(template: ChatTemplate | None) -> ReasoningFormat:
    """The reasoning format of ``template`` (None: ``raw=True``).

    Llama 3.1 and harmony have their own; every other template (the R1 distills, a Jinja template, a custom
    :class:`ChatTemplate`) is taken to reason in ``<think>`` tags through its ``open_reasoning``.
    """
    if template is None:
        return RawFormat()
    if isinstance(template, HarmonyTemplate):
        return HarmonyFormat(template)
    if isinstance(template, Llama31Template):
        return LlamaFormat(template)
    return ThinkFormat(template)


