"""Forking Paths: where a sample could have gone another way, and where it goes when it does.

:func:`fork_points` reads a sample's generated logprobs: the positions where an alternative token had more
than ``threshold`` probability. :meth:`AsyncFireworks.fork` continues ``n_samples`` from the sample's own
generated text up to such a position with the alternative in place of the chosen token, and reads each
continuation's answer; :meth:`AsyncFireworks.forks` runs every fork of a sample as one study.

**The prefix is the exact generated text.** A fork's prompt is ``response.prompt + response.full[:offset] +
token``: the prompt that was sent, the generated text sliced at the position's character offset (from the
server's ``text_offset``, checked against the text), then the alternative. Never ``"".join(tokens)``, which is
not the text where tokens are byte pieces and loses whatever the server did not send as tokens.

**Re-tokenisation.** The fork is sent as text, and the server tokenises it again: the tokens it reads are not
necessarily the ones the model generated. At the boundary especially, the end of the prefix and the
alternative may merge into another token (``"answer" + "s"`` as ``"answers"``) or split differently, and the
continuation is then conditioned on a token sequence the model never produced. Forks whose alternative is a
whole word after a space (the common case) re-tokenise as generated. Token-id prompts would avoid this;
this client sends text prompts only.

**Byte pieces cannot be sent as text.** A token that is part of a UTF-8 character (shown by servers as
``"bytes:\\xe6\\x9d"`` or with U+FFFD) is not text: a fork whose alternative is one is refused, and so is a
fork at a position inside a character (after such a piece), since its prefix ends mid-character.
:meth:`AsyncFireworks.forks` skips both, with a warning counting them.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._answers import extract_answer
from ._exceptions import InvalidTypeError, ValidationError
from ._importance import answer_distribution
from ._models import FwResponse, FwRollouts

if TYPE_CHECKING:
    import os

    from ._client import AsyncFireworks

__all__ = ["Fork", "ForkPoint", "fork", "fork_points", "fork_prompt", "forks"]

Answer = Callable[[str], "str | None"]

_BYTES_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True, slots=True)
class ForkPoint:
    """A generated position where another token had more than the threshold's probability."""

    position: int
    """Index of the position among the generated tokens (0 is the first generated token)."""
    offset: int | None
    """Character offset of the chosen token in ``response.full``; None when the position is inside a
    multi-byte character (after a byte piece), where no fork can be sent as text."""
    chosen: str
    """The token the sample has there."""
    chosen_prob: float
    """Its probability."""
    alternatives: dict[str, float]
    """The other tokens above the threshold -> their probability, most likely first."""


@dataclass(frozen=True, slots=True)
class Fork:
    """The samples continued from a sample's prefix with ``token`` at ``position``, and their answers."""

    position: int
    """The generated position forked at."""
    offset: int
    """Its character offset in the base sample's generated text."""
    token: str
    """The token put there."""
    chosen: str
    """The token the base sample had there."""
    prob: float | None
    """The token's probability at that position, None when it was not among the returned alternatives."""
    prefix: str
    """The exact prompt sent: base prompt + generated text up to ``offset`` + ``token``."""
    rollouts: FwRollouts
    """The continuations (their ``full`` is what follows ``token``)."""
    texts: tuple[str, ...]
    """Each continuation's whole generated text, from the base's generation start: the base's text up to
    ``offset``, ``token``, the continuation. The answers are read from these."""
    answers: tuple[str | None, ...]
    """Each continuation's answer (None where none was found)."""
    outcomes: dict[str, float]
    """The answer distribution over the continuations."""
    base_answer: str | None
    """The base sample's own answer, for comparison."""

    def __repr__(self) -> str:
        shown = ", ".join(f"{a!r}: {p:.2f}" for a, p in list(self.outcomes.items())[:4])
        return (
            f"Fork(position={self.position}, token={self.token!r}, chosen={self.chosen!r}, "
            f"samples={len(self.rollouts)}, outcomes={{{shown}}}, base_answer={self.base_answer!r})"
        )


# -- pure: positions, offsets, prompts -------------------------------------------------------------------------


def is_byte_piece(token: str) -> bool:
    """Whether ``token`` stands for bytes that are not a whole character (``bytes:\\x..`` or U+FFFD)."""
    return token.startswith("bytes:") or "\ufffd" in token


def _piece_bytes(token: str) -> bytes | None:
    """The bytes a ``bytes:\\xe6\\x9d`` token stands for; None when unknown (a U+FFFD rendering)."""
    if not token.startswith("bytes:"):
        return None
    found = _BYTES_ESCAPE.findall(token)
    return bytes(int(h, 16) for h in found) if found else None


def _generated(response: Any, argument: str = "response") -> tuple[FwResponse, Any]:
    if not isinstance(response, FwResponse):
        raise InvalidTypeError(argument, response, "an FwResponse (one sample of generate)")
    generated = response.get_generation_logprobs()
    if generated is None or len(generated) == 0:
        raise ValidationError(
            argument, response, "a sample with logprobs of its generated tokens (sampled with logprobs=1..5)"
        )
    return response, generated


def _spells(full: str, tokens: Sequence[str], starts: Sequence[int | None]) -> bool:
    """Whether every text token stands at its start in ``full`` (a token cut by the end of ``full``, as a
    stripped stop string leaves it, counts), the starts never decreasing."""
    last = 0
    for token, start in zip(tokens, starts, strict=True):
        if start is None:
            continue
        if start < last or start > len(full):
            return False
        last = start
        if is_byte_piece(token) or full.startswith(token, start):
            continue
        if not (start + len(token) > len(full) and token.startswith(full[start:])):
            return False
    return True


def _char_starts(full: str, tokens: Sequence[str], offsets: Sequence[int]) -> list[int | None] | None:
    """Each generated token's character offset in ``full``, or None when the logprobs do not spell it.

    Tried in order, each checked against the text: the server's ``text_offset`` relative to the first
    generated position (character offsets); the same as UTF-8 byte offsets (a byte offset inside a character
    gives None there); the running sum of the token texts (right only where no token is a byte piece, whose
    text is not the text).
    """
    base = offsets[0] if offsets else 0
    relative = [o - base for o in offsets]
    candidates: list[list[int | None]] = [list(relative)]
    if not full.isascii():
        encoded = full.encode("utf-8")
        as_bytes: list[int | None] = []
        for b in relative:
            try:
                as_bytes.append(len(encoded[:b].decode("utf-8")) if 0 <= b <= len(encoded) else -1)
            except UnicodeDecodeError:
                as_bytes.append(None)
        candidates.append(as_bytes)
    running: list[int | None] = []
    pos = 0
    for token in tokens:
        running.append(pos)
        pos += len(token)
    candidates.append(running)
    for starts in candidates:
        if len(starts) == len(tokens) and _spells(full, tokens, starts):
            return _mark_inside(tokens, starts)
    return None


def _mark_inside(tokens: Sequence[str], starts: list[int | None]) -> list[int | None]:
    """``starts`` with None at positions inside a character: after byte pieces that do not end one."""
    out = list(starts)
    pending = b""
    unknown = False
    for i, token in enumerate(tokens):
        if (pending or unknown) and i:
            out[i] = None
        if not is_byte_piece(token):
            pending, unknown = b"", False
            continue
        piece = _piece_bytes(token)
        if piece is None:
            unknown = True  # a U+FFFD rendering: how many bytes it stands for is not known
            continue
        pending += piece
        try:
            pending.decode("utf-8")
        except UnicodeDecodeError:
            continue
        pending = b""  # the pieces so far make whole characters: the next position starts one
    return out


def _starts_of(response: FwResponse, generated: Any) -> list[int | None]:
    starts = _char_starts(response.full, generated.tokens, generated.text_offset)
    if starts is None:
        raise ValidationError(
            "response",
            response,
            "a sample whose generated tokens spell its text (its logprobs' tokens and text_offset do not "
            "match response.full, so no exact prefix can be cut from it)",
        )
    return starts


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InvalidTypeError("threshold", threshold, "a probability from 0 to 1")
    if not 0.0 <= threshold <= 1.0:  # NaN fails this too
        raise ValidationError("threshold", threshold, "a probability from 0 to 1")
    return float(threshold)


def fork_points(response: FwResponse, *, threshold: float = 0.05) -> list[ForkPoint]:
    """The generated positions of ``response`` where another token had probability above ``threshold``.

    Read from the generated logprobs (pure, nothing is sent): at each position, the returned alternatives
    (``top_logprobs``, so at most the server's top 5) other than the chosen token whose probability exceeds
    ``threshold`` (Forking Paths uses 0.05). Positions with none are left out.
    """
    limit = _check_threshold(threshold)
    response, generated = _generated(response)
    return _points(generated, _starts_of(response, generated), limit)


def _points(generated: Any, starts: Sequence[int | None], limit: float) -> list[ForkPoint]:
    points = []
    for i, (position, start) in enumerate(zip(generated, starts, strict=True)):
        ranked = sorted(((t, math.exp(lp)) for t, lp in (position.top_logprobs or {}).items()), key=lambda kv: -kv[1])
        alternatives = {token: p for token, p in ranked if token != position.token and p > limit}
        if alternatives:
            chosen_lp = position.logprob if position.logprob is not None else float("-inf")
            points.append(ForkPoint(i, start, position.token, math.exp(chosen_lp), alternatives))
    return points


def _check_position(position: Any, n: int) -> int:
    if isinstance(position, bool) or not isinstance(position, int):
        raise InvalidTypeError("position", position, f"an integer index of a generated token, 0 to {n - 1}")
    if not 0 <= position < n:
        raise ValidationError("position", position, f"an index of a generated token, 0 to {n - 1}")
    return position


def _check_token(token: Any) -> str:
    if not isinstance(token, str):
        raise InvalidTypeError("token", token, "a token's text (a string)")
    if not token:
        raise ValidationError("token", token, "a non-empty token text")
    if is_byte_piece(token):
        raise ValidationError(
            "token",
            token,
            "a token that is text: this one is a piece of a UTF-8 character (a byte-level token), which "
            "cannot be sent in a text prompt",
        )
    return token


def _cut(response: FwResponse, starts: Sequence[int | None], position: int, token: str) -> tuple[int, str]:
    """(offset, prompt) of the fork at ``position`` with ``token``, both checked."""
    start = starts[position]
    if start is None:
        raise ValidationError(
            "position",
            position,
            "a position that starts a character: this one follows a byte piece of a multi-byte character, so "
            "the prefix before it ends mid-character and cannot be sent as text",
        )
    return start, response.prompt + response.full[:start] + token


def fork_prompt(response: FwResponse, position: int, token: str) -> str:
    """The exact prompt of a fork: ``response.prompt + response.full[:offset] + token`` (pure).

    ``offset`` is where generated position ``position`` starts in the generated text. See the module
    notes on re-tokenisation; a byte-piece ``token``, or a ``position`` inside a character, is refused.
    """
    response, generated = _generated(response)
    position = _check_position(position, len(generated))
    return _cut(response, _starts_of(response, generated), position, _check_token(token))[1]


# -- the requests --------------------------------------------------------------------------------------------


def _answer_fn(answer: Answer | None) -> Answer:
    if answer is None:
        return extract_answer
    if not callable(answer):
        raise InvalidTypeError("answer", answer, "a function from a sample's text to its answer (or None)")
    return answer


@dataclass(frozen=True, slots=True)
class _Planned:
    position: int
    offset: int
    token: str
    chosen: str
    prob: float | None
    prefix: str


def _prob_at(generated: Any, position: int, token: str) -> float | None:
    entry = generated.top_logprobs[position] or {}
    if token in entry:
        return math.exp(entry[token])
    if token == generated.tokens[position] and generated.token_logprobs[position] is not None:
        return math.exp(generated.token_logprobs[position])
    return None


def _plan(
    response: FwResponse, generated: Any, starts: Sequence[int | None], position: int, token: str
) -> _Planned:
    offset, prefix = _cut(response, starts, position, token)
    chosen = generated.tokens[position]
    return _Planned(position, offset, token, chosen, _prob_at(generated, position, token), prefix)


def _fork_of(
    response: FwResponse, planned: _Planned, rollouts: FwRollouts, answer: Answer, base_answer: str | None
) -> Fork:
    head = response.full[: planned.offset] + planned.token
    texts = tuple(head + r.full for r in rollouts)
    answers = tuple(answer(t) for t in texts)
    return Fork(
        position=planned.position,
        offset=planned.offset,
        token=planned.token,
        chosen=planned.chosen,
        prob=planned.prob,
        prefix=planned.prefix,
        rollouts=rollouts,
        texts=texts,
        answers=answers,
        outcomes=answer_distribution(answers),
        base_answer=base_answer,
    )


def _sampling(sampling: dict[str, Any]) -> dict[str, Any]:
    # A fork's prompt is long and its own logprobs are the base's: echo is off unless asked for.
    sampling.setdefault("echo", False)
    if "raw" in sampling:
        raise ValidationError("raw", sampling["raw"], "not settable: a fork's prompt is exact text (sent raw)")
    return sampling


async def fork(
    client: AsyncFireworks,
    response: FwResponse,
    position: int,
    token: str,
    n_samples: int,
    *,
    answer: Answer | None = None,
    seed: int | None = None,
    **sampling: Any,
) -> Fork:
    """See :meth:`AsyncFireworks.fork`."""
    response, generated = _generated(response)
    position = _check_position(position, len(generated))
    token = _check_token(token)
    answer_of = _answer_fn(answer)
    known = generated.top_logprobs[position] or {}
    if token not in known and token != generated.tokens[position]:
        warnings.warn(
            f"fork: {token!r} is not among the alternatives the server returned at position {position} "
            f"({', '.join(map(repr, known)) or 'none'}); forking with it anyway",
            UserWarning,
            stacklevel=3,
        )
    planned = _plan(response, generated, _starts_of(response, generated), position, token)
    rollouts = await client.generate(planned.prefix, n_samples, seed=seed, raw=True, **_sampling(sampling))
    return _fork_of(response, planned, rollouts, answer_of, answer_of(response.full))


async def forks(
    client: AsyncFireworks,
    response: FwResponse,
    *,
    n_samples: int,
    threshold: float = 0.05,
    positions: Sequence[int] | None = None,
    include_chosen: bool = False,
    answer: Answer | None = None,
    seed: int | None = None,
    on_error: Literal["raise", "return"] = "raise",
    output: str | os.PathLike[str] | None = None,
    **sampling: Any,
) -> list[Fork]:
    """See :meth:`AsyncFireworks.forks`."""
    limit = _check_threshold(threshold)
    response, generated = _generated(response)
    starts = _starts_of(response, generated)
    points = _points(generated, starts, limit)
    if positions is not None:
        if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence):
            raise InvalidTypeError("positions", positions, "a list of generated positions, or None for all")
        wanted = {_check_position(p, len(generated)) for p in positions}
        points = [p for p in points if p.position in wanted]
    if not isinstance(include_chosen, bool):
        raise InvalidTypeError("include_chosen", include_chosen, "True or False")
    answer_of = _answer_fn(answer)
    planned: list[_Planned] = []
    skipped = 0
    for point in points:
        tokens = ([point.chosen] if include_chosen else []) + list(point.alternatives)
        for token in tokens:
            if point.offset is None or is_byte_piece(token):
                skipped += 1
                continue
            planned.append(_plan(response, generated, starts, point.position, token))
    if skipped:
        warnings.warn(
            f"forks: {skipped} fork{'s' if skipped != 1 else ''} skipped: a byte-piece token, or a position "
            "inside a multi-byte character, cannot be sent as text",
            UserWarning,
            stacklevel=3,
        )
    if not planned:
        return []
    results = await client.generate_many(
        [p.prefix for p in planned],
        n_samples,
        seed=seed,
        raw=True,
        on_error=on_error,
        output=output,
        **_sampling(sampling),
    )
    base_answer = answer_of(response.full)
    return [_fork_of(response, p, r, answer_of, base_answer) for p, r in zip(planned, results, strict=True)]
