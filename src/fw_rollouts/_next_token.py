"""The next-token distribution from one short request, and the answer distribution after a forced-answer cue.

Sampling forced answers (close the reasoning, append "Therefore, the final answers is \\boxed{", sample many
continuations, read each answer) costs one request per sample. One request with ``max_tokens=1`` and
``logprobs=5`` shows the top alternatives for the first answer token at once: the distribution is the
server's own, its top ``k`` only, with the mass it did not show reported as :attr:`TokenDistribution.residual_mass`.

It is the FIRST token's distribution only: an answer of several tokens ("12" may be "1" then "2",
"\\frac{1}{2}" is many) is read only up to its first token, so answers that share a first token are one
entry here. Use it where the answers differ in their first token (a digit, a letter, yes/no); sample forced
answers where they do not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._exceptions import InvalidTypeError, ValidationError
from ._models import FwResponse
from ._reasoning_formats import DEFAULT_ANSWER_CUE, format_for
from ._validators import MAX_LOGPROBS

if TYPE_CHECKING:
    from ._client import AsyncFireworks, Prompt

__all__ = [
    "TokenDistribution",
    "forced_answer_distribution",
    "forced_answer_distributions",
    "forced_answer_prompt",
    "next_token_distribution",
    "next_token_distributions",
    "token_distribution",
]


# Fixed by what a next-token request is: one generated token, its alternatives, no echo, one sample per request.
_FIXED = ("max_tokens", "logprobs", "echo", "samples_per_request", "top_logprobs")


@dataclass(frozen=True, slots=True)
class TokenDistribution:
    """The next token's top alternatives after a prompt, as probabilities, from one request.

    Only the server's top ``k`` (at most 5 on Fireworks) are known: :attr:`residual_mass` is what they leave
    over, never spread over guesses. It is the first token's distribution only (see :mod:`the module
    <fw_rollouts._next_token>`): a multi-token answer appears as its first token.
    """

    probs: dict[str, float]
    """Token -> probability, most likely first (the top alternatives the server returned)."""
    logprobs: dict[str, float]
    """Token -> log-probability as the server sent it, in the same order."""
    residual_mass: float
    """``1 - sum(probs)``, clipped at 0: the probability of every token the server did not show."""
    prompt_text: str
    """The exact prompt string sent."""
    cached: bool = False
    """True when the request's reply came from the local cache."""
    finish_reason: str = ""
    """The request's finish reason; ``"stop"`` with no alternatives means the model ended right there."""

    @property
    def top(self) -> str | None:
        """The most likely next token (None when the server showed none)."""
        return next(iter(self.probs), None)

    def answers(self, normalize: Callable[[str], str] | None = None) -> dict[str, float]:
        """The probabilities by answer: tokens that normalise to the same text summed, most likely first.

        ``normalize`` defaults to stripping whitespace (``" 4"`` and ``"4"`` are one answer); tokens that
        normalise to the empty string (a space, a newline) are not answers and are left out, so the values
        may sum to less than ``1 - residual_mass``.
        """
        norm = normalize if normalize is not None else str.strip
        merged: dict[str, float] = {}
        for token, p in self.probs.items():
            key = norm(token)
            if key:
                merged[key] = merged.get(key, 0.0) + p
        return dict(sorted(merged.items(), key=lambda kv: -kv[1]))

    def __repr__(self) -> str:
        shown = ", ".join(f"{t!r}: {p:.3f}" for t, p in self.probs.items())
        return f"TokenDistribution({{{shown}}}, residual_mass={self.residual_mass:.3f})"


def token_distribution(response: FwResponse) -> TokenDistribution:
    """The distribution at the first generated position of ``response`` (pure; what the methods below return).

    The alternatives are that position's ``top_logprobs``, with the chosen token added if the server left it
    out (the content format may); none when nothing was generated.
    """
    if not isinstance(response, FwResponse):
        raise InvalidTypeError("response", response, "an FwResponse")
    generated = response.get_generation_logprobs()
    if generated is None:
        raise ValidationError("response", response, "a sample with logprobs (logprobs=1..5)")
    logprobs: dict[str, float] = {}
    if len(generated):
        first = next(iter(generated))
        logprobs = dict(first.top_logprobs or {})
        if first.logprob is not None and first.token not in logprobs:
            logprobs[first.token] = first.logprob
    ranked = dict(sorted(logprobs.items(), key=lambda kv: -kv[1]))
    probs = {t: math.exp(lp) for t, lp in ranked.items()}
    return TokenDistribution(
        probs=probs,
        logprobs=ranked,
        residual_mass=max(0.0, 1.0 - math.fsum(probs.values())),
        prompt_text=response.prompt,
        cached=response.cached,
        finish_reason=response.finish_reason,
    )


def forced_answer_prompt(
    client: AsyncFireworks,
    prompt: Prompt,
    reasoning_prefix: str,
    *,
    answer_cue: str | None = None,
    raw: bool | None = None,
    **options: Any,
) -> str:
    """The exact prompt that closes the model's reasoning after ``reasoning_prefix`` and asks for the answer.

    ``prompt`` is rendered as :meth:`AsyncFireworks.render` renders it, the reasoning opened with
    ``reasoning_prefix`` (verbatim), then closed for the template's family and followed by ``answer_cue``
    (default the published ``"Therefore, the final answers is \\boxed{"``):

    * R1 ``<think>`` templates, and ``raw=True``: ``"\\n</think>\\n\\n" + cue`` (the published form; a raw
      ``prompt`` is the exact text up to the reasoning, which is appended as it is);
    * harmony (gpt-oss): ``"<|end|><|start|>assistant<|channel|>final<|message|>" + cue``;
    * Llama 3.1 (an assistant prefill): ``"\\n\\n" + cue`` (the cue alone after an empty prefix).

    These are the forced-answer suffixes of step resampling too.
    """
    if not isinstance(reasoning_prefix, str):
        raise InvalidTypeError("reasoning_prefix", reasoning_prefix, "a string (the reasoning so far, verbatim)")
    cue = DEFAULT_ANSWER_CUE if answer_cue is None else answer_cue
    if not isinstance(cue, str):
        raise InvalidTypeError("answer_cue", answer_cue, "a string, or None for the published cue")
    template = client.template_for(raw=raw, **options)
    if template is None:  # raw: the prompt is the text up to the reasoning
        if not isinstance(prompt, str):
            raise ValidationError("prompt", prompt, "a string when raw=True (it is sent verbatim)")
        client.render(prompt, raw=True, **options)  # the same checks as any prompt (empty, unencodable)
        base = prompt
    else:
        base = client.render(prompt, raw=raw, **options)
    # The family's own rules, as step resampling builds its forced answers.
    fmt = format_for(template)
    return fmt.force_answer(fmt.continue_reasoning(base, reasoning_prefix), reasoning_prefix, cue)


def _check_top(top_logprobs: Any) -> int:
    if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int):
        raise InvalidTypeError("top_logprobs", top_logprobs, f"an integer from 1 to {MAX_LOGPROBS}")
    if not 1 <= top_logprobs <= MAX_LOGPROBS:
        raise ValidationError("top_logprobs", top_logprobs, f"an integer from 1 to {MAX_LOGPROBS}")
    return top_logprobs


def _request(options: Mapping[str, Any], top_logprobs: int) -> dict[str, Any]:
    """The call's options: one greedy token with ``top_logprobs`` alternatives, no echo."""
    for name in _FIXED:
        if name in options:
            raise ValidationError(
                name, options[name], "not settable here: a next-token request is one token (max_tokens=1) with "
                "top_logprobs alternatives (logprobs=top_logprobs), no echo, one sample per request"
            )
    # temperature 0: the alternatives are the model's logprobs whatever it is, and a greedy request is the same
    # request every time (one cache entry, whatever the client's default temperature).
    return {"temperature": 0.0, **options, "max_tokens": 1, "logprobs": top_logprobs, "echo": False}


async def next_token_distribution(
    client: AsyncFireworks, prompt: Prompt, *, raw: bool | None = None, top_logprobs: int = 5, **options: Any
) -> TokenDistribution:
    """See :meth:`AsyncFireworks.next_token_distribution`."""
    call = _request(options, _check_top(top_logprobs))
    rollouts = await client.generate(prompt, 1, raw=raw, **call)
    return token_distribution(rollouts[0])


async def next_token_distributions(
    client: AsyncFireworks,
    prompts: Sequence[Prompt],
    *,
    raw: bool | None = None,
    top_logprobs: int = 5,
    **options: Any,
) -> list[TokenDistribution]:
    """See :meth:`AsyncFireworks.next_token_distributions`."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise InvalidTypeError("prompts", prompts, "a list of prompts (strings or chat message lists)")
    call = _request(options, _check_top(top_logprobs))
    for i, p in enumerate(prompts):
        if isinstance(p, Mapping):  # an item mapping could carry its own max_tokens or echo
            raise InvalidTypeError(f"prompts[{i}]", p, "a prompt: a string or a list of chat messages")
    results = await client.generate_many(list(prompts), 1, raw=raw, **call)
    return [token_distribution(r[0]) for r in results]


async def forced_answer_distribution(
    client: AsyncFireworks,
    prompt: Prompt,
    reasoning_prefix: str,
    *,
    answer_cue: str | None = None,
    raw: bool | None = None,
    top_logprobs: int = 5,
    **options: Any,
) -> TokenDistribution:
    """See :meth:`AsyncFireworks.forced_answer_distribution`."""
    text = forced_answer_prompt(client, prompt, reasoning_prefix, answer_cue=answer_cue, raw=raw, **options)
    return await next_token_distribution(client, text, raw=True, top_logprobs=top_logprobs, **options)


async def forced_answer_distributions(
    client: AsyncFireworks,
    items: Sequence[tuple[Prompt, str]],
    *,
    answer_cue: str | None = None,
    raw: bool | None = None,
    top_logprobs: int = 5,
    **options: Any,
) -> list[TokenDistribution]:
    """See :meth:`AsyncFireworks.forced_answer_distributions`."""
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise InvalidTypeError("items", items, "a list of (prompt, reasoning_prefix) pairs")
    texts = []
    for i, item in enumerate(items):
        if not isinstance(item, tuple) or len(item) != 2:
            raise InvalidTypeError(f"items[{i}]", item, "a (prompt, reasoning_prefix) pair")
        texts.append(forced_answer_prompt(client, item[0], item[1], answer_cue=answer_cue, raw=raw, **options))
    return await next_token_distributions(client, texts, raw=True, top_logprobs=top_logprobs, **options)
