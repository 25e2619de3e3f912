"""Echo paid once per prompt: the echoed prompt's logprobs fetched, held and stored once for all its samples.

With ``echo`` every reply repeats the prompt's logprobs ahead of the generated ones: 100 samples
of a 1,500-token prompt would carry, hold and store 100 copies of the same 1,500 positions. Here
one reply is asked for with echo; :meth:`PromptPart.of` takes its prompt positions, and
:func:`with_prompt` presents every other sample of that prompt, asked for without echo, exactly as
if it had been echoed: ``echo`` on, ``logprobs`` prompt first (every view, slice, sum, comparison
and ``to_dict``), ``full_text`` with the prompt. Each such sample holds its generated positions and
a reference to the one :class:`PromptPart`.

**Text offsets.** With echo, offsets count from the start of the echoed text (the prompt, or a BOS
the server echoed ahead of it). Without echo, servers differ: the Fireworks shape counts from 0,
llama.cpp from ``len(prompt)``. We assume only that a reply without echo counts its generated
offsets in the same unit as the echoed reply, from wherever its first generated token sits: each
generated offset becomes ``part.generation_offset`` (where the echoed reply's first generated
token sits) plus its distance from the first generated token. Both readings, and any other base,
give the offsets the echoed reply would have had.

**Which prompt logprobs.** A real service may return slightly different prompt logprobs for the
same prompt in different batches (other kernels, other batch shapes). We keep the first ones
fetched (or read from the cache) for every sample of the call; a sample that came back echoed
anyway (another choice of the echoed request, an old cache record) is re-pointed at them by
:func:`with_prompt`, so that all of a call's samples agree on their prompt positions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ._logprobs import Logprobs, generation_offset, prefix_of, share_prefix
from ._models import FwResponse

__all__ = ["PromptPart", "prompt_part", "with_prompt"]


@dataclass(frozen=True, slots=True)
class PromptPart:
    """The echoed prompt's logprobs of one prompt: one immutable object shared by every sample of it."""

    prompt: str
    """The exact prompt string sent."""
    logprobs: Logprobs
    """The echoed prompt positions (``echo`` on, ``num_prompt_tokens == len(logprobs)``); never changed."""
    generation_offset: int
    """The text offset, in the echoed text, at which the first generated token sits."""

    @classmethod
    def of(cls, response: FwResponse) -> PromptPart | None:
        """The prompt part of a sample parsed from an echoed reply; None if it has no prompt logprobs.

        None when logprobs were off, or when the server did not echo the prompt (its logprobs
        start with the generated tokens). A sample that already shares a part gives that part.
        """
        lp = response.logprobs
        if lp is None or not lp.echo or not lp.num_prompt_tokens:
            return None
        shared = prefix_of(lp)
        if isinstance(shared, PromptPart):
            return shared
        # get_prompt_logprobs() copies the prompt's columns: the part keeps nothing else of this sample alive.
        return cls(response.prompt, lp.get_prompt_logprobs(), generation_offset(lp))

    def __len__(self) -> int:
        return len(self.logprobs)

    def nbytes(self) -> int:
        """Bytes held by the prompt's logprobs columns (see :meth:`Logprobs.nbytes`)."""
        return self.logprobs.nbytes()

    def __repr__(self) -> str:
        return f"PromptPart(tokens={len(self.logprobs)}, prompt_length={len(self.prompt)})"


def with_prompt(response: FwResponse, part: PromptPart | None) -> FwResponse:
    """``response`` presented exactly as if its reply had echoed the prompt, sharing ``part``'s logprobs.

    ``response`` is a sample of ``part.prompt`` parsed from a reply sent without echo
    (``ResponseSpec(echo=False)``), or one parsed with echo (its own prompt positions are
    dropped for ``part``'s), or one that already shares a part. The result has ``echo`` on and
    logprobs prompt first, equal to what parsing the echoed reply gives; the prompt's columns are
    not copied. ``part`` None (logprobs off, or a server that did not echo) only turns ``echo``
    on. Raises ValueError when ``part`` belongs to another prompt or ``response`` has no logprobs.
    """
    if part is None:
        return response if response.echo else dataclasses.replace(response, echo=True)
    if response.prompt != part.prompt:
        raise ValueError("with_prompt: the sample and the prompt part are of different prompts")
    lp = response.logprobs
    if lp is None:
        raise ValueError("with_prompt: the sample has no logprobs to put the prompt's ahead of")
    if prefix_of(lp) is part:
        return response if response.echo else dataclasses.replace(response, echo=True)
    logprobs = share_prefix(part, lp.get_generation_logprobs(), part.generation_offset)
    return dataclasses.replace(response, echo=True, logprobs=logprobs)


def prompt_part(response: FwResponse) -> PromptPart | None:
    """The part ``response`` shares (from :func:`with_prompt` or a cache hit), or None."""
    lp = response.logprobs
    shared = None if lp is None else prefix_of(lp)
    return shared if isinstance(shared, PromptPart) else None
