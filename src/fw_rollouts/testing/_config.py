"""The simulator's settings, shared by the engine, validation and the server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["LOGPROBS_FAULTS", "AnswersMode", "BosMode", "Config", "LogprobsFault", "OffsetBase", "model_names"]

BosMode = Literal["none", "count", "echo"]
AnswersMode = Literal["boxed"] | None
OffsetBase = Literal["completion", "prompt"]
LogprobsFault = Literal[
    "missing", "shifted", "not-greedy", "echo-drift", "echo-short", "no-echo", "noisy", "processed"
]
#: The values of ``logprobs_fault``: a server that answers 200 with wrong logprobs (see ``_misreport``).
LOGPROBS_FAULTS: tuple[LogprobsFault, ...] = (
    "missing", "shifted", "not-greedy", "echo-drift", "echo-short", "no-echo", "noisy", "processed"
)


@dataclass(frozen=True)
class Config:
    """Settings shared by the engine and the server (see ``FireworksSimulator`` for each meaning)."""

    api_key: str | None = "sim-key"
    latency: float = 0.0
    known_models: frozenset[str] | None = None
    bos: BosMode = "none"
    echo_text: bool = True
    stop_included: bool = False
    default_max_tokens: int = 16
    context_length: int = 131_072
    text_offset_base: OffsetBase = "completion"
    refuse_max_tokens_zero: bool = False
    strict_fields: bool = True
    requests_per_minute: float | None = None
    prompt_tokens_per_minute: float | None = None
    generated_tokens_per_minute: float | None = None
    ratelimit_headers: bool = False
    rate_window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    answers: AnswersMode = None
    logprobs_fault: LogprobsFault | None = None


def model_names(models: Iterable[str] | None) -> frozenset[str] | None:
    """Normalise the ``known_models`` option."""
    if models is None:
        return None
    if isinstance(models, str):
        return frozenset({models})
    return frozenset(models)
