"""Packed columnar storage of token logprobs and the shared token vocabulary.

:class:`Columns` holds one run of token logprobs as ``array`` columns. Token strings are
interned once per process in a shared vocabulary and stored as 2- or 4-byte indices; logprob
columns are float32 whenever that is lossless for the values the server sent (real servers
compute in float32, so it usually is) and float64 otherwise; text offsets are not stored
when they follow from the token lengths. :class:`~fw_rollouts._logprobs.Logprobs` is the
public view over it; :mod:`._packing` is its byte form.

``Columns.build(..., strict=True)`` (what parsing a reply uses) also refuses logprobs no model
produces, with :class:`ImpossibleValue`: checked on the lists it flattens anyway, one C-level
pass each (types, sum, max), so that refusing them costs a few microseconds per sample.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, pairwise
from typing import Any, Final, TypeVar

from ._locks import ForkSafeLock

__all__ = ["LOGPROB_TOLERANCE", "Columns", "ImpossibleValue"]

_V = TypeVar("_V")

LOGPROB_TOLERANCE: Final = 1e-4
"""The largest positive logprob accepted, as rounding noise around log(1) = 0.

Servers compute ``logit - logsumexp(logits)`` in float32, where one rounding step near a
logit of magnitude 512 is 6e-5, so a near-certain token can come back as a tiny positive
number. Anything above this is not noise: no probability exceeds 1.
"""


class ImpossibleValue(ValueError):
    """A logprob column holds a value no model produces: not a number (a boolean, say), NaN,
    infinite, or above :data:`LOGPROB_TOLERANCE`. ``column`` names it."""

    def __init__(self, column: str) -> None:
        super().__init__(f"{column} holds a value no model produces")
        self.column = column


_NUMBER_TYPES: Final = frozenset({float, int})  # type(), not isinstance: True and False are not numbers here


def _plausible(values: list[Any]) -> bool:
    """Whether every value is a finite number (not a bool) of at most :data:`LOGPROB_TOLERANCE`."""
    if not values:
        return True
    types = list(map(type, values))
    if types.count(float) != len(types) and not set(types) <= _NUMBER_TYPES:
        return False
    try:
        # NaN and the infinities make the sum non-finite (as do totals beyond 1e308, absurd anyway);
        # an int too large for a float makes it raise.
        return math.isfinite(sum(values)) and max(values) <= LOGPROB_TOLERANCE
    except OverflowError:
        return False

# -- the shared vocabulary ---------------------------------------------------------------------------------

# Token string <-> small int. It only grows; a research process sees a few hundred thousand distinct
# token strings at most.
_VOCAB: dict[str, int] = {}
_STRINGS: list[str] = []
# A ForkSafeLock: after a fork in the middle of _add_token the tables stay usable (a string appended without its
# index is simply appended again).
_VOCAB_LOCK = ForkSafeLock()


def _add_token(token: str) -> int:
    with _VOCAB_LOCK:
        index = _VOCAB.get(token)
        if index is None:
            index = len(_STRINGS)
            # Publish the string before the index so a lock-free reader never sees a dangling index.
            _STRINGS.append(token)
            _VOCAB[token] = index
        return index


def _indices(tokens: Sequence[str]) -> list[int]:
    """The vocabulary indices of ``tokens``, adding the strings not seen yet."""
    found = list(map(_VOCAB.get, tokens))
    if None not in found:
        return found  # type: ignore[return-value]  # no None in it
    if not set(map(type, tokens)) <= {str}:
        raise TypeError("tokens must be strings")
    return [i if i is not None else _add_token(t) for i, t in zip(found, tokens, strict=True)]


def _index_code(indices: list[int]) -> str:
    # Two bytes per token while the process has seen fewer than 65,536 distinct tokens.
    return "H" if not indices or max(indices) < 65536 else "I"


def _intern(tokens: Sequence[str]) -> array[int]:
    """The vocabulary indices of ``tokens`` as a column, adding the strings not seen yet."""
    indices = _indices(tokens)
    return array(_index_code(indices), indices)


def _strings(indices: Iterable[int]) -> list[str]:
    """The token strings of vocabulary ``indices``."""
    strings = _STRINGS
    return [strings[i] for i in indices]


# -- building columns ----------------------------------------------------------------------------------------

_INT32 = (-(2**31), 2**31 - 1)


def _int_column(values: Sequence[int]) -> array[int]:
    """int32 when every value fits (token ids and offsets always do in practice), else int64."""
    if not values or (min(values) >= _INT32[0] and max(values) <= _INT32[1]):
        return array("i", values)
    return array("q", values)


def _float_column(values: list[float]) -> array[float]:
    """float32 when every value survives the round trip, else float64 (never lossy)."""
    column = array("f", values)
    if column.tolist() != values:
        column = array("d", values)
    return column


def _nullable_floats(values: Sequence[float | None], strict: str = "") -> tuple[array[float], tuple[int, ...]]:
    """A float column with 0.0 at the None positions, and those positions.

    ``strict`` names the column to check (:class:`ImpossibleValue`); "" checks nothing.
    """
    filled: list[float]
    if None in values:
        none = tuple(i for i, v in enumerate(values) if v is None)
        filled = [0.0 if v is None else v for v in values]
    else:
        none = ()
        filled = values if isinstance(values, list) else list(values)  # type: ignore[arg-type]  # no None
    if strict and not _plausible(filled):
        raise ImpossibleValue(strict)
    return _float_column(filled), none


def _nullable_list(column: array[float], none: tuple[int, ...]) -> list[float | None]:
    out: list[float | None] = column.tolist()  # type: ignore[assignment]
    for i in none:
        out[i] = None
    return out


def _shift(indices: tuple[int, ...], start: int, stop: int) -> tuple[int, ...]:
    return tuple(i - start for i in indices if start <= i < stop)


@dataclass(frozen=True, slots=True, eq=False)
class Columns:
    """One run of token logprobs as packed columns; immutable once built.

    Invariants (kept by :meth:`build`, :meth:`span` and :func:`unpack`): every per-position
    column has ``len(tok)`` entries; ``lp`` and ``samp`` hold 0.0 at their None positions;
    None positions are ascending; the alternatives of position ``i`` follow those of ``i - 1``
    in ``top_tok``/``top_lp``, ``top_k`` of them at each position not in ``top_none`` when
    ``top_sizes`` is None (``top_k`` is then 0 if ``top_sizes`` is set).
    """

    tok: array[int]
    """Vocabulary index of each token ('H' or 'I')."""
    lp: array[float]
    """Logprob of each token ('f' or 'd')."""
    lp_none: tuple[int, ...]
    """Positions whose logprob is None."""
    samp: array[float] | None
    """Fireworks' sampling logprob of each token, if sent."""
    samp_none: tuple[int, ...]
    """Positions whose sampling logprob is None."""
    off: array[int] | None
    """Text offsets ('i' or 'q'); None when they follow from the token lengths and ``off_base``."""
    off_base: int
    """Text offset of the first token."""
    ids: array[int] | None
    """Tokenizer ids ('i' or 'q'), if sent."""
    top_tok: array[int] | None
    """Vocabulary indices of the alternatives, position after position; None when none were asked for."""
    top_lp: array[float] | None
    """Logprobs of the alternatives, parallel to ``top_tok``."""
    top_sizes: array[int] | None
    """Alternatives per position ('B', 'H' or 'I') when that varies; 0 at the positions in ``top_none``."""
    top_k: int
    """Alternatives per position when that does not vary."""
    top_none: tuple[int, ...]
    """Positions whose alternatives are None."""
    top_ids: array[int] | None = None
    """Tokenizer ids of the alternatives ('i' or 'q'), parallel to ``top_tok``, if sent (Fireworks' content
    format sends them; the legacy format does not)."""

    @classmethod
    def build(
        cls,
        tokens: Sequence[str],
        token_logprobs: Sequence[float | None],
        top_logprobs: Sequence[dict[str, float] | None] | None,
        text_offset: Sequence[int] | None,
        token_ids: Sequence[int] | None,
        sampling_logprobs: Sequence[float | None] | None,
        *,
        top_token_ids: Sequence[dict[str, int] | None] | None = None,
        strict: bool = False,
    ) -> Columns:
        """Columns from the list form; ValueError when a column's length differs from the tokens'.

        ``top_token_ids``: each position's alternatives as ``{token: id}``, the same tokens in the same
        order as ``top_logprobs`` there (None where that is None). ``strict``: :class:`ImpossibleValue`
        when a logprob is not a finite number of at most :data:`LOGPROB_TOLERANCE` (a reply's; a user's
        own values are kept as given).
        """
        n = len(tokens)
        if len(token_logprobs) != n:
            raise ValueError(f"token_logprobs has {len(token_logprobs)} entries for {n} tokens")
        tok = _intern(tokens)
        lp, lp_none = _nullable_floats(token_logprobs, "token_logprobs" if strict else "")
        samp: array[float] | None = None
        samp_none: tuple[int, ...] = ()
        if sampling_logprobs is not None and any(v is not None for v in sampling_logprobs):
            if len(sampling_logprobs) != n:
                raise ValueError(f"sampling_logprobs has {len(sampling_logprobs)} entries for {n} tokens")
            samp, samp_none = _nullable_floats(sampling_logprobs, "sampling_logprobs" if strict else "")
        off, off_base = _offsets(tokens, text_offset)
        if token_ids is not None and len(token_ids) != n:
            raise ValueError(f"token_ids has {len(token_ids)} entries for {n} tokens")
        ids = _int_column(token_ids) if token_ids is not None else None
        top_tok, top_lp, top_sizes, top_k, top_none = _alternatives(top_logprobs, n, strict=strict)
        top_ids = None if top_token_ids is None else _alternative_ids(top_logprobs, top_token_ids)
        return cls(
            tok, lp, lp_none, samp, samp_none, off, off_base, ids, top_tok, top_lp, top_sizes, top_k, top_none, top_ids
        )

    def __len__(self) -> int:
        return len(self.tok)

    # -- plain-Python forms (each call builds a new list) --------------------------------------------------

    def token_strings(self) -> list[str]:
        """The token strings."""
        return _strings(self.tok)

    def logprob_list(self) -> list[float | None]:
        """The logprobs, None where there is none."""
        return _nullable_list(self.lp, self.lp_none)

    def sampling_list(self) -> list[float | None] | None:
        """The sampling logprobs, or None when they were not sent."""
        return None if self.samp is None else _nullable_list(self.samp, self.samp_none)

    def offset_list(self) -> list[int]:
        """The text offsets, derived from the token lengths when they were not stored."""
        if self.off is not None:
            return self.off.tolist()
        if not self.tok:
            return []
        return list(accumulate(map(len, _strings(self.tok[:-1])), initial=self.off_base))

    def id_list(self) -> list[int] | None:
        """The tokenizer ids, or None when they were not sent."""
        return None if self.ids is None else self.ids.tolist()

    def top_list(self) -> list[dict[str, float] | None]:
        """The alternatives of each position as ``{token: logprob}``, None where there were none."""
        if self.top_tok is None or self.top_lp is None:
            return [None] * len(self.tok)
        return self._per_position(self.top_lp.tolist())

    def top_id_list(self) -> list[dict[str, int] | None] | None:
        """The alternatives' tokenizer ids of each position as ``{token: id}``, or None when they were not sent."""
        if self.top_ids is None or self.top_tok is None:
            return None
        return self._per_position(self.top_ids.tolist())

    def _per_position(self, values: list[_V]) -> list[dict[str, _V] | None]:
        """``{alternative: value}`` of each position, ``values`` parallel to ``top_tok``; None where there were none."""
        assert self.top_tok is not None
        n = len(self.tok)
        keys = _strings(self.top_tok)
        k = self.top_k
        if self.top_sizes is None and not self.top_none and k:
            return [dict(zip(keys[p : p + k], values[p : p + k], strict=True)) for p in range(0, n * k, k)]
        sizes: list[int]
        if self.top_sizes is None:
            sizes = [k] * n
            for i in self.top_none:
                sizes[i] = 0
        else:
            sizes = self.top_sizes.tolist()
        out: list[dict[str, _V] | None] = [
            dict(zip(keys[a:b], values[a:b], strict=True)) for a, b in pairwise(accumulate(sizes, initial=0))
        ]
        for i in self.top_none:
            out[i] = None
        return out

    # -- summaries and slices ---------------------------------------------------------------------------------

    def max_top(self) -> int:
        """The largest number of alternatives at any position."""
        if self.top_sizes is not None:
            return max(self.top_sizes, default=0)
        return self.top_k

    def total(self) -> float:
        """Sum of the defined logprobs (None positions hold 0.0)."""
        return sum(self.lp, 0.0)

    def top_start(self, position: int) -> int:
        """Index into the flat alternative columns where ``position`` starts."""
        if self.top_sizes is not None:
            return sum(self.top_sizes[:position])
        nones_before = sum(1 for i in self.top_none if i < position)
        return (position - nones_before) * self.top_k

    def span(self, start: int, stop: int) -> Columns:
        """Positions ``start`` to ``stop`` (clamped to the columns); self when that is all of them."""
        n = len(self.tok)
        start, stop = max(0, min(start, n)), max(0, min(stop, n))
        stop = max(stop, start)
        if start == 0 and stop == n:
            return self
        top_tok = top_lp = top_sizes = top_ids = None
        if self.top_tok is not None and self.top_lp is not None:
            lo, hi = self.top_start(start), self.top_start(stop)
            top_tok, top_lp = self.top_tok[lo:hi], self.top_lp[lo:hi]
            if self.top_sizes is not None:
                top_sizes = self.top_sizes[start:stop]
            if self.top_ids is not None:
                top_ids = self.top_ids[lo:hi]
        off_base = self.off_base
        if self.off is None and start > 0:
            off_base += sum(map(len, _strings(self.tok[:start])))
        return Columns(
            self.tok[start:stop],
            self.lp[start:stop],
            _shift(self.lp_none, start, stop),
            None if self.samp is None else self.samp[start:stop],
            _shift(self.samp_none, start, stop),
            None if self.off is None else self.off[start:stop],
            off_base,
            None if self.ids is None else self.ids[start:stop],
            top_tok,
            top_lp,
            top_sizes,
            self.top_k,
            _shift(self.top_none, start, stop),
            top_ids,
        )

    def offset_at(self, position: int) -> int:
        """The text offset of ``position`` (0 <= position < len), without building the offset list."""
        if self.off is not None:
            return self.off[position]
        return self.off_base + sum(map(len, _strings(self.tok[:position])))

    def end_offset(self) -> int:
        """The text offset just past the last token (``off_base`` when there is none)."""
        if not self.tok:
            return self.off_base
        return self.offset_at(len(self.tok) - 1) + len(_STRINGS[self.tok[-1]])

    def shifted(self, delta: int) -> Columns:
        """These columns with every text offset moved by ``delta`` (self when ``delta`` is 0)."""
        if not delta:
            return self
        off = None if self.off is None else _int_column([o + delta for o in self.off])
        return dataclasses.replace(self, off=off, off_base=self.off_base + delta)

    def after(self, prefix: Columns) -> Columns:
        """These columns, the positions that follow ``prefix``, shaped as those positions of the joined run.

        The joined run has sampling logprobs if either part does (None where one lacks them) and
        token ids only if every position has one: so a part without sampling logprobs gets them,
        all None, when the prefix has some, and ids only the prefix has, or only these have, go
        (an empty part gets an empty column when the prefix has ids). Alternatives' ids are kept
        on the same terms as token ids. Slicing the joined run would give exactly these columns' lists.
        """
        n = len(self.tok)
        samp, samp_none = self.samp, self.samp_none
        if samp is None and prefix.samp is not None:
            samp, samp_none = array("f", bytes(4 * n)), tuple(range(n))
        ids = self.ids
        if prefix.ids is None:
            ids = None
        elif ids is None and not n:
            ids = array("i")
        top_ids = self.top_ids
        if prefix.top_ids is None:
            top_ids = None
        elif top_ids is None and not n:
            top_ids = array("i")
        if samp is self.samp and ids is self.ids and top_ids is self.top_ids:
            return self
        return dataclasses.replace(self, samp=samp, samp_none=samp_none, ids=ids, top_ids=top_ids)

    def nbytes(self) -> int:
        """Bytes held by this object and its arrays (not the shared vocabulary)."""
        size = sys.getsizeof(self)
        columns = (self.tok, self.lp, self.samp, self.off, self.ids, self.top_tok, self.top_lp, self.top_sizes,
                   self.top_ids)  # fmt: skip
        for column in columns:
            if column is not None:
                size += sys.getsizeof(column)
        return size


def _offsets(tokens: Sequence[str], text_offset: Sequence[int] | None) -> tuple[array[int] | None, int]:
    if not text_offset or len(text_offset) != len(tokens):
        return None, 0
    base = int(text_offset[0])
    derived = list(accumulate(map(len, tokens[:-1]), initial=base))
    if derived == list(text_offset):
        return None, base
    return _int_column(text_offset), base


def _alternatives(
    top: Sequence[dict[str, float] | None] | None, n: int, *, strict: bool = False
) -> tuple[array[int] | None, array[float] | None, array[int] | None, int, tuple[int, ...]]:
    """``top_tok, top_lp, top_sizes, top_k, top_none`` of :class:`Columns` from the list form."""
    if top is None:
        return None, None, None, 0, ()
    if len(top) != n:
        raise ValueError(f"top_logprobs has {len(top)} entries for {n} tokens")
    present: Sequence[dict[str, float]] = top  # type: ignore[assignment]  # Nones removed just below
    none: tuple[int, ...] = ()
    if None in top:
        none = tuple(i for i, t in enumerate(top) if t is None)
        present = [t for t in top if t is not None]
    sizes = list(map(len, present))
    # chain/map keep the flattening in C: this runs for every position of every sample.
    top_tok = _intern(list(chain.from_iterable(present)))
    values = list(chain.from_iterable(map(dict.values, present)))
    if strict and not _plausible(values):
        raise ImpossibleValue("top_logprobs")
    top_lp = _float_column(values)
    if not sizes or min(sizes) == max(sizes):
        return top_tok, top_lp, None, sizes[0] if sizes else 0, none
    for i in none:
        sizes.insert(i, 0)
    # One byte per position in practice (at most N+1 = 6 alternatives each).
    return top_tok, top_lp, array("B" if max(sizes) < 256 else "I", sizes), 0, none


def _alternative_ids(
    top: Sequence[dict[str, float] | None] | None, top_ids: Sequence[dict[str, int] | None]
) -> array[int]:
    """The alternatives' ids as a column parallel to the flattened alternatives; ValueError unless ``top_ids``
    names the same alternatives, in the same order, at every position."""
    if top is None or len(top_ids) != len(top):
        raise ValueError("top_token_ids needs top_logprobs, with one entry per position")
    for position, (alternatives, ids) in enumerate(zip(top, top_ids, strict=True)):
        if (alternatives is None) != (ids is None) or (ids is not None and list(ids) != list(alternatives or ())):
            raise ValueError(f"top_token_ids[{position}] does not name the alternatives of top_logprobs[{position}]")
    values = list(chain.from_iterable(map(dict.values, filter(None, top_ids))))
    if not set(map(type, values)) <= {int}:
        raise TypeError("top_token_ids must be integers")
    return _int_column(values)
