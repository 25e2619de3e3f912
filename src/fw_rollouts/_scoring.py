"""Scoring: the log-probability the model gives a text after a prompt, read from the service's echo.

:func:`score_span` is the pure part: given the logprobs of a reply that echoed the text sent, and
where in that text the span lies, it finds the span's tokens and returns a :class:`Score`.
:func:`score` and :func:`score_many` (``client.score``, ``client.score_many``) build the text
(the prompt rendered exactly as ``generate`` would send it, then the continuation, then any
suffix), send it through the client's public ``generate_many`` (one study: one budget, one
progress bar, cached like every sample) and score each reply.

**The request.** ``echo=True``, ``temperature=0``, one sample, logprobs with the client's number of
alternatives (at least 1: a client with logprobs off still scores, with 1), and the fewest
generated tokens the service accepts: ``max_tokens=0``, or 1 where the server refuses 0 (it is
then remembered for that client, server and model, and the request sent again with 1). Generated
tokens are dropped. When the continuation and suffix are short beside the prompt, ``echo_last``
asks for only the last positions: an upper bound on the tokens of continuation + suffix (their
UTF-8 bytes, since every token has at least one) plus one for a token straddling the boundary and
one for context. A server that refuses ``echo_last`` gets plain echo from then on.

**Finding the span among the echoed tokens.** In order, the first that works:

1. spelling: the token texts concatenate to the text sent, from its start (after at most two
   tokens the server added ahead of it, a BOS such as ``<s>``), or, under ``echo_last``, to a
   suffix of it (read from the end);
2. ``text_offset`` in characters, else in UTF-8 bytes, whichever agrees with more token texts
   (byte pieces such as ``"bytes:\\xe2"`` or U+FFFD spell nothing, but their offsets still place
   them). The offsets' origin is not assumed: the end of the text sent is where the first
   generated token sits (or, without one, where the last echoed token ends), which holds whether
   offsets count from the echoed part or from the start of the prompt.

**Boundaries.** A token that overlaps the span belongs to it: when the prompt ends inside a token
(``"Hello wor" + "ld"`` is tokenised ``"Hello", " world"``), that token is scored as part of the
span and :attr:`Score.boundary_inside_token` says so. Put a boundary at a token edge (a
continuation that starts with a space, or ``score(prefix, span, suffix)`` with the cut there)
to score exactly the span.

**The first position.** The first echoed position has no context: its logprob is never counted,
whatever the server sent (null or a number). A span that starts there (an empty prompt and no
BOS echoed ahead of it) has that token in :attr:`Score.unscored_token`, not in the sums.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from ._exceptions import (
    BadRequestError,
    FwRolloutsError,
    InvalidTypeError,
    MalformedResponseError,
    MissingLogprobsError,
    ValidationError,
)
from ._logprobs import Logprobs
from ._models import FwResponse, FwRollouts
from ._parsing import count_prompt_tokens
from ._validators import on_error as check_on_error

if TYPE_CHECKING:
    from ._client import AsyncFireworks, Prompt

__all__ = ["GREEDY_TOLERANCE", "BoundaryInsideToken", "Score", "score", "score_many", "score_span"]

GREEDY_TOLERANCE: Final = 1e-6
"""A token counts as greedy when its logprob is within this of the best alternative's (ties are greedy)."""

_MAX_LEAD: Final = 2
"""Tokens the server may put ahead of the text sent (a BOS or two) that the text does not contain."""

_MAX_TOKEN_BYTES: Final = 16
"""Bytes per token on average that no real text exceeds: the text's bytes over this are fewer than its tokens.

It only decides whether ``echo_last`` is worth sending; a text that beats it gets a full echo (what
``echo_last`` >= the prompt's tokens gives anyway).
"""

_FORCED: Final = ("temperature", "echo", "echo_last", "samples_per_request", "echo_once")
"""Options scoring sets itself."""

_PROMPT_ONLY: Final = ("raw", "chat_template", "chat_template_kwargs")
"""Options that shape only how the prompt is rendered (the text is then sent verbatim)."""


# -- the result ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BoundaryInsideToken:
    """A boundary of the span that fell inside a token, and what was done with that token.

    The rule: a token that overlaps the span belongs to the span, so this token is among the
    span's tokens and its logprob is in the sums. To score exactly the span, put the boundary at
    a token edge (``score(prefix, span, suffix)`` with the cut there, or a span that starts with
    a space).
    """

    boundary: Literal["start", "end"]
    """Which boundary: the span's ``start`` or its ``end``."""
    index: int | None
    """The token's index in :attr:`Score.tokens` (None: it is the :attr:`Score.unscored_token`)."""
    position: int
    """The token's position in the reply's logprobs (``score.response.logprobs``)."""
    token: str
    """The token's text."""
    chars: tuple[int, int]
    """The token's character span ``(start, end)`` in :attr:`Score.text`; the boundary lies strictly inside."""
    assigned: Literal["span"] = "span"
    """Where the token went: always the span (it overlaps it)."""


@dataclass(frozen=True, slots=True)
class Score:
    """The log-probability of a span of text given everything before it.

    Per-token tuples are aligned: ``tokens[i]``, ``token_logprobs[i]``, ``greedy[i]``,
    ``token_spans[i]`` ... describe the span's ``i``-th token. ``text[start:end]`` is the span
    (the continuation); ``sum_logprob`` is its log-likelihood.
    """

    tokens: tuple[str, ...]
    """The span's tokens (each token that overlaps the span, see :class:`BoundaryInsideToken`)."""
    token_logprobs: tuple[float, ...]
    """The logprob of each token given all before it."""
    token_ids: tuple[int, ...] | None
    """The tokenizer ids, where the server sent them."""
    top_logprobs: tuple[dict[str, float], ...] | None
    """The alternatives at each token (``{}`` where a position had none); None when none had any."""
    greedy: tuple[bool, ...] | None
    """Per token: was it the top alternative (ties count as greedy, see :data:`GREEDY_TOLERANCE`);
    None without alternatives."""
    sampling_logprobs: tuple[float | None, ...] | None
    """Fireworks' ``sampling_logprob`` of each token, where it was sent."""
    token_spans: tuple[tuple[int, int], ...]
    """Each token's character span ``(start, end)`` in :attr:`text`."""
    boundary_inside_token: tuple[BoundaryInsideToken, ...] | None
    """None when both boundaries fall between tokens; else one entry per boundary inside a token."""
    unscored_token: str | None
    """The span's first token when it is the first position of the sequence (nothing before it, no BOS
    echoed): it has no logprob, so it is not in :attr:`tokens` nor in the sums. None otherwise."""
    text: str
    """The exact text sent: the rendered prompt, the continuation, the suffix."""
    start: int
    """Where the span starts in :attr:`text` (characters)."""
    end: int
    """Where the span ends in :attr:`text` (characters)."""
    located_by: str
    """How the tokens were matched to the text: ``"spelling"``, ``"spelling from the end"`` (echo_last),
    ``"offsets in characters"`` or ``"offsets in bytes"``."""
    cached: bool = field(default=False, compare=False)
    """Whether the reply came from the local cache."""
    response: FwResponse | None = field(default=None, compare=False, repr=False)
    """The reply the score was read from (its logprobs hold every echoed position)."""

    @property
    def span(self) -> str:
        """The scored text, ``text[start:end]``."""
        return self.text[self.start : self.end]

    @property
    def num_tokens(self) -> int:
        """How many tokens were scored."""
        return len(self.token_logprobs)

    @property
    def sum_logprob(self) -> float:
        """The span's log-likelihood: the sum of :attr:`token_logprobs`."""
        return sum(self.token_logprobs, 0.0)

    @property
    def mean_logprob(self) -> float:
        """The mean of :attr:`token_logprobs` (NaN when no token was scored)."""
        return self.sum_logprob / len(self.token_logprobs) if self.token_logprobs else float("nan")

    @property
    def greedy_all(self) -> bool | None:
        """Whether every token was the top alternative (lm-eval's ``is_greedy``); None without alternatives."""
        return None if self.greedy is None else all(self.greedy)

    def __repr__(self) -> str:
        span = self.span if len(self.span) <= 40 else self.span[:37] + "..."
        inside = "" if self.boundary_inside_token is None else ", boundary_inside_token=" + "+".join(
            b.boundary for b in self.boundary_inside_token
        )
        return (
            f"Score(span={span!r}, num_tokens={self.num_tokens}, sum_logprob={self.sum_logprob:.4f}, "
            f"greedy_all={self.greedy_all}{inside}, cached={self.cached})"
        )


# -- locating the span (pure) ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Alignment:
    """Where the echoed positions sit in the text sent."""

    echoed: int
    """Positions ``0 .. echoed - 1`` are echoed; the rest were generated."""
    first: int
    """The first echoed position inside the text (those before it are tokens the server added: a BOS)."""
    starts: tuple[int, ...]
    """The character start of positions ``first .. echoed - 1`` in the text (non-decreasing)."""
    how: str


def _spell_forward(tokens: Sequence[str], text: str) -> _Alignment | None:
    """The echoed tokens spell the whole text, after at most ``_MAX_LEAD`` tokens it does not contain."""
    end = len(text)
    for lead in range(min(_MAX_LEAD, len(tokens) - 1) + 1):
        pos, i = 0, lead
        starts = []
        while pos < end and i < len(tokens):
            token = tokens[i]
            if not token or not text.startswith(token, pos):
                break
            starts.append(pos)
            pos += len(token)
            i += 1
        if pos == end and starts:
            return _Alignment(i, lead, tuple(starts), "spelling")
    return None


def _spell_backward(tokens: Sequence[str], text: str, echoed: int) -> _Alignment | None:
    """``tokens[:echoed]`` spell a suffix of the text (a partial echo, read from the end)."""
    pos = len(text)
    starts = []
    for i in range(echoed - 1, -1, -1):
        token = tokens[i]
        if not token or len(token) > pos or not text.startswith(token, pos - len(token)):
            return None
        pos -= len(token)
        starts.append(pos)
    return _Alignment(echoed, 0, tuple(reversed(starts)), "spelling from the end") if starts else None


def _char_index(byte_starts: list[int], text_bytes: int) -> Callable[[int], int]:
    """Byte offset -> the index of the character holding that byte (a byte inside a character: that character)."""

    def index(offset: int) -> int:
        if offset >= text_bytes:
            return len(byte_starts)
        return bisect.bisect_right(byte_starts, offset) - 1

    return index


def _by_offsets(
    tokens: Sequence[str], offsets: Sequence[int], text: str, candidates: Sequence[int]
) -> _Alignment | None:
    """The reading of ``text_offset`` (characters or bytes, any origin) that agrees with the most token texts."""
    n = len(tokens)
    encoded = text.encode("utf-8", "surrogatepass")
    byte_starts = list(itertools.accumulate((len(ch.encode("utf-8", "surrogatepass")) for ch in text), initial=0))[
        :-1
    ]
    units: list[tuple[str, int, Any, Any]] = [
        ("offsets in characters", len(text), lambda o: o, len),
        (
            "offsets in bytes",
            len(encoded),
            _char_index(byte_starts, len(encoded)),
            lambda t: len(t.encode("utf-8", "surrogatepass")),
        ),
    ]
    best: tuple[int, _Alignment] | None = None
    for how, length, to_char, width in units:
        for echoed in candidates:
            if echoed < n:
                ends = [offsets[echoed]]  # the first generated token sits at the end of the text sent
            else:  # nothing generated: the text ends after the last echoed token, or (full echo) length on
                ends = [length + offsets[lead] for lead in range(min(_MAX_LEAD, echoed - 1) + 1)]
                ends += [offsets[echoed - 1] + width(tokens[echoed - 1]), length]
            for end_at in dict.fromkeys(ends):
                found = _read_offsets(tokens, offsets, text, echoed, length, end_at, to_char)
                if found is None:
                    continue
                matches, first, starts = found
                if best is None or matches > best[0]:
                    best = (matches, _Alignment(echoed, first, starts, how))
    return None if best is None else best[1]


def _read_offsets(
    tokens: Sequence[str], offsets: Sequence[int], text: str, echoed: int, length: int, end_at: int, to_char: Any
) -> tuple[int, int, tuple[int, ...]] | None:
    """One reading of the offsets: (token texts that match the text where they land, first, starts), or None."""
    shift = length - end_at
    placed = [offsets[i] + shift for i in range(echoed)]
    first = 0
    # Tokens the server added ahead of the text: before its start, or zero-width at 0 and not in the text.
    while first < min(_MAX_LEAD, echoed - 1) and (
        placed[first] < 0
        or (placed[first] == 0 == placed[first + 1] and not text.startswith(tokens[first]))
    ):
        first += 1
    rest = placed[first:]
    if not rest or rest[0] < 0 or rest[-1] >= length or any(b < a for a, b in itertools.pairwise(rest)):
        return None
    starts = tuple(to_char(p) for p in rest)
    matches = sum(1 for i, s in enumerate(starts, first) if tokens[i] and text.startswith(tokens[i], s))
    # Byte pieces spell nothing; of the tokens that are text, at least half must land where their text is, or
    # these offsets describe some other text (an echo that did not happen, a wrong origin).
    readable = sum(1 for t in tokens[first:echoed] if t and "\ufffd" not in t and not t.startswith("bytes:"))
    if 2 * matches < readable:
        return None
    return matches, first, starts


def _align(
    tokens: Sequence[str], offsets: Sequence[int], text: str, *, echo_last: int | None, generated: int | None
) -> _Alignment | None:
    n = len(tokens)
    spelled = _spell_forward(tokens, text)
    if spelled is not None:
        return spelled
    # The number of echoed positions, likeliest first: all that echo_last asked for, all but what was generated.
    candidates: list[int] = []
    if echo_last is not None and echo_last < n:
        candidates.append(echo_last)
    if generated is not None and 0 <= generated < n:
        candidates.append(n - generated)
    candidates += [n - g for g in range(min(3, n))]
    candidates = list(dict.fromkeys(candidates))
    if echo_last is not None:
        for echoed in candidates:
            found = _spell_backward(tokens, text, echoed)
            if found is not None:
                return found
    counted = count_prompt_tokens(tokens, offsets, text)  # the echo split's own reading of the offsets
    if counted:
        candidates = list(dict.fromkeys([counted, *candidates]))
    return _by_offsets(tokens, offsets, text, candidates)


def _overlaps(a: int, b: int, start: int, end: int) -> bool:
    return (a < end and b > start) if a < b else start <= a < end


def score_span(
    logprobs: Logprobs,
    text: str,
    start: int,
    end: int,
    *,
    echo_last: int | None = None,
    generated: int | None = None,
) -> Score:
    """The :class:`Score` of ``text[start:end]`` from the logprobs of a reply that echoed ``text``.

    ``logprobs`` holds every returned position (the echo, then any generated tokens, which are
    dropped), as ``FwResponse.logprobs`` does; either logprob format, with or without a BOS the
    server added. ``echo_last`` is the value sent when the echo was partial (its positions then
    spell a suffix of ``text``); ``generated`` is how many trailing positions the server
    generated, if known (a hint: the alignment decides). How tokens are matched to the text,
    and what happens at a boundary inside a token, is in this module's docstring.

    Raises :class:`ValidationError` for a span that is not inside ``text`` or is empty,
    :class:`MissingLogprobsError` when the echo does not cover the span or a span token has no
    logprob, and :class:`MalformedResponseError` when the tokens cannot be placed in the text.
    """
    if not isinstance(text, str):
        raise InvalidTypeError("text", text, "the exact text sent, a string")
    for name, offset in (("start", start), ("end", end)):
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise InvalidTypeError(name, offset, "a character offset into text")
    if not 0 <= start < end <= len(text):
        raise ValidationError("start", (start, end), f"0 <= start < end <= len(text) ({len(text)})")
    tokens = logprobs.tokens
    if not tokens:
        raise MissingLogprobsError("the reply has no logprobs positions to score (does this server support echo?)")
    alignment = _align(tokens, logprobs.text_offset, text, echo_last=echo_last, generated=generated)
    if alignment is None:
        raise MalformedResponseError(
            f"cannot place the reply's {len(tokens)} tokens in the text sent: they neither spell it nor have "
            "text offsets (in characters or bytes) that fit it; did the server echo the prompt?"
        )
    first, starts = alignment.first, alignment.starts
    if starts[0] > start:
        raise MissingLogprobsError(
            f"the echo starts at character {starts[0]} of the text sent, after the span's start ({start}): "
            "the server echoed too little of the prompt"
        )
    bounds = [*starts[1:], len(text)]
    selected = [
        (i, a, b)
        for i, a, b in zip(range(first, alignment.echoed), starts, bounds, strict=True)
        if _overlaps(a, b, start, end)
    ]
    if not selected:
        raise MissingLogprobsError(f"no echoed token covers the span ({start}, {end}) of the text sent")
    # Position 0 starts the sequence: no context, so no logprob, whatever the server sent there.
    unscored = tokens[0] if selected[0][0] == 0 else None
    scored = [s for s in selected if s[0] != 0]
    positions = [i for i, _, _ in scored]
    inside = []
    for boundary, cut, (i, a, b) in (("start", start, selected[0]), ("end", end, selected[-1])):
        if a < cut < b:
            index = positions.index(i) if i else None
            inside.append(BoundaryInsideToken(boundary, index, i, tokens[i], (a, b)))  # type: ignore[arg-type]
    values = logprobs.token_logprobs
    lps: list[float] = []
    for i, _, _ in scored:
        value = values[i]
        if value is None:
            raise MissingLogprobsError(f"the reply has no logprob for the span's token {tokens[i]!r} (position {i})")
        lps.append(value)
    all_top = logprobs.top_logprobs
    tops = [dict(all_top[i] or {}) for i, _, _ in scored]
    has_top = any(tops)
    ids = logprobs.token_ids
    sampling = logprobs.sampling_logprobs
    return Score(
        tokens=tuple(tokens[i] for i, _, _ in scored),
        token_logprobs=tuple(lps),
        token_ids=None if ids is None else tuple(ids[i] for i, _, _ in scored),
        top_logprobs=tuple(tops) if has_top else None,
        greedy=tuple(_greedy(lp, top) for lp, top in zip(lps, tops, strict=True)) if has_top else None,
        sampling_logprobs=None if sampling is None else tuple(sampling[i] for i, _, _ in scored),
        token_spans=tuple((a, b) for _, a, b in scored),
        boundary_inside_token=tuple(inside) or None,
        unscored_token=unscored,
        text=text,
        start=start,
        end=end,
        located_by=alignment.how,
    )


def _greedy(logprob: float, top: Mapping[str, float]) -> bool:
    """Whether the token was the top alternative (a tie counts); False when no alternative was returned."""
    return bool(top) and logprob >= max(top.values()) - GREEDY_TOLERANCE


# -- the client's score and score_many -------------------------------------------------------------------------


@dataclass(slots=True)
class _Learned:
    """What one client learned of its servers, per (base_url, model)."""

    min_max_tokens: dict[tuple[str, str], int] = field(default_factory=dict)
    """1 where the server refused ``max_tokens=0``."""
    answered: set[tuple[str, str]] = field(default_factory=set)
    """Where a scoring request of ours was answered (so the floor above is known)."""
    no_echo_last: set[tuple[str, str]] = field(default_factory=set)
    """Where the server refused ``echo_last``."""


# Per client (weak: it goes with the client): a sibling from with_options learns on its own.
_LEARNED: weakref.WeakKeyDictionary[AsyncFireworks, _Learned] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class _Pair:
    """One pair to score, validated and rendered."""

    text: str
    start: int
    end: int
    options: dict[str, Any]
    """The call options of its request (the user's, but for prompt-only ones)."""
    server: tuple[str, str]
    """(base_url, model): what ``_Learned`` is keyed on."""
    max_tokens: int | None
    """0 or 1 as given, or None: the fewest the server accepts."""
    echo_last: int | None
    """The partial echo to ask for, or None for a full echo."""


def _check_max_tokens(value: Any, where: str = "max_tokens") -> int | None:
    if value is not None and (isinstance(value, bool) or value not in (0, 1)):
        raise ValidationError(
            where, value, "0, 1, or None (the fewest generated tokens the server accepts; they are dropped)"
        )
    return value


def _check_logprobs(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise ValidationError(where, value, "scoring needs logprobs: an integer from 1 to 5 (alternatives per token)")
    return value


def _pair(
    client: AsyncFireworks,
    prompt: Any,
    continuation: Any,
    suffix: Any,
    *,
    raw: bool | None,
    max_tokens: Any,
    options: Mapping[str, Any],
    where: str,
) -> _Pair:
    """Validate and render one pair, before anything is sent."""
    if not isinstance(continuation, str):
        raise InvalidTypeError(f"{where}continuation", continuation, "a non-empty string")
    if not continuation:
        raise ValidationError(f"{where}continuation", continuation, "a non-empty string (the text to score)")
    if not isinstance(suffix, str):
        raise InvalidTypeError(f"{where}suffix", suffix, "a string (the text after the span; may be empty)")
    if not isinstance(prompt, (str, Sequence)) or isinstance(prompt, (bytes, bytearray)):
        raise InvalidTypeError(f"{where}prompt", prompt, "a string or a list of chat messages")
    for name in _FORCED:
        if name in options:
            raise ValidationError(
                f"{where}{name}", options[name], "not an option of score: it sets temperature=0, echo (or echo_last) "
                "and one sample itself",
            )
    options = dict(options)
    if "max_tokens" in options:
        max_tokens = options.pop("max_tokens")
    max_tokens = _check_max_tokens(max_tokens, f"{where}max_tokens")
    settings = client.settings
    if "logprobs" in options:
        options["logprobs"] = _check_logprobs(options["logprobs"], f"{where}logprobs")
    else:
        options["logprobs"] = settings.logprobs or 1  # a client with logprobs off still scores, with 1 alternative
    if prompt == "" and (settings.raw if raw is None else raw):
        # Nothing before the span (generate refuses an empty prompt; here the text is not empty): options checked.
        client.render(" ", raw=True, **options)
        rendered = ""
    else:
        rendered = client.render(prompt, raw=raw, **options)
    text = rendered + continuation + suffix
    # Every token has at least one byte: the span and suffix hold at most their bytes in tokens, plus one
    # straddling the prompt's end and one for context.
    bound = len((continuation + suffix).encode("utf-8", "surrogatepass")) + 2
    echo_last = bound if bound < len(text.encode("utf-8", "surrogatepass")) // _MAX_TOKEN_BYTES else None
    model = settings.for_call({"model": options["model"]}).model if "model" in options else settings.model
    sent = {k: v for k, v in options.items() if k not in _PROMPT_ONLY}
    start = len(rendered)
    server = (settings.resolved_base_url, model)
    return _Pair(text, start, start + len(continuation), sent, server, max_tokens, echo_last)


def _coerce_pair(client: AsyncFireworks, item: Any, index: int, *, raw: bool | None, max_tokens: Any,
                 options: Mapping[str, Any]) -> _Pair:  # fmt: skip
    where = f"pairs[{index}]."
    if isinstance(item, Mapping):
        own = dict(item)
        if ("prompt" in own) == ("prefix" in own):
            raise ValidationError(f"pairs[{index}]", item, "a mapping with 'prompt' (or 'prefix') and 'continuation'")
        if ("continuation" in own) == ("span" in own):
            raise ValidationError(f"pairs[{index}]", item, "a mapping with 'continuation' (or 'span')")
        prompt = own.pop("prompt") if "prompt" in own else own.pop("prefix")
        continuation = own.pop("continuation") if "continuation" in own else own.pop("span")
        suffix = own.pop("suffix", "")
        pair_raw = own.pop("raw", raw)
        return _pair(client, prompt, continuation, suffix, raw=pair_raw, max_tokens=max_tokens,
                     options={**options, **own}, where=where)  # fmt: skip
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        suffix = item[2] if len(item) == 3 else ""
        return _pair(client, item[0], item[1], suffix, raw=raw, max_tokens=max_tokens, options=options, where=where)
    raise InvalidTypeError(
        f"pairs[{index}]", item, "a (prompt, continuation) tuple, a (prefix, span, suffix) triple, or a mapping"
    )


def _refuses(error: FwRolloutsError, name: str) -> bool:
    """Whether the server refused the request for the field ``name`` (a 400 or 422 naming it)."""
    if not isinstance(error, BadRequestError) or error.status_code not in (400, 422):
        return False
    if error.param:
        return error.param == name
    return name in error.message


def _refuses_unnamed(error: FwRolloutsError) -> bool:
    """A 400 or 422 that names no field, or names no field of the request's text (so maybe one of ours)."""
    if not isinstance(error, BadRequestError) or error.status_code not in (400, 422):
        return False
    return error.param in (None, "", "max_tokens", "echo_last", "echo") and "prompt" not in error.message.lower()


@dataclass(frozen=True, slots=True)
class _Sent:
    """What one pair's request asked for, and what came of it."""

    max_tokens: int
    echo_last: int | None
    outcome: FwResponse | FwRolloutsError


async def _fetch(
    client: AsyncFireworks,
    pairs: Sequence[_Pair],
    todo: Sequence[int],
    learned: _Learned,
    *,
    use_cache: bool | None,
    progress_bar: bool | None,
) -> dict[int, _Sent]:
    """One study of the pairs ``todo``: each one's reply or its error, with what its request asked for."""
    items = []
    for index in todo:
        p = pairs[index]
        max_tokens = p.max_tokens if p.max_tokens is not None else learned.min_max_tokens.get(p.server, 0)
        echo_last = None if p.server in learned.no_echo_last else p.echo_last
        item: dict[str, Any] = {"prompt": p.text, **p.options, "max_tokens": max_tokens}
        if echo_last is not None:
            item["echo_last"] = echo_last
        items.append(item)
    results: list[FwRollouts]
    stopped: FwRolloutsError | None = None
    try:
        results = await client.generate_many(
            items, raw=True, use_cache=use_cache, progress_bar=progress_bar, temperature=0.0, echo=True,
            samples_per_request=1, echo_once=False,
        )  # fmt: skip
    except FwRolloutsError as exc:
        if exc.results is None:
            raise
        results, stopped = exc.results, exc
    out: dict[int, _Sent] = {}
    for index, item, rollouts in zip(todo, items, results, strict=True):
        outcome: FwResponse | FwRolloutsError | None = (
            rollouts.responses[0] if rollouts.responses else next(iter(rollouts.errors.values()), None) or stopped
        )
        assert outcome is not None
        out[index] = _Sent(item["max_tokens"], item.get("echo_last"), outcome)
    return out


async def _score_all(
    client: AsyncFireworks, pairs: Sequence[_Pair], *, use_cache: bool | None, progress_bar: bool | None
) -> list[Score | FwRolloutsError]:
    """Score every pair in as few studies as the server allows: one, plus one probe on a server not seen yet
    (so that a server refusing ``max_tokens=0`` costs one refused request, not one per pair)."""
    learned = _LEARNED.setdefault(client, _Learned())
    done: dict[int, Score | FwRolloutsError] = {}
    pending = list(range(len(pairs)))
    first = pairs[0]
    unknown = first.server not in learned.answered and first.server not in learned.min_max_tokens
    if len(pairs) > 1 and first.max_tokens is None and unknown:
        rounds: list[tuple[list[int], bool | None]] = [([0], False), (pending[1:], progress_bar)]
    else:
        rounds = [(pending, progress_bar)]
    while rounds:
        todo, bar = rounds.pop(0)
        again = []
        for index, sent in (await _fetch(client, pairs, todo, learned, use_cache=use_cache, progress_bar=bar)).items():
            p, got = pairs[index], sent.outcome
            if isinstance(got, FwRolloutsError):
                # Sent again only with something changed (0 -> 1, echo_last -> a full echo): at most twice.
                # A server that never answered us may refuse a field without naming it ("invalid request"):
                # then 0 and echo_last are given up in turn, which costs bigger replies, never a wrong score.
                # A refusal that names the field comes first.
                auto_zero = p.max_tokens is None and sent.max_tokens == 0
                vague = p.server not in learned.answered and _refuses_unnamed(got)
                named_zero = auto_zero and _refuses(got, "max_tokens")
                named_tail = sent.echo_last is not None and _refuses(got, "echo_last")
                if named_zero or (auto_zero and vague and not named_tail):
                    learned.min_max_tokens[p.server] = 1  # the server's minimum: from now on, for this client
                    again.append(index)
                elif named_tail or (sent.echo_last is not None and vague):
                    learned.no_echo_last.add(p.server)
                    again.append(index)
                else:
                    done[index] = got
                continue
            learned.answered.add(p.server)
            try:
                done[index] = _score_reply(got, p, sent.echo_last)
            except FwRolloutsError as exc:
                done[index] = exc
        if again:
            rounds.insert(0, (again, progress_bar if len(again) > 1 else False))
    return [done[i] for i in range(len(pairs))]


def _score_reply(response: FwResponse, pair: _Pair, echo_last: int | None) -> Score:
    lp = response.logprobs
    if lp is None:
        raise MissingLogprobsError("the reply has no logprobs (does this server support logprobs with echo?)")
    generated = response.usage.completion_tokens if response.usage.completion_tokens else None
    scored = score_span(lp, pair.text, pair.start, pair.end, echo_last=echo_last, generated=generated)
    return dataclasses.replace(scored, cached=response.cached, response=response)


async def score(
    client: AsyncFireworks,
    prompt: Prompt,
    continuation: str,
    suffix: str = "",
    *,
    raw: bool | None = None,
    use_cache: bool | None = None,
    max_tokens: int | None = None,
    **options: Any,
) -> Score:
    """:meth:`AsyncFireworks.score`: the :class:`Score` of ``continuation`` after ``prompt`` (and before ``suffix``)."""
    pair = _pair(client, prompt, continuation, suffix, raw=raw, max_tokens=max_tokens, options=options, where="")
    (result,) = await _score_all(client, [pair], use_cache=use_cache, progress_bar=False)
    if isinstance(result, FwRolloutsError):
        raise result
    return result


async def score_many(
    client: AsyncFireworks,
    pairs: Sequence[Any],
    *,
    raw: bool | None = None,
    use_cache: bool | None = None,
    progress_bar: bool | None = None,
    on_error: Literal["raise", "return"] = "raise",
    max_tokens: int | None = None,
    **options: Any,
) -> list[Any]:
    """:meth:`AsyncFireworks.score_many`: a :class:`Score` per pair, in order, from one study."""
    check_on_error(on_error)
    if isinstance(pairs, (str, bytes, Mapping)) or not isinstance(pairs, Sequence):
        raise InvalidTypeError("pairs", pairs, "a list of (prompt, continuation) tuples, triples or mappings")
    if not pairs:
        raise ValidationError("pairs", pairs, "must hold at least one pair")
    _check_max_tokens(max_tokens)
    checked = [
        _coerce_pair(client, item, i, raw=raw, max_tokens=max_tokens, options=options) for i, item in enumerate(pairs)
    ]
    results = await _score_all(client, checked, use_cache=use_cache, progress_bar=progress_bar)
    failed = [i for i, r in enumerate(results) if isinstance(r, FwRolloutsError)]
    if failed and on_error == "raise":
        error = results[failed[0]]
        assert isinstance(error, FwRolloutsError)
        shown = ", ".join(map(str, failed[:10])) + (", ..." if len(failed) > 10 else "")
        raise error._evolve(
            message=f"pairs[{failed[0]}]: {error.message} [{len(failed)} of {len(results)} pairs failed ({shown}); "
            "on_error='return' gives the others' scores, and a re-run requests only the failed ones]",
            results=results,
        )
    return results
