"""Token log-probabilities, held in a compact columnar store.

A sample with thousands of tokens and five alternatives per token would cost
kilobytes per token as Python lists of dicts. Here each column is an ``array``;
token strings are interned once per process in a shared vocabulary and stored as
4-byte indices; logprob columns are float32 whenever that is lossless for the
values the server sent (real servers compute in float32, so it usually is) and
float64 otherwise; text offsets are not stored when they follow from the token
lengths. The public list/dict views (``tokens``, ``token_logprobs``,
``top_logprobs``, ...) are built on access.
"""

from __future__ import annotations

import pickle
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, chain
from typing import Any, NamedTuple

__all__ = ["Logprobs", "TokenLogprob"]

# The shared vocabulary: token string <-> small int. It only grows; a research
# process sees a few hundred thousand distinct token strings at most.
_VOCAB: dict[str, int] = {}
_STRINGS: list[str] = []
_VOCAB_LOCK = threading.Lock()


def _add_token(token: str) -> int:
    with _VOCAB_LOCK:
        index = _VOCAB.get(token)
        if index is None:
            index = len(_STRINGS)
            # Publish the string before the index so a lock-free reader never sees a dangling index.
            _STRINGS.append(token)
            _VOCAB[token] = index
        return index


def _intern(tokens: Sequence[str]) -> array[int]:
    found = list(map(_VOCAB.get, tokens))
    if None in found:
        if not set(map(type, tokens)) <= {str}:
            raise TypeError("tokens must be strings")
        indices = [i if i is not None else _add_token(t) for i, t in zip(found, tokens, strict=True)]
    else:
        indices = found  # type: ignore[assignment]  # no None left
    # Two bytes per token while the process has seen fewer than 65,536 distinct tokens.
    return array("H" if not indices or max(indices) < 65536 else "I", indices)


def _strings(indices: Iterable[int]) -> list[str]:
    strings = _STRINGS
    return [strings[i] for i in indices]


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


class TokenLogprob(NamedTuple):
    """One position of a :class:`Logprobs`: the token and what the model thought of it."""

    token: str
    """The token's text."""
    logprob: float | None
    """Its log-probability given everything before it; None at the first echoed position."""
    top_logprobs: dict[str, float] | None
    """The most likely alternatives at this position (token -> logprob), None where not returned."""
    text_offset: int
    """Character offset of the token in the text the server returned."""
    token_id: int | None
    """The tokenizer's id for the token, when the server sends ids."""


class Logprobs:
    """Log-probabilities of a run of tokens, prompt first when echo was on.

    The public views are plain Python lists built on each access (keep a reference if
    you index them in a loop)::

        lp.tokens            # list[str]
        lp.token_logprobs    # list[float | None]; None where there is no logprob (first echoed token)
        lp.top_logprobs      # list[dict[str, float] | None]; the alternatives at each position
        lp.text_offset       # list[int]; character offsets in the returned text
        lp.token_ids         # list[int] | None; only when the server sends ids
        lp.sampling_logprobs # list[float | None] | None; Fireworks' behaviour-policy logprobs, if sent

    With echo, the first ``num_prompt_tokens`` positions are the prompt;
    :meth:`get_prompt_logprobs` and :meth:`get_generation_logprobs` slice them apart.
    ``lp["tokens"]`` works too, for code written against the peer's dict results.
    """

    __slots__ = (
        "_ids",
        "_lp",
        "_lp_none",
        "_off",
        "_off_base",
        "_packed",
        "_samp",
        "_tok",
        "_top_k",
        "_top_lp",
        "_top_none",
        "_top_sizes",
        "_top_tok",
        "echo",
        "num_prompt_tokens",
        "prompt_length",
    )

    num_prompt_tokens: int
    """How many leading positions belong to the prompt (0 without echo)."""
    prompt_length: int
    """Length in characters of the prompt string that was sent (0 without echo)."""
    echo: bool
    """Whether these logprobs include the echoed prompt."""

    def __init__(
        self,
        tokens: Sequence[str] = (),
        token_logprobs: Sequence[float | None] = (),
        top_logprobs: Sequence[dict[str, float] | None] | None = None,
        text_offset: Sequence[int] | None = None,
        token_ids: Sequence[int] | None = None,
        *,
        sampling_logprobs: Sequence[float | None] | None = None,
        num_prompt_tokens: int = 0,
        prompt_length: int = 0,
        echo: bool = False,
    ) -> None:
        self._packed: bytes | None = None
        n = len(tokens)
        if len(token_logprobs) != n:
            raise ValueError(f"token_logprobs has {len(token_logprobs)} entries for {n} tokens")
        self._tok = _intern(tokens)
        self._lp, self._lp_none = _nullable_floats(token_logprobs)
        self._samp: tuple[array[float], tuple[int, ...]] | None = None
        if sampling_logprobs is not None and any(v is not None for v in sampling_logprobs):
            if len(sampling_logprobs) != n:
                raise ValueError(f"sampling_logprobs has {len(sampling_logprobs)} entries for {n} tokens")
            self._samp = _nullable_floats(sampling_logprobs)
        self._set_offsets(tokens, text_offset)
        if token_ids is not None and len(token_ids) != n:
            raise ValueError(f"token_ids has {len(token_ids)} entries for {n} tokens")
        self._ids = _int_column(token_ids) if token_ids is not None else None
        self._set_top(top_logprobs, n)
        self.num_prompt_tokens = num_prompt_tokens
        self.prompt_length = prompt_length
        self.echo = echo

    # -- construction helpers ------------------------------------------------

    def _set_offsets(self, tokens: Sequence[str], text_offset: Sequence[int] | None) -> None:
        if not text_offset or len(text_offset) != len(tokens):
            self._off: array[int] | None = None
            self._off_base = 0
            return
        base = int(text_offset[0])
        derived = list(accumulate(map(len, tokens[:-1]), initial=base))
        if derived == list(text_offset):
            self._off = None
            self._off_base = base
        else:
            self._off = _int_column(text_offset)
            self._off_base = base

    def _set_top(self, top: Sequence[dict[str, float] | None] | None, n: int) -> None:
        self._top_tok: array[int] | None = None
        self._top_lp: array[float] | None = None
        self._top_sizes: array[int] | None = None
        self._top_k = 0
        self._top_none: tuple[int, ...] = ()
        if top is None:
            return
        if len(top) != n:
            raise ValueError(f"top_logprobs has {len(top)} entries for {n} tokens")
        present: Sequence[dict[str, float]] = top  # type: ignore[assignment]  # Nones removed just below
        none: tuple[int, ...] = ()
        if None in top:
            none = tuple(i for i, t in enumerate(top) if t is None)
            present = [t for t in top if t is not None]
        sizes = list(map(len, present))
        # chain/map keep the flattening in C: this runs for every position of every sample.
        self._top_tok = _intern(list(chain.from_iterable(present)))
        self._top_lp = _float_column(list(chain.from_iterable(map(dict.values, present))))
        self._top_none = none
        if not sizes or min(sizes) == max(sizes):
            self._top_k = sizes[0] if sizes else 0
        else:
            for i in none:
                sizes.insert(i, 0)
            # One byte per position in practice (at most N+1 = 6 alternatives each).
            self._top_sizes = array("B" if max(sizes) < 256 else "I", sizes)

    @classmethod
    def _from_columns(
        cls,
        tok: array[int],
        lp: array[float],
        lp_none: tuple[int, ...],
        samp: tuple[array[float], tuple[int, ...]] | None,
        off: array[int] | None,
        off_base: int,
        ids: array[int] | None,
        top_tok: array[int] | None,
        top_lp: array[float] | None,
        top_sizes: array[int] | None,
        top_k: int,
        top_none: tuple[int, ...],
        num_prompt_tokens: int,
        prompt_length: int,
        echo: bool,
    ) -> Logprobs:
        self = cls.__new__(cls)
        self._packed = None
        self._tok, self._lp, self._lp_none, self._samp = tok, lp, lp_none, samp
        self._off, self._off_base, self._ids = off, off_base, ids
        self._top_tok, self._top_lp, self._top_sizes = top_tok, top_lp, top_sizes
        self._top_k, self._top_none = top_k, top_none
        self.num_prompt_tokens, self.prompt_length, self.echo = num_prompt_tokens, prompt_length, echo
        return self

    # -- public views --------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tok)

    @property
    def tokens(self) -> list[str]:
        """The token strings, one per position."""
        return _strings(self._tok)

    @property
    def token_logprobs(self) -> list[float | None]:
        """Log-probability of each token; None where the server gave none (the first echoed token)."""
        return _nullable_list(self._lp, self._lp_none)

    @property
    def sampling_logprobs(self) -> list[float | None] | None:
        """Fireworks' ``sampling_logprob`` per token (after temperature/top_p/top_k), when it was sent."""
        if self._samp is None:
            return None
        return _nullable_list(*self._samp)

    @property
    def text_offset(self) -> list[int]:
        """Character offset of each token in the returned text (derived from token lengths if not sent)."""
        if self._off is not None:
            return self._off.tolist()
        if not self._tok:
            return []
        return list(accumulate(map(len, self.tokens[:-1]), initial=self._off_base))

    @property
    def token_ids(self) -> list[int] | None:
        """The tokenizer ids of the tokens, or None when the server did not send them."""
        return None if self._ids is None else self._ids.tolist()

    @property
    def top_logprobs(self) -> list[dict[str, float] | None]:
        """The alternatives at each position as ``{token: logprob}``; None where none were returned."""
        n = len(self._tok)
        if self._top_tok is None or self._top_lp is None:
            return [None] * n
        keys = _strings(self._top_tok)
        values = self._top_lp.tolist()
        out: list[dict[str, float] | None] = []
        none = set(self._top_none)
        sizes: Iterable[int] = self._top_sizes if self._top_sizes is not None else [self._top_k] * n
        pos = 0
        for i, size in enumerate(sizes):
            if i in none:
                out.append(None)
            else:
                out.append(dict(zip(keys[pos : pos + size], values[pos : pos + size], strict=True)))
                pos += size
        return out

    @property
    def top_k(self) -> int:
        """The largest number of alternatives returned at any position."""
        if self._top_sizes is not None:
            return max(self._top_sizes, default=0)
        return self._top_k

    def __getitem__(self, key: str) -> Any:
        """Dict-style access to a column, e.g. ``lp["tokens"]``, as the peer's dict results allowed."""
        if key not in _COLUMNS:
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> tuple[str, ...]:
        """The column names usable with ``lp[name]``."""
        return _COLUMNS

    def __iter__(self) -> Iterator[TokenLogprob]:
        """Iterate over positions as :class:`TokenLogprob` tuples."""
        ids: Iterable[int | None] = self.token_ids or [None] * len(self)
        columns = (self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset, ids)
        for row in zip(*columns, strict=True):
            yield TokenLogprob(*row)

    # -- slicing -------------------------------------------------------------

    def _slice(self, start: int, stop: int, *, num_prompt_tokens: int, prompt_length: int) -> Logprobs:
        n = len(self._tok)
        start, stop = max(0, min(start, n)), max(0, min(stop, n))
        stop = max(stop, start)
        top_tok = top_lp = top_sizes = None
        top_k = self._top_k
        if self._top_tok is not None and self._top_lp is not None:
            lo, hi = self._top_range(start), self._top_range(stop)
            top_tok, top_lp = self._top_tok[lo:hi], self._top_lp[lo:hi]
            if self._top_sizes is not None:
                top_sizes = self._top_sizes[start:stop]
        off = self._off[start:stop] if self._off is not None else None
        off_base = self._off_base
        if self._off is None and start > 0:
            off_base += sum(map(len, _strings(self._tok[:start])))
        samp = None
        if self._samp is not None:
            samp = (self._samp[0][start:stop], _shift(self._samp[1], start, stop))
        return Logprobs._from_columns(
            self._tok[start:stop],
            self._lp[start:stop],
            _shift(self._lp_none, start, stop),
            samp,
            off,
            off_base,
            self._ids[start:stop] if self._ids is not None else None,
            top_tok,
            top_lp,
            top_sizes,
            top_k,
            _shift(self._top_none, start, stop),
            num_prompt_tokens,
            prompt_length,
            self.echo and num_prompt_tokens > 0,
        )

    def _top_range(self, position: int) -> int:
        """Index into the flat alternative columns where ``position`` starts."""
        if self._top_sizes is not None:
            return sum(self._top_sizes[:position])
        nones_before = sum(1 for i in self._top_none if i < position)
        return (position - nones_before) * self._top_k

    def get_prompt_logprobs(self) -> Logprobs:
        """The echoed prompt positions (empty without echo)."""
        k = self.num_prompt_tokens
        return self._slice(0, k, num_prompt_tokens=k, prompt_length=self.prompt_length)

    def get_generation_logprobs(self) -> Logprobs:
        """The generated positions only."""
        return self._slice(self.num_prompt_tokens, len(self._tok), num_prompt_tokens=0, prompt_length=0)

    # -- summaries -----------------------------------------------------------

    def sum(self) -> float:
        """Sum of the defined logprobs (the log-probability of the whole token run)."""
        total = sum(self._lp)
        return total - sum(self._lp[i] for i in self._lp_none)

    def mean(self) -> float:
        """Mean of the defined logprobs (NaN when there are none)."""
        count = len(self._lp) - len(self._lp_none)
        return self.sum() / count if count else float("nan")

    def nbytes(self) -> int:
        """Bytes held by this object's columns, excluding the shared token vocabulary."""
        import sys

        size = sys.getsizeof(self)
        for column in (self._tok, self._lp, self._off, self._ids, self._top_tok, self._top_lp, self._top_sizes):
            if column is not None:
                size += sys.getsizeof(column)
        if self._samp is not None:
            size += sys.getsizeof(self._samp[0])
        return size

    # -- conversions ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists and dicts), JSON-serialisable."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _COLUMNS}
        out["num_prompt_tokens"] = self.num_prompt_tokens
        out["prompt_length"] = self.prompt_length
        out["echo"] = self.echo
        return out

    def __getstate__(self) -> dict[str, Any]:
        # Vocabulary indices are per process: pickle the strings.
        return {
            "tokens": self.tokens,
            "lp": (self._lp.typecode, self._lp.tobytes(), self._lp_none),
            "samp": None
            if self._samp is None
            else (self._samp[0].typecode, self._samp[0].tobytes(), self._samp[1]),
            "off": None if self._off is None else (self._off.typecode, self._off.tobytes()),
            "off_base": self._off_base,
            "ids": None if self._ids is None else (self._ids.typecode, self._ids.tobytes()),
            "top_tok": None if self._top_tok is None else _strings(self._top_tok),
            "top_lp": None if self._top_lp is None else (self._top_lp.typecode, self._top_lp.tobytes()),
            "top_sizes": None if self._top_sizes is None else (self._top_sizes.typecode, self._top_sizes.tobytes()),
            "top_k": self._top_k,
            "top_none": self._top_none,
            "meta": (self.num_prompt_tokens, self.prompt_length, self.echo),
        }

    @classmethod
    def from_packed(cls, packed: bytes) -> Logprobs:
        """Logprobs that unpack ``packed`` (from :meth:`packed`) on first use.

        A cache hit thus costs a dictionary lookup, not the unpacking of every column of
        every sample, until the logprobs are read.
        """
        self = cls.__new__(cls)
        self._packed = packed
        return self

    def packed(self) -> bytes:
        """The columns as bytes (for the cache); see :meth:`from_packed`."""
        if self._packed is not None:
            return self._packed
        return pickle.dumps(self.__getstate__(), protocol=pickle.HIGHEST_PROTOCOL)

    def __getattr__(self, name: str) -> Any:
        # Only reached for a slot not set yet: the columns of a lazily unpacked instance.
        if name == "_packed" or name not in Logprobs.__slots__:
            raise AttributeError(name)
        packed = self._packed
        if packed is None:
            raise AttributeError(name)
        self.__setstate__(pickle.loads(packed))
        return getattr(self, name)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._packed = None
        self._tok = _intern(state["tokens"])
        code, raw, self._lp_none = state["lp"]
        self._lp = _array(code, raw)
        samp = state["samp"]
        self._samp = None if samp is None else (_array(samp[0], samp[1]), samp[2])
        self._off = _int_state(state["off"])
        self._off_base = state["off_base"]
        self._ids = _int_state(state["ids"])
        self._top_tok = None if state["top_tok"] is None else _intern(state["top_tok"])
        self._top_lp = None if state["top_lp"] is None else _array(*state["top_lp"])
        self._top_sizes = _top_sizes_state(state)
        self._top_k = state["top_k"]
        self._top_none = state["top_none"]
        self.num_prompt_tokens, self.prompt_length, self.echo = state["meta"]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Logprobs):
            return NotImplemented
        return self.to_dict() == other.to_dict() and self.sampling_logprobs == other.sampling_logprobs

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Logprobs(tokens={len(self)}, prompt_tokens={self.num_prompt_tokens}, "
            f"top_k={self.top_k}, echo={self.echo})"
        )


_COLUMNS = ("tokens", "token_logprobs", "top_logprobs", "text_offset", "token_ids")


def _nullable_floats(values: Sequence[float | None]) -> tuple[array[float], tuple[int, ...]]:
    none = tuple(i for i, v in enumerate(values) if v is None)
    if none:
        filled = [0.0 if v is None else v for v in values]
        return _float_column(filled), none
    return _float_column(values if isinstance(values, list) else list(values)), ()  # type: ignore[arg-type]


def _nullable_list(column: array[float], none: tuple[int, ...]) -> list[float | None]:
    out: list[float | None] = column.tolist()  # type: ignore[assignment]
    for i in none:
        out[i] = None
    return out


def _shift(indices: tuple[int, ...], start: int, stop: int) -> tuple[int, ...]:
    return tuple(i - start for i in indices if start <= i < stop)


def _int_state(state: tuple[str, bytes] | bytes | None) -> array[int] | None:
    """An int column from pickled state: (typecode, bytes), or bare int64 bytes (the first cache format)."""
    if state is None:
        return None
    if isinstance(state, bytes):
        return _array("q", state)
    return _array(*state)


def _top_sizes_state(state: dict[str, Any]) -> array[int] | None:
    """Alternatives per position from pickled state; the first cache format kept cumulative bounds."""
    if state.get("top_sizes") is not None:
        return _array(*state["top_sizes"])
    if state.get("top_bounds") is not None:
        bounds = _array("I", state["top_bounds"])
        return array("I", (bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)))
    return None


def _array(typecode: str, raw: bytes) -> array[Any]:
    column: array[Any] = array(typecode)
    column.frombytes(raw)
    return column
