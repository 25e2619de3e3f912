"""Typed results: :class:`Usage`, :class:`FwResponse` (one sample) and :class:`FwRollouts` (one call)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from ._exceptions import ValidationError
from ._logprobs import Logprobs

if TYPE_CHECKING:
    from ._usage import UsageTotals

__all__ = ["FwResponse", "FwRollouts", "Usage"]


@dataclass(slots=True)
class Usage:
    """Token counts the service reported for the request that produced a sample."""

    prompt_tokens: int = 0
    """Tokens in the prompt (as the server counts them, which may include an implicit BOS)."""
    completion_tokens: int = 0
    """Tokens generated."""
    total_tokens: int = 0
    """prompt_tokens + completion_tokens."""
    cached_tokens: int | None = None
    """Prompt tokens served from the service's prompt cache, when reported."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
        }


@dataclass(slots=True, eq=True)
class FwResponse:
    """One generated sample with its text, reasoning split, usage and logprobs.

    ``full`` is exactly the text the model generated (never the echoed prompt). For
    reasoning models it is ``reasoning + "</think>" + content`` once the reasoning
    finished (``completed_reasoning``), else all reasoning.
    """

    full: str
    """The generated text, verbatim."""
    content: str = ""
    """The answer: text after the reasoning (all of ``full`` for models that do not reason)."""
    reasoning: str = ""
    """The generated reasoning (before ``</think>``, or gpt-oss's analysis channel); "" if none."""
    finish_reason: str = ""
    """Why generation stopped: "stop", "length" or "error"."""
    completed_reasoning: bool | None = None
    """True once the reasoning block closed; False if cut off inside it; None for non-reasoning output."""
    usage: Usage = field(default_factory=Usage)
    """Token counts for the request that produced this sample."""
    seed: int | None = None
    """The seed sent with the request."""
    model: str = ""
    """The model the service reports."""
    response_id: str = ""
    """The service's id for the response."""
    created: int = 0
    """Unix time the service created the response."""
    logprobs: Logprobs | None = None
    """Logprobs of every returned position (prompt first when echo was on), or None if not requested."""
    echo: bool = False
    """Whether the prompt was echoed (so ``logprobs`` starts with the prompt tokens)."""
    prompt: str = ""
    """The exact prompt string that was sent."""
    index: int = 0
    """The choice index within its request (non-zero only with ``samples_per_request``)."""
    cached: bool = False
    """True if this sample came from the local cache rather than a request."""
    item: int = 0
    """The index of the item (prompt) this sample belongs to in its study (0 for ``generate``)."""

    provider: str = "fireworks"
    """Always "fireworks" (kept for code written against the peer's Response)."""
    object: str = "text_completion"
    """The response object type (kept for the peer's Response)."""

    @property
    def text(self) -> str:
        """The generated text (same as ``full``; the peer's Fireworks variant called it ``text``)."""
        return self.full

    @property
    def full_text(self) -> str:
        """Prompt plus generated text when echo was on, else the generated text."""
        return self.prompt + self.full if self.echo else self.full

    def get_generation_logprobs(self) -> Logprobs | None:
        """Logprobs of the generated tokens only (None if logprobs were not requested)."""
        return None if self.logprobs is None else self.logprobs.get_generation_logprobs()

    def get_prompt_logprobs(self) -> Logprobs | None:
        """Logprobs of the prompt tokens (echo); empty without echo, None without logprobs."""
        return None if self.logprobs is None else self.logprobs.get_prompt_logprobs()

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-serialisable)."""
        return {
            "full": self.full,
            "content": self.content,
            "reasoning": self.reasoning,
            "finish_reason": self.finish_reason,
            "completed_reasoning": self.completed_reasoning,
            "usage": self.usage.to_dict(),
            "seed": self.seed,
            "model": self.model,
            "response_id": self.response_id,
            "created": self.created,
            "logprobs": None if self.logprobs is None else self.logprobs.to_dict(),
            "echo": self.echo,
            "prompt": self.prompt,
            "index": self.index,
            "cached": self.cached,
            "item": self.item,
            "provider": self.provider,
            "object": self.object,
        }

    def to_pandas(self) -> Any:
        """This sample's positions as a pandas DataFrame (:meth:`Logprobs.to_pandas`); no rows without logprobs."""
        from ._frames import response_frame

        return response_frame(self)

    def _repr_html_(self) -> str:
        """The sample in a notebook: generated tokens shaded by probability, alternatives on hover, the prompt apart."""
        from ._html import response_html

        return response_html(self)

    def __repr__(self) -> str:
        text = self.full if len(self.full) <= 60 else self.full[:57] + "..."
        lp = "None" if self.logprobs is None else f"{len(self.logprobs)} positions"
        return (
            f"FwResponse(seed={self.seed}, finish_reason={self.finish_reason!r}, full={text!r}, "
            f"logprobs={lp}, cached={self.cached})"
        )


@dataclass(slots=True)
class FwRollouts(Sequence[FwResponse]):
    """The samples of one ``generate`` call, in seed order, with the request's settings."""

    prompt: str | list[dict[str, Any]]
    """The prompt as given (a string or chat messages)."""
    num_responses: int
    """How many samples were requested."""
    temperature: float | None
    """Sampling temperature used."""
    top_p: float | None
    """Nucleus sampling threshold used."""
    max_tokens: int | None
    """Generation budget per sample."""
    model: str
    """The resolved model id that was requested."""
    responses: list[FwResponse]
    """The samples, in seed order."""
    cache_dir: str | None = None
    """Where the samples are cached (None with caching off)."""
    logprobs_enabled: bool = True
    """Whether logprobs were requested."""
    echo_enabled: bool = True
    """Whether the prompt was echoed."""
    logprobs: int | None = None
    """How many alternatives per position were requested (None: logprobs off)."""
    prompt_text: str = ""
    """The exact prompt string sent to the completions endpoint."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Every field sent in the request body apart from prompt and seed."""
    errors: dict[int, Any] = field(default_factory=dict)
    """Seed -> error for each requested sample that failed (empty when every sample came back)."""

    @property
    def complete(self) -> bool:
        """Whether every requested sample came back."""
        return len(self.responses) == self.num_responses

    @property
    def usage(self) -> UsageTotals:
        """What these samples used: requests (those the samples came from), samples fetched and served
        from the local cache (counted apart), prompt, cached-prompt and generated tokens."""
        from ._usage import UsageTotals

        return UsageTotals.of_samples(self.responses)

    def cost(self, prices: Any) -> float:
        """Dollars these samples cost at ``prices`` (a :class:`PriceTable`, a mapping model -> :class:`Prices`,
        or one :class:`Prices`); samples from the local cache cost nothing."""
        from ._usage import price_table

        table = price_table(prices)
        if table is None:
            raise ValidationError("prices", prices, "a PriceTable, a mapping of model to Prices, or Prices")
        return table.cost(self.usage, self.model)

    def __len__(self) -> int:
        return len(self.responses)

    def __iter__(self) -> Iterator[FwResponse]:
        return iter(self.responses)

    @overload
    def __getitem__(self, index: int) -> FwResponse: ...

    @overload
    def __getitem__(self, index: slice) -> list[FwResponse]: ...

    def __getitem__(self, index: int | slice) -> FwResponse | list[FwResponse]:
        return self.responses[index]

    def get_texts(self) -> list[str]:
        """The ``full`` text of every sample."""
        return [r.full for r in self.responses]

    def get_reasonings(self) -> list[str]:
        """The reasoning of every sample."""
        return [r.reasoning for r in self.responses]

    def get_contents(self) -> list[str]:
        """The content (answer) of every sample."""
        return [r.content for r in self.responses]

    def get_total_tokens(self) -> int:
        """Total tokens over all samples (as reported per request)."""
        return sum(r.usage.total_tokens for r in self.responses)

    def get_finish_reasons(self) -> dict[str, int]:
        """How many samples ended for each finish reason."""
        return dict(Counter(r.finish_reason for r in self.responses if r.finish_reason))

    def get_all_logprobs(self) -> list[Logprobs | None]:
        """Every sample's full logprobs."""
        return [r.logprobs for r in self.responses]

    def get_all_prompt_logprobs(self) -> list[Logprobs | None]:
        """Every sample's prompt logprobs (echo)."""
        return [r.get_prompt_logprobs() for r in self.responses]

    def get_all_generation_logprobs(self) -> list[Logprobs | None]:
        """Every sample's generation logprobs."""
        return [r.get_generation_logprobs() for r in self.responses]

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-serialisable)."""
        return {
            "prompt": self.prompt,
            "num_responses": self.num_responses,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "model": self.model,
            "responses": [r.to_dict() for r in self.responses],
            "cache_dir": self.cache_dir,
            "logprobs_enabled": self.logprobs_enabled,
            "echo_enabled": self.echo_enabled,
            "logprobs": self.logprobs,
            "prompt_text": self.prompt_text,
            "settings": dict(self.settings),
        }

    def to_jsonl(self, path: str | os.PathLike[str]) -> None:
        """Write these samples, with the call's settings and every logprob, to ``path`` as JSON Lines.

        :meth:`from_jsonl` reads them back exactly. The file is replaced whole (written under a
        temporary name, then renamed), so an interrupted write never leaves half a file.
        """
        from ._jsonl import write_rollouts  # the format lives beside its reader, which imports this module

        write_rollouts(self, path)

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike[str]) -> FwRollouts:
        """The samples :meth:`to_jsonl` wrote to ``path``, equal to the ones written, logprobs included.

        Reading runs nothing from the file; a file that is not one raises :class:`ValidationError`.
        """
        from ._jsonl import read_rollouts

        return read_rollouts(path)

    def to_pandas(self) -> Any:
        """One row per sample as a pandas DataFrame (text, finish reason, tokens, sum and mean logprob, ...).

        Columns: ``fw_rollouts._frames.SAMPLE_COLUMNS``; needs ``pip install 'fw-rollouts[pandas]'``.
        """
        from ._frames import rollouts_frame

        return rollouts_frame(self)

    def _repr_html_(self) -> str:
        """The call in a notebook: its settings and a table of its samples (the first few rows)."""
        from ._html import rollouts_html

        return rollouts_html(self)

    def __repr__(self) -> str:
        return (
            f"FwRollouts(num_responses={self.num_responses}, actual={len(self.responses)}, "
            f"model={self.model!r}, logprobs_enabled={self.logprobs_enabled})"
        )
