"""Results as arrays and frames: a sample's positions (numpy, pandas) and one row per sample (pandas).

numpy and pandas are optional (the ``pandas`` extra installs both): they are imported when a
frame is first asked for, and their absence is a :class:`ConfigurationError` naming the extra.
The per-sample figures (:func:`sample_summary`, :func:`sample_rows`) are plain Python, so the
HTML views use them without pandas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from . import _uncertainty
from ._exceptions import InvalidTypeError
from ._models import FwResponse, FwRollouts
from ._optional import optional_module

if TYPE_CHECKING:
    from ._logprobs import Logprobs

__all__ = [
    "LOGPROBS_FIELDS",
    "SAMPLE_COLUMNS",
    "logprobs_array",
    "logprobs_frame",
    "response_frame",
    "rollouts_frame",
    "sample_rows",
    "sample_summary",
    "samples_frame",
    "to_pandas",
]

LOGPROBS_FIELDS: Final = (
    ("token", "O"),
    ("token_id", "i8"),
    ("logprob", "f8"),
    ("prob", "f8"),
    ("rank", "i8"),
    ("topk_entropy", "f8"),
    ("residual_mass", "f8"),
    ("is_prompt", "?"),
    ("sampling_logprob", "f8"),
    ("text_offset", "i8"),
)
"""The fields of :meth:`Logprobs.to_numpy` (and columns of its ``to_pandas``), with their numpy types."""

SAMPLE_COLUMNS: Final = (
    "item", "seed", "index", "text", "reasoning", "content", "finish_reason", "completed_reasoning", "num_tokens",
    "sum_logprob", "mean_logprob", "mean_topk_entropy", "mean_residual_mass", "cached", "prompt_tokens",
    "completion_tokens", "model",
)  # fmt: skip
"""The columns of :meth:`FwRollouts.to_pandas`, one row per sample."""

# Columns that may be missing, as pandas' nullable types (an int or bool column with a None would turn to object).
_NULLABLE: Final = {"seed": "Int64", "num_tokens": "Int64", "completed_reasoning": "boolean"}


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _pandas(needed_by: str) -> Any:
    return optional_module("pandas", needed_by=needed_by, extra="pandas")


# -- one sample's positions -----------------------------------------------------------------------------------------


def logprobs_array(logprobs: Logprobs, *, k: int | None = None) -> Any:
    """``logprobs`` as a numpy structured array with :data:`LOGPROBS_FIELDS`, one record per position.

    Missing values are NaN (floats) and -1 (``token_id`` without ids, ``rank`` beyond the top k
    or without alternatives). ``k``: alternatives asked for, as for :meth:`Logprobs.ranks`.
    """
    np = optional_module("numpy", needed_by="to_numpy", extra="pandas")
    n = len(logprobs)
    out = np.empty(n, dtype=list(LOGPROBS_FIELDS))
    values = logprobs.token_logprobs
    out["token"] = logprobs.tokens
    ids = logprobs.token_ids
    out["token_id"] = -1 if ids is None else ids
    out["logprob"] = [_nan(v) for v in values]
    out["prob"] = np.exp(out["logprob"])
    out["rank"] = [-1 if r is None else r for r in logprobs.ranks(k=k)]
    out["topk_entropy"] = [_nan(v) for v in logprobs.topk_entropy()]
    out["residual_mass"] = [_nan(v) for v in logprobs.residual_mass()]
    prompt = np.zeros(n, dtype=bool)
    prompt[: logprobs.num_prompt_tokens] = True
    out["is_prompt"] = prompt
    sampling = logprobs.sampling_logprobs
    out["sampling_logprob"] = math.nan if sampling is None else [_nan(v) for v in sampling]
    out["text_offset"] = logprobs.text_offset
    return out


def logprobs_frame(logprobs: Logprobs, *, k: int | None = None, needed_by: str = "to_pandas") -> Any:
    """The fields of :func:`logprobs_array` as a pandas DataFrame, indexed by position."""
    pd = _pandas(needed_by)
    return pd.DataFrame.from_records(logprobs_array(logprobs, k=k))


def _empty_logprobs_frame(needed_by: str) -> Any:
    pd = _pandas(needed_by)
    return pd.DataFrame({name: pd.Series([], dtype=kind) for name, kind in LOGPROBS_FIELDS})


def response_frame(response: FwResponse, *, k: int | None = None) -> Any:
    """A sample's positions (prompt first with echo) as :func:`logprobs_frame`; no rows without logprobs."""
    if response.logprobs is None:
        return _empty_logprobs_frame("FwResponse.to_pandas")
    return logprobs_frame(response.logprobs, k=k, needed_by="FwResponse.to_pandas")


# -- one row per sample ---------------------------------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> float:
    defined = [v for v in values if v is not None]
    return math.fsum(defined) / len(defined) if defined else math.nan


def sample_summary(response: FwResponse) -> dict[str, Any]:
    """A sample's generated tokens in figures (plain Python, no pandas).

    ``num_tokens`` (None without logprobs), ``sum_logprob``, ``mean_logprob``,
    ``mean_topk_entropy`` and ``mean_residual_mass`` over the generated positions (NaN
    without logprobs or where none has alternatives). The echoed prompt is never counted.
    """
    lp = response.logprobs
    if lp is None:
        nan = math.nan
        return dict(num_tokens=None, sum_logprob=nan, mean_logprob=nan, mean_topk_entropy=nan, mean_residual_mass=nan)
    generated = lp.get_generation_logprobs()  # once: a cache hit's positions are unpacked on first read
    return dict(
        num_tokens=len(generated),
        sum_logprob=_uncertainty.sum_logprob(generated),
        mean_logprob=_uncertainty.mean_logprob(generated),
        mean_topk_entropy=_mean(generated.topk_entropy()),
        mean_residual_mass=_mean(generated.residual_mass()),
    )


def sample_rows(rollouts: FwRollouts, *, item: int | None = None) -> list[dict[str, Any]]:
    """One dict per sample with :data:`SAMPLE_COLUMNS` (plain Python); ``item`` replaces the samples' own."""
    rows = []
    for r in rollouts.responses:
        rows.append(
            {
                "item": r.item if item is None else item,
                "seed": r.seed,
                "index": r.index,
                "text": r.full,
                "reasoning": r.reasoning,
                "content": r.content,
                "finish_reason": r.finish_reason,
                "completed_reasoning": r.completed_reasoning,
                **sample_summary(r),
                "cached": r.cached,
                "prompt_tokens": r.usage.prompt_tokens,
                "completion_tokens": r.usage.completion_tokens,
                "model": rollouts.model,
            }
        )
    return rows


def samples_frame(rows: Sequence[Mapping[str, Any]], *, needed_by: str = "to_pandas") -> Any:
    """Rows of :func:`sample_rows` (with any columns a caller added) as a DataFrame.

    The columns of :data:`SAMPLE_COLUMNS` come first and are present even with no rows; those
    that may be missing (seed, num_tokens, completed_reasoning) use pandas' nullable types.
    """
    pd = _pandas(needed_by)
    extra = [name for row in rows for name in row if name not in SAMPLE_COLUMNS]
    columns = [*SAMPLE_COLUMNS, *dict.fromkeys(extra)]
    frame = pd.DataFrame([dict(row) for row in rows], columns=columns)
    return frame.astype({name: kind for name, kind in _NULLABLE.items() if name in frame.columns})


def rollouts_frame(rollouts: FwRollouts) -> Any:
    """One row per sample of ``rollouts`` (:data:`SAMPLE_COLUMNS`)."""
    return samples_frame(sample_rows(rollouts), needed_by="FwRollouts.to_pandas")


def to_pandas(results: FwRollouts | Iterable[FwRollouts]) -> Any:
    """One row per sample of a call or a study, as a pandas DataFrame (``pip install 'fw-rollouts[pandas]'``).

    ``results``: one :class:`FwRollouts` (what ``generate`` returns), or a list of them (what
    ``generate_many`` and :func:`load_study` return, one per item). With a list, ``item`` is the
    position of the sample's :class:`FwRollouts` in it: the item's index for a study's results,
    and distinct for results of separate calls. Columns: :data:`SAMPLE_COLUMNS`.
    """
    if isinstance(results, FwRollouts):
        return samples_frame(sample_rows(results))
    if isinstance(results, (str, bytes, Mapping, FwResponse)) or not isinstance(results, Iterable):
        raise InvalidTypeError("results", results, "an FwRollouts, or a list of them (generate_many, load_study)")
    rows: list[dict[str, Any]] = []
    for number, rollouts in enumerate(results):
        if not isinstance(rollouts, FwRollouts):
            raise InvalidTypeError(
                f"results[{number}]", rollouts, "an FwRollouts (a list from generate_many or load_study holds them)"
            )
        rows.extend(sample_rows(rollouts, item=number))
    return samples_frame(rows)

