"""Token log-probabilities: the public view over the packed columns of :mod:`._columns`.

A sample with thousands of tokens and five alternatives per token would cost kilobytes per
token as Python lists of dicts; :class:`Logprobs` keeps arrays (:class:`~._columns.Columns`)
and builds each list view the first time it is read.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar, cast

from ._columns import _STRINGS as _STRINGS  # re-exported: the bench measures the vocabulary through this module
from ._columns import _VOCAB as _VOCAB
from ._columns import Columns
from ._locks import ForkSafeLock
from ._packing import pack, peek_attributes, read_header, unpack

__all__ = ["Logprobs", "TokenLogprob"]

_T = TypeVar("_T")

# Guards only the creation of an instance's view dict, so that two threads reading a view for the
# first time agree on the list they return.
_VIEWS_LOCK = ForkSafeLock()


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

    The public views are plain Python lists, built the first time each is read and then
    kept, so ``lp.top_logprobs[i]`` in a loop is cheap::

        lp.tokens            # list[str]
        lp.token_logprobs    # list[float | None]; None where there is no logprob (first echoed token)
        lp.top_logprobs      # list[dict[str, float] | None]; the alternatives at each position
        lp.text_offset       # list[int]; character offsets in the returned text
        lp.token_ids         # list[int] | None; only when the server sends ids
        lp.sampling_logprobs # list[float | None] | None; Fireworks' behaviour-policy logprobs, if sent

    Every read returns the same list: treat it as read-only (copy it before changing it).
    :meth:`to_dict` returns new lists. With echo, the first ``num_prompt_tokens`` positions
    are the prompt; :meth:`get_prompt_logprobs` and :meth:`get_generation_logprobs` slice
    them apart. ``lp["tokens"]`` works too, for code written against the peer's dict results.
    """

    __slots__ = ("_cols", "_packed", "_views", "echo", "num_prompt_tokens", "prompt_length")

    _cols: Columns
    _packed: bytes | None
    _views: dict[str, Any] | None
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
        self._cols = Columns.build(tokens, token_logprobs, top_logprobs, text_offset, token_ids, sampling_logprobs)
        self._packed = None
        self._views = None
        self.num_prompt_tokens = num_prompt_tokens
        self.prompt_length = prompt_length
        self.echo = echo

    @classmethod
    def _of(cls, columns: Columns, num_prompt_tokens: int, prompt_length: int, echo: bool) -> Logprobs:
        self = cls.__new__(cls)
        self._cols, self._packed, self._views = columns, None, None
        self.num_prompt_tokens, self.prompt_length, self.echo = num_prompt_tokens, prompt_length, echo
        return self

    # -- public views --------------------------------------------------------

    def _view(self, name: str, build: Callable[[Columns], _T]) -> _T:
        """The view ``name``, built from the columns on first use and kept."""
        views = self._views
        if views is None:
            with _VIEWS_LOCK:
                views = self._views
                if views is None:
                    views = self._views = {}
        try:
            return cast(_T, views[name])
        except KeyError:
            # setdefault: when two threads build the same view at once, both return the first one stored.
            return cast(_T, views.setdefault(name, build(self._cols)))

    def _peek(self, name: str, build: Callable[[Columns], _T]) -> _T:
        """The view ``name`` if it was built, else a new list that is not kept."""
        views = self._views
        if views is not None and name in views:
            return cast(_T, views[name])
        return build(self._cols)

    def __len__(self) -> int:
        return len(self._cols)

    @property
    def tokens(self) -> list[str]:
        """The token strings, one per position."""
        return self._view("tokens", Columns.token_strings)

    @property
    def token_logprobs(self) -> list[float | None]:
        """Log-probability of each token; None where the server gave none (the first echoed token)."""
        return self._view("token_logprobs", Columns.logprob_list)

    @property
    def sampling_logprobs(self) -> list[float | None] | None:
        """Fireworks' ``sampling_logprob`` per token (after temperature/top_p/top_k), when it was sent."""
        return self._view("sampling_logprobs", Columns.sampling_list)

    @property
    def text_offset(self) -> list[int]:
        """Character offset of each token in the returned text (derived from token lengths if not sent)."""
        return self._view("text_offset", Columns.offset_list)

    @property
    def token_ids(self) -> list[int] | None:
        """The tokenizer ids of the tokens, or None when the server did not send them."""
        return self._view("token_ids", Columns.id_list)

    @property
    def top_logprobs(self) -> list[dict[str, float] | None]:
        """The alternatives at each position as ``{token: logprob}``; None where none were returned."""
        return self._view("top_logprobs", Columns.top_list)

    @property
    def top_k(self) -> int:
        """The largest number of alternatives returned at any position."""
        return self._cols.max_top()

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
        # One pass needs no kept views: iterating every sample once must not keep their lists alive.
        token_ids = self._peek("token_ids", Columns.id_list)
        ids: Iterable[int | None] = token_ids if token_ids is not None else [None] * len(self)
        columns = (
            self._peek("tokens", Columns.token_strings),
            self._peek("token_logprobs", Columns.logprob_list),
            self._peek("top_logprobs", Columns.top_list),
            self._peek("text_offset", Columns.offset_list),
            ids,
        )
        for row in zip(*columns, strict=True):
            yield TokenLogprob(*row)

    # -- slicing -------------------------------------------------------------

    def get_prompt_logprobs(self) -> Logprobs:
        """The echoed prompt positions (empty without echo)."""
        k = self.num_prompt_tokens
        return Logprobs._of(self._cols.span(0, k), k, self.prompt_length, self.echo and k > 0)

    def get_generation_logprobs(self) -> Logprobs:
        """The generated positions only (this object itself when there is no prompt part)."""
        if self.num_prompt_tokens == 0 and self.prompt_length == 0 and not self.echo:
            return self  # nothing to cut off; sharing keeps the views built once
        return Logprobs._of(self._cols.span(self.num_prompt_tokens, len(self._cols)), 0, 0, False)

    # -- summaries -----------------------------------------------------------

    def sum(self) -> float:
        """Sum of the defined logprobs (the log-probability of the whole token run)."""
        return self._cols.total()

    def mean(self) -> float:
        """Mean of the defined logprobs (NaN when there are none)."""
        count = len(self._cols) - len(self._cols.lp_none)
        return self.sum() / count if count else float("nan")

    def nbytes(self) -> int:
        """Bytes held by this object's columns, excluding the shared token vocabulary and the list views."""
        return sys.getsizeof(self) + self._cols.nbytes()

    # -- conversions ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (new lists and dicts, not the kept views), JSON-serialisable."""
        c = self._cols
        return {
            "tokens": c.token_strings(),
            "token_logprobs": c.logprob_list(),
            "top_logprobs": c.top_list(),
            "text_offset": c.offset_list(),
            "token_ids": c.id_list(),
            "num_prompt_tokens": self.num_prompt_tokens,
            "prompt_length": self.prompt_length,
            "echo": self.echo,
        }

    @classmethod
    def from_packed(cls, packed: bytes, *, verified: bool = False) -> Logprobs:
        """Logprobs that unpack ``packed`` (from :meth:`packed`) on first use.

        A cache hit thus costs a header and checksum check, not the unpacking of every column
        of every sample, until the logprobs are read. Raises ValueError when ``packed`` is not
        a well-formed packed form; what only a full unpack can check raises ValueError on first use.
        ``verified=True`` skips the checksum, for bytes whose integrity the caller has just checked
        (the cache record's own CRC covers them).
        """
        self = cls.__new__(cls)
        if verified and type(packed) is bytes:  # a cache hit: as little as possible until the logprobs are read
            self.echo, self.num_prompt_tokens, self.prompt_length = peek_attributes(packed)
            self._packed, self._views = packed, None
            return self
        self._set_packed(packed, checksum=not verified)
        return self

    def _set_packed(self, packed: bytes, *, checksum: bool = True) -> None:
        if isinstance(packed, bytearray | memoryview):
            packed = bytes(packed)
        if checksum:
            header = read_header(packed)
            echo, num_prompt_tokens, prompt_length = header.echo, header.num_prompt_tokens, header.prompt_length
        else:  # verified bytes (a cache hit): the full header check waits for the first read of a column
            echo, num_prompt_tokens, prompt_length = peek_attributes(packed)
        self._packed, self._views = packed, None
        with contextlib.suppress(AttributeError):  # unset on a new instance
            del self._cols  # __setstate__ on a used instance: the columns come from ``packed`` now
        self.num_prompt_tokens, self.prompt_length, self.echo = num_prompt_tokens, prompt_length, echo

    def packed(self) -> bytes:
        """The logprobs in the data-only packed format (FWLP, see :mod:`._packing`); see :meth:`from_packed`."""
        packed = self._packed
        if packed is not None:
            return packed
        return pack(
            self._cols, num_prompt_tokens=self.num_prompt_tokens, prompt_length=self.prompt_length, echo=self.echo
        )

    def __getattr__(self, name: str) -> Any:
        # Only reached for a slot not set yet: the columns of a lazily unpacked instance.
        if name != "_cols":
            raise AttributeError(name)
        packed = self._packed
        if packed is None:
            # Another thread unpacked between the failed lookup and here (or there is nothing to unpack).
            return object.__getattribute__(self, name)
        # The checksum was checked by from_packed/__setstate__ (or the cache record's CRC); unpack checks the rest.
        columns = unpack(packed, checksum=False)
        self._cols = columns
        self._packed = None  # set after _cols, so a concurrent reader never finds neither
        return columns

    def __getstate__(self) -> bytes:
        # Vocabulary indices are per process: pickle the packed form, which holds the strings.
        return self.packed()

    def __setstate__(self, state: bytes) -> None:
        self._set_packed(state)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Logprobs):
            return NotImplemented
        if (self.num_prompt_tokens, self.prompt_length, self.echo, len(self)) != (
            other.num_prompt_tokens,
            other.prompt_length,
            other.echo,
            len(other),
        ):
            return False
        return all(self._peek(name, build) == other._peek(name, build) for name, build in _VIEWS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Logprobs(tokens={len(self)}, prompt_tokens={self.num_prompt_tokens}, "
            f"top_k={self.top_k}, echo={self.echo})"
        )


_COLUMNS = ("tokens", "token_logprobs", "top_logprobs", "text_offset", "token_ids")
_VIEWS: tuple[tuple[str, Callable[[Columns], Any]], ...] = (
    ("tokens", Columns.token_strings),
    ("token_logprobs", Columns.logprob_list),
    ("sampling_logprobs", Columns.sampling_list),
    ("text_offset", Columns.offset_list),
    ("token_ids", Columns.id_list),
    ("top_logprobs", Columns.top_list),
)
