"""Token log-probabilities: the public view over the packed columns of :mod:`._columns`.

A sample with thousands of tokens and five alternatives per token would cost kilobytes per
token as Python lists of dicts; :class:`Logprobs` keeps arrays (:class:`~._columns.Columns`)
and builds each list view the first time it is read.

The samples of one prompt can share its echoed positions (:func:`share_prefix`): each then holds
its generated positions only and points at one prefix object (the echo module's ``PromptPart``),
while every public view, slice, sum and comparison reads as the whole run it stands for.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from typing import Any, NamedTuple, Protocol, TypeVar, cast

from ._columns import _STRINGS as _STRINGS  # re-exported: the bench measures the vocabulary through this module
from ._columns import _VOCAB as _VOCAB
from ._columns import Columns
from ._locks import ForkSafeLock
from ._packing import pack, peek_attributes, read_header, unpack

__all__ = ["Logprobs", "SharedPrefix", "TokenLogprob", "generation_offset", "prefix_of", "share_prefix"]

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


class SharedPrefix(Protocol):
    """What the logprobs of several samples share: an object holding the leading positions (a ``PromptPart``)."""

    @property
    def logprobs(self) -> Logprobs:
        """The shared positions: the echoed prompt, as a plain (unshared) :class:`Logprobs`."""
        ...


class Logprobs:
    """Log-probabilities of a run of tokens, prompt first when echo was on.

    The public views are plain Python lists, built the first time each is read and then
    kept, so ``lp.top_logprobs[i]`` in a loop is cheap::

        lp.tokens            # list[str]
        lp.token_logprobs    # list[float | None]; None where there is no logprob (first echoed token)
        lp.top_logprobs      # list[dict[str, float] | None]; the alternatives at each position
        lp.text_offset       # list[int]; character offsets in the returned text
        lp.token_ids         # list[int] | None; only when the server sends ids
        lp.top_token_ids     # list[dict[str, int] | None] | None; the alternatives' ids (content format)
        lp.sampling_logprobs # list[float | None] | None; Fireworks' behaviour-policy logprobs, if sent

    Every read returns the same list: treat it as read-only (copy it before changing it).
    :meth:`to_dict` returns new lists. With echo, the first ``num_prompt_tokens`` positions
    are the prompt; :meth:`get_prompt_logprobs` and :meth:`get_generation_logprobs` slice
    them apart. ``lp["tokens"]`` works too, for code written against the peer's dict results.
    """

    __slots__ = ("_cols", "_packed", "_part", "_views", "echo", "num_prompt_tokens", "prompt_length")

    _cols: Columns
    """This object's own positions: all of them, or the generated ones when ``_part`` holds the prompt's."""
    _packed: bytes | None
    _part: SharedPrefix | None
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
        top_token_ids: Sequence[dict[str, int] | None] | None = None,
        num_prompt_tokens: int = 0,
        prompt_length: int = 0,
        echo: bool = False,
    ) -> None:
        self._cols = Columns.build(
            tokens, token_logprobs, top_logprobs, text_offset, token_ids, sampling_logprobs, top_token_ids=top_token_ids
        )
        self._packed = None
        self._part = None
        self._views = None
        self.num_prompt_tokens = num_prompt_tokens
        self.prompt_length = prompt_length
        self.echo = echo

    @classmethod
    def _of(cls, columns: Columns, num_prompt_tokens: int, prompt_length: int, echo: bool) -> Logprobs:
        self = cls.__new__(cls)
        self._cols, self._packed, self._part, self._views = columns, None, None, None
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
            part = self._part
            if part is None:
                return cast(_T, views.setdefault(name, build(self._cols)))
            # The prefix keeps its own view, once for every sample that shares it; this one copies its pointers.
            prefix = part.logprobs
            view = _join(name, prefix._view(name, build), build(self._cols), len(prefix), len(self._cols))
            return cast(_T, views.setdefault(name, view))

    def _peek(self, name: str, build: Callable[[Columns], _T]) -> _T:
        """The view ``name`` if it was built, else a new list that is not kept."""
        views = self._views
        if views is not None and name in views:
            return cast(_T, views[name])
        part = self._part
        if part is None:
            return build(self._cols)
        prefix = part.logprobs
        return cast(_T, _join(name, prefix._peek(name, build), build(self._cols), len(prefix), len(self._cols)))

    def _fresh(self, name: str, build: Callable[[Columns], _T]) -> _T:
        """A new list for the view ``name`` (the kept views neither read nor kept)."""
        part = self._part
        if part is None:
            return build(self._cols)
        prefix = part.logprobs
        return cast(_T, _join(name, build(prefix._cols), build(self._cols), len(prefix), len(self._cols)))

    def __len__(self) -> int:
        part = self._part
        return len(self._cols) if part is None else len(part.logprobs) + len(self._cols)

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
    def top_token_ids(self) -> list[dict[str, int] | None] | None:
        """The alternatives' tokenizer ids at each position as ``{token: id}`` (the tokens of :attr:`top_logprobs`),
        or None when the server did not send them (Fireworks sends them in the content format only:
        ``logprobs_format="content"``)."""
        return self._view("top_token_ids", Columns.top_id_list)

    @property
    def top_k(self) -> int:
        """How many alternatives were asked for per position (``logprobs=5``: 5), as the positions show it; 0 when
        none were returned.

        Not the largest count at any position: the legacy format adds the chosen token as a sixth entry where it
        is not among the top five, and that entry is not counted. Read off the positions as
        :func:`._uncertainty.requested_alternatives` does (the rule :meth:`ranks` uses without ``k``).
        """
        from ._uncertainty import requested_alternatives

        top = self._peek("top_logprobs", Columns.top_list)
        return requested_alternatives(top, self._peek("tokens", Columns.token_strings)) or 0

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

    # -- uncertainty and frames (the arithmetic in ._uncertainty, the frames in ._frames) --------

    def topk_entropy(self) -> list[float | None]:
        """Per position, ``-sum(p * log p)`` over the returned alternatives (nats); None where none were returned.

        A partial sum over the top k, never the full entropy: read it with :meth:`residual_mass`.
        """
        from ._uncertainty import topk_entropy

        return [topk_entropy(alts) for alts in self._peek("top_logprobs", Columns.top_list)]

    def residual_mass(self) -> list[float | None]:
        """Per position, ``1 - sum(p)`` over the returned alternatives (clipped at 0); None where none were returned."""
        from ._uncertainty import residual_mass

        return [residual_mass(alts) for alts in self._peek("top_logprobs", Columns.top_list)]

    def surprisal(self) -> list[float | None]:
        """Per position, ``-logprob`` of the token (nats); None where there is no logprob (the first echoed token)."""
        from ._uncertainty import surprisal

        return [surprisal(lp) for lp in self._peek("token_logprobs", Columns.logprob_list)]

    def ranks(self, *, k: int | None = None) -> list[int | None]:
        """Per position, the token's rank among the alternatives (0: the most likely); None beyond the top k.

        ``k``: how many alternatives were asked for (``top_logprobs``, else ``logprobs``). The
        legacy format adds the chosen token to the top k where it is not among them; such a
        token's rank is not known and is None. Without ``k`` it is read off the run, as :attr:`top_k` is
        (see :func:`._uncertainty.requested_alternatives`).
        """
        from ._uncertainty import rank, requested_alternatives

        top = self._peek("top_logprobs", Columns.top_list)
        tokens = self._peek("tokens", Columns.token_strings)
        if k is None:
            k = requested_alternatives(top, tokens)
        return [rank(token, alts, k) for token, alts in zip(tokens, top, strict=True)]

    def to_numpy(self, *, k: int | None = None) -> Any:
        """One record per position as a numpy structured array (needs numpy: ``pip install 'fw-rollouts[pandas]'``).

        Fields: token, token_id, logprob, prob, rank, topk_entropy, residual_mass, is_prompt,
        sampling_logprob, text_offset; NaN (floats) or -1 (integers) where a value is missing.
        ``k`` as for :meth:`ranks`.
        """
        from ._frames import logprobs_array

        return logprobs_array(self, k=k)

    def to_pandas(self, *, k: int | None = None) -> Any:
        """The fields of :meth:`to_numpy` as a pandas DataFrame, one row per position (the ``pandas`` extra)."""
        from ._frames import logprobs_frame

        return logprobs_frame(self, k=k)

    # -- slicing -------------------------------------------------------------

    def get_prompt_logprobs(self) -> Logprobs:
        """The echoed prompt positions (empty without echo); one object for every sample sharing them."""
        part = self._part
        if part is not None:
            return part.logprobs
        k = self.num_prompt_tokens
        return Logprobs._of(self._cols.span(0, k), k, self.prompt_length, self.echo and k > 0)

    def get_generation_logprobs(self) -> Logprobs:
        """The generated positions only (this object itself when there is no prompt part)."""
        if self._part is not None:
            return self._own()
        if self.num_prompt_tokens == 0 and self.prompt_length == 0 and not self.echo:
            return self  # nothing to cut off; sharing keeps the views built once
        return Logprobs._of(self._cols.span(self.num_prompt_tokens, len(self._cols)), 0, 0, False)

    def _own(self) -> Logprobs:
        """This object's own positions as plain logprobs, still packed if these are (a cache hit not read yet)."""
        own = Logprobs.__new__(Logprobs)
        own._part, own._views = None, None
        own.num_prompt_tokens, own.prompt_length, own.echo = 0, 0, False
        packed = self._packed
        if packed is not None:
            own._packed = packed
        else:  # unpacked: _cols is set before _packed is cleared
            own._cols, own._packed = self._cols, None
        return own

    # -- summaries -----------------------------------------------------------

    def sum(self) -> float:
        """Sum of the defined logprobs (the log-probability of the whole token run)."""
        part = self._part
        if part is None:
            return self._cols.total()
        # One pass in order over both parts: the very float the whole run's columns would sum to.
        return sum(chain(part.logprobs._cols.lp, self._cols.lp), 0.0)

    def mean(self) -> float:
        """Mean of the defined logprobs (NaN when there are none)."""
        part = self._part
        count = len(self._cols) - len(self._cols.lp_none)
        if part is not None:
            count += len(part.logprobs) - len(part.logprobs._cols.lp_none)
        return self.sum() / count if count else float("nan")

    def nbytes(self) -> int:
        """Bytes held by this object's columns, excluding the shared token vocabulary and the list views.

        A prompt part shared with other samples is not counted either (it is held once, whatever
        the number of samples): ``get_prompt_logprobs().nbytes()`` is its size.
        """
        return sys.getsizeof(self) + self._cols.nbytes()

    # -- conversions ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (new lists and dicts, not the kept views), JSON-serialisable."""
        fresh = self._fresh
        return {
            "tokens": fresh("tokens", Columns.token_strings),
            "token_logprobs": fresh("token_logprobs", Columns.logprob_list),
            "top_logprobs": fresh("top_logprobs", Columns.top_list),
            "text_offset": fresh("text_offset", Columns.offset_list),
            "token_ids": fresh("token_ids", Columns.id_list),
            "sampling_logprobs": fresh("sampling_logprobs", Columns.sampling_list),
            "top_token_ids": fresh("top_token_ids", Columns.top_id_list),
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
        self._part = None
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
        """The logprobs in the data-only packed format (FWLP, see :mod:`._packing`); see :meth:`from_packed`.

        With a shared prompt part, the packed form holds every position, the prompt's included
        (``get_generation_logprobs().packed()`` is the generated part alone).
        """
        packed = self._packed
        if packed is not None and self._part is None:
            return packed
        columns = self._cols if self._part is None else self._whole()
        return pack(
            columns, num_prompt_tokens=self.num_prompt_tokens, prompt_length=self.prompt_length, echo=self.echo
        )

    def _whole(self) -> Columns:
        """Every position in one set of columns (a copy of the shared prompt's: for the rare whole packed form)."""
        fresh = self._fresh
        return Columns.build(
            fresh("tokens", Columns.token_strings),
            fresh("token_logprobs", Columns.logprob_list),
            fresh("top_logprobs", Columns.top_list),
            fresh("text_offset", Columns.offset_list),
            fresh("token_ids", Columns.id_list),
            fresh("sampling_logprobs", Columns.sampling_list),
            top_token_ids=fresh("top_token_ids", Columns.top_id_list),
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

    def __getstate__(self) -> bytes | tuple[SharedPrefix, bytes]:
        # Vocabulary indices are per process: pickle the packed form, which holds the strings. A shared
        # prompt part is pickled as itself: pickle's memo then writes it once for all the samples in one dump.
        part = self._part
        if part is None:
            return self.packed()
        return part, self._own().packed()

    def __setstate__(self, state: bytes | tuple[SharedPrefix, bytes]) -> None:
        if isinstance(state, tuple):
            part, own = state
            self._set_packed(own)
            self._part = part
            prefix = part.logprobs
            self.num_prompt_tokens, self.prompt_length, self.echo = (
                prefix.num_prompt_tokens,
                prefix.prompt_length,
                prefix.echo,
            )
            return
        self._set_packed(state)
        self._part = None

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
    ("top_token_ids", Columns.top_id_list),
)



def _join(name: str, head: Any, tail: Any, n_head: int, n_tail: int) -> Any:
    """The view ``name`` of ``n_head`` shared positions (``head``) then ``n_tail`` own ones (``tail``), as a new list.

    It is the list the whole run's columns would give: sampling logprobs are None when
    neither part has them and None-padded where one part lacks them; token ids are None
    unless every position has one.
    """
    if name == "sampling_logprobs":
        if head is None and tail is None:
            return None
        return (head if head is not None else [None] * n_head) + (tail if tail is not None else [None] * n_tail)
    if name in ("token_ids", "top_token_ids"):
        # A reply sends an id with every token or with none; a run with no generated position keeps the prompt's.
        if head is None or (tail is None and n_tail):
            return None
        return head + (tail or [])
    return head + tail


def share_prefix(part: SharedPrefix, rest: Logprobs, start: int | None = None) -> Logprobs:
    """``part.logprobs`` followed by ``rest``, as one :class:`Logprobs` that holds ``rest`` only and points at ``part``.

    ``rest`` is a plain run of generated positions (no echo, no shared part of its own); with
    ``start``, its text offsets are moved so that the first one is ``start`` (the offset of
    the first generated token in the echoed text) and its columns shaped as the joined run's
    (:meth:`Columns.after`); without, they are taken as they are (as a cache record stored them,
    already so), and ``rest`` stays packed if it is (a cache hit). The result reads exactly as the whole run would:
    echo on, ``num_prompt_tokens`` and ``prompt_length`` those of the prefix.
    """
    prefix = part.logprobs
    if rest._part is not None or rest.echo or rest.num_prompt_tokens:
        raise ValueError("share_prefix takes the generated positions alone (get_generation_logprobs())")
    if prefix._part is not None or not prefix.echo or prefix.num_prompt_tokens != len(prefix):
        raise ValueError("a shared prefix is the echoed prompt positions alone (get_prompt_logprobs())")
    own = rest._own()
    if start is not None:
        columns = rest._cols
        if len(columns):
            columns = columns.shifted(start - columns.offset_at(0))
        own._cols, own._packed = columns.after(prefix._cols), None
    self = Logprobs.__new__(Logprobs)
    self._part, self._views = part, None
    packed = own._packed
    if packed is not None:
        self._packed = packed
    else:
        self._cols, self._packed = own._cols, None
    self.num_prompt_tokens, self.prompt_length, self.echo = prefix.num_prompt_tokens, prefix.prompt_length, True
    return self


def prefix_of(logprobs: Logprobs) -> SharedPrefix | None:
    """The part ``logprobs`` shares with other samples (see :func:`share_prefix`), or None."""
    return logprobs._part


def generation_offset(logprobs: Logprobs) -> int:
    """Where the positions after the prompt start, as a text offset in the echoed text.

    The offset of the first generated position; when there is none, just past the last
    prompt token (its offset plus its length in characters).
    """
    k = logprobs.num_prompt_tokens
    part = logprobs._part
    if part is not None:
        own = logprobs._cols
        return own.offset_at(0) if len(own) else part.logprobs._cols.end_offset()
    columns = logprobs._cols
    if len(columns) > k:
        return columns.offset_at(k)
    return columns.span(0, k).end_offset()
