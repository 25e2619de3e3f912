"""Forking Paths: where a sample could have gone another way, and where it goes when it does.

:func:`fork_points` reads a sample's generated logprobs: the positions where an alternative token had more
than ``threshold`` probability. :meth:`AsyncFireworks.fork` continues ``n_samples`` from the sample's own
prefix up to such a position with the alternative in place of the chosen token, and reads each
continuation's answer; :meth:`AsyncFireworks.forks` runs every fork of a sample as one study.

**As token ids, where the sample carries them.** A fork's prompt is then the base's prompt ids (echoed with
it), the generated ids up to the position, and the alternative's id: the model is conditioned on exactly
the tokens it generated, nothing is re-tokenised, and byte-piece tokens and positions inside a multi-byte
character can be forked too. That needs every id: the echoed prompt's (``echo=True``, the client's default,
with the whole prompt echoed), the generated tokens' (both logprob formats carry them) and the
alternative's, which Fireworks sends in its content format only (``logprobs_format="content"``).
``token_ids=None`` (the default) sends ids when the sample carries them and text otherwise; ``True``
requires ids (a ValidationError naming what is missing); ``False`` sends text. :attr:`Fork.sent_as` says which.

**A BOS the server adds.** The prompt ids are the echoed ones, a BOS the server echoed ahead of the prompt
text included: the exact tokens the model read (Fireworks' own SDK sends token-id prompts that hold their
BOS, the template's, with nothing prepended by the server). A server that prepends a BOS to token-id prompts
as well, or that counted a BOS for the text prompt without echoing it, gives the fork one token more or
less than the base's context had; that shows in the fork's ``usage.prompt_tokens`` (the base's plus the
position plus one, when they agree), and a warning says so.

**As text otherwise: the prefix is the exact generated text.** The prompt is ``response.prompt +
response.full[:offset] + token``: the prompt that was sent, the generated text sliced at the position's
character offset (from the server's ``text_offset``, checked against the text), then the alternative.
Never ``"".join(tokens)``, which is not the text where tokens are byte pieces and loses whatever the server
did not send as tokens.

**Re-tokenisation (text forks).** The server tokenises the text again: the tokens it reads are not
necessarily the ones the model generated. At the boundary especially, the end of the prefix and the
alternative may merge into another token (``"answer" + "s"`` as ``"answers"``) or split differently, and the
continuation is then conditioned on a token sequence the model never produced. Forks whose alternative is a
whole word after a space (the common case) re-tokenise as generated.

**Byte pieces cannot be sent as text.** A token that is part of a UTF-8 character (shown by servers as
``"bytes:\\xe6\\x9d"`` or with U+FFFD) is not text: a text fork whose alternative is one is refused, and so is
one at a position inside a character (after such a piece), since its prefix ends mid-character.
:meth:`AsyncFireworks.forks` skips both when it sends text, with a warning counting them.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._answers import AnswerFunction, answer_function
from ._exceptions import InvalidTypeError, ValidationError
from ._importance import answer_distribution
from ._models import FwResponse, FwRollouts

if TYPE_CHECKING:
    import os

    from ._client import AsyncFireworks

__all__ = ["Fork", "ForkPoint", "fork", "fork_points", "fork_prompt", "fork_prompt_ids", "forks"]

TokenIds = Literal[True, False] | None
"""How a fork is sent: None, as ids where the sample carries them; True, as ids or an error; False, as text."""

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
    offset: int | None
    """Its character offset in the base sample's generated text; None for a position inside a multi-byte
    character (an id fork after a byte piece)."""
    token: str
    """The token put there."""
    chosen: str
    """The token the base sample had there."""
    prob: float | None
    """The token's probability at that position, None when it was not among the returned alternatives."""
    prefix: str
    """The prompt as text: base prompt + generated text up to ``offset`` + ``token``; exactly what was sent for
    a text fork, what the ids stand for for an id fork (U+FFFD where a byte piece is no whole character)."""
    sent_as: Literal["ids", "text"]
    """How the prompt was sent: as token ids (``prompt_ids``, nothing re-tokenised) or as ``prefix``'s text."""
    prompt_ids: tuple[int, ...] | None
    """The token ids sent (the base's prompt ids, its generated ids before ``position``, ``token``'s id); None for
    text."""
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
            f"Fork(position={self.position}, token={self.token!r}, chosen={self.chosen!r}, sent_as={self.sent_as!r}, "
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


def _check_text(token: Any) -> str:
    if not isinstance(token, str):
        raise InvalidTypeError("token", token, "a token's text (a string)")
    if not token:
        raise ValidationError("token", token, "a non-empty token text")
    return token


def _check_token(token: Any) -> str:
    text = _check_text(token)
    if is_byte_piece(text):
        raise ValidationError(
            "token",
            text,
            "a token that is text: this one is a piece of a UTF-8 character (a byte-level token), which "
            "cannot be sent in a text prompt (it can as token ids: see token_ids)",
        )
    return text


def _check_token_ids(token_ids: Any) -> TokenIds:
    if token_ids is not None and not isinstance(token_ids, bool):
        raise InvalidTypeError(
            "token_ids", token_ids, "None (ids where the sample carries them, else text), True (ids) or False (text)"
        )
    return token_ids


def _cut(response: FwResponse, starts: Sequence[int | None], position: int, token: str) -> tuple[int, str]:
    """(offset, prompt) of the fork at ``position`` with ``token``, both checked."""
    start = starts[position]
    if start is None:
        raise ValidationError(
            "position",
            position,
            "a position that starts a character: this one follows a byte piece of a multi-byte character, so "
            "the prefix before it ends mid-character and cannot be sent as text (it can as token ids: see "
            "token_ids)",
        )
    return start, response.prompt + response.full[:start] + token


def fork_prompt(response: FwResponse, position: int, token: str) -> str:
    """The exact text prompt of a fork: ``response.prompt + response.full[:offset] + token`` (pure).

    ``offset`` is where generated position ``position`` starts in the generated text. See the module
    notes on re-tokenisation; a byte-piece ``token``, or a ``position`` inside a character, is refused.
    """
    response, generated = _generated(response)
    position = _check_position(position, len(generated))
    return _cut(response, _starts_of(response, generated), position, _check_token(token))[1]


# -- pure: token ids -------------------------------------------------------------------------------------------


def _token_bytes(token: str) -> bytes | None:
    """The bytes a token stands for; None for a U+FFFD rendering, whose bytes are not known."""
    if token.startswith("bytes:"):
        return _piece_bytes(token)
    if "\ufffd" in token:
        return None
    return token.encode("utf-8", "surrogatepass")


def _whole_echo(tokens: Sequence[str], logprobs: Sequence[float | None], prompt: str) -> bool:
    """Whether the echoed prompt positions are the whole prompt (after at most two the server added ahead of
    it, a BOS), not its tail (``echo_last``)."""
    pieces = [_token_bytes(t) for t in tokens]
    if None in pieces:
        # Bytes unknown: the parser leaves the first position of a whole echo, which has no context, without one.
        return bool(logprobs) and logprobs[0] is None
    target = prompt.encode("utf-8", "surrogatepass")
    known: list[bytes] = pieces  # type: ignore[assignment]  # no None in it
    return any(b"".join(known[lead:]) == target for lead in range(min(2, len(known)) + 1))


def _prompt_ids(response: FwResponse) -> tuple[tuple[int, ...] | None, str]:
    """The base's prompt as the server tokenised it (the echoed ids, a BOS it echoed included), or None and what
    is missing."""
    lp = response.logprobs
    if lp is None or not response.echo or not lp.num_prompt_tokens:
        return None, (
            "the prompt's token ids, which come with its echo: sample the base with echo=True (the client's "
            "default) and logprobs on"
        )
    prompt = lp.get_prompt_logprobs()
    ids = prompt.token_ids
    if ids is None:
        return None, "the prompt's token ids: the server sent no ids with the echoed prompt"
    if not _whole_echo(prompt.tokens, prompt.token_logprobs, response.prompt):
        return None, (
            "the whole prompt's token ids: only its last tokens were echoed (sample the base without echo_last)"
        )
    return tuple(ids), ""


def _token_id(generated: Any, position: int, token: str) -> tuple[int | None, str]:
    """The id of ``token`` at generated ``position`` (the chosen one's, or an alternative's), or None and why."""
    if token == generated.tokens[position]:
        return generated.token_ids[position], ""
    top = generated.top_token_ids
    if top is None:
        return None, (
            f"the id of {token!r}: the server sends the alternatives' ids in the content logprobs format only "
            "(sample the base with logprobs_format='content')"
        )
    entry = top[position] or {}
    if token not in entry:
        return None, f"the id of {token!r}, which is not among the alternatives returned at position {position}"
    return entry[token], ""


def _ids_of(
    response: FwResponse,
    generated: Any,
    position: int,
    token: str,
    prompt: tuple[tuple[int, ...] | None, str] | None = None,
) -> tuple[tuple[int, ...] | None, str]:
    """The fork's prompt as token ids (prompt ids + generated ids before ``position`` + ``token``'s), or None and
    what is missing. ``prompt``: :func:`_prompt_ids` of ``response``, when the caller has it already."""
    generated_ids = generated.token_ids
    if generated_ids is None:
        return None, "the generated tokens' ids: the server sent none with the logprobs"
    prompt_ids, missing = _prompt_ids(response) if prompt is None else prompt
    if prompt_ids is None:
        return None, missing
    token_id, missing = _token_id(generated, position, token)
    if token_id is None:
        return None, missing
    return (*prompt_ids, *generated_ids[:position], token_id), ""


def _ids_required(missing: str) -> ValidationError:
    return ValidationError(
        "token_ids", True, f"a base sample that carries every token id of the fork; it lacks {missing}"
    )


def fork_prompt_ids(response: FwResponse, position: int, token: str) -> tuple[int, ...]:
    """The exact token-id prompt of a fork: the base's prompt ids, its generated ids before ``position``, then
    ``token``'s id (pure).

    ``token`` is the chosen token or one of the alternatives the server returned at ``position`` (their ids
    come with Fireworks' content logprobs format, ``logprobs_format="content"``); the prompt ids are the
    echoed prompt's (``echo=True``). Byte pieces and positions inside a character are fine. A
    ValidationError names what the sample lacks.
    """
    response, generated = _generated(response)
    position = _check_position(position, len(generated))
    ids, missing = _ids_of(response, generated, position, _check_text(token))
    if ids is None:
        raise _ids_required(missing)
    return ids


def _head(
    response: FwResponse, generated: Any, starts: Sequence[int | None], position: int, token: str
) -> tuple[int | None, str]:
    """(offset, the generated text before ``position`` followed by ``token``) of an id fork, where the token
    or the position may be inside a character: the bytes are decoded, U+FFFD where they make no character."""
    start = starts[position]
    if start is not None and not is_byte_piece(token):
        return start, response.full[:start] + token
    first = position
    while first > 0 and starts[first] is None:  # back to the piece that starts the character
        first -= 1
    head = response.full[: starts[first] or 0].encode("utf-8", "surrogatepass")
    unknown = "\ufffd".encode()
    pieces = [_token_bytes(t) or unknown for t in generated.tokens[first:position]]
    return start, (head + b"".join(pieces) + (_token_bytes(token) or unknown)).decode("utf-8", "replace")


# -- the requests --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Planned:
    position: int
    offset: int | None
    token: str
    chosen: str
    prob: float | None
    prefix: str
    head: str
    """The generated text before the fork, then ``token``: where each continuation's whole text starts."""
    ids: tuple[int, ...] | None

    def item(self) -> str | dict[str, Any]:
        """What :meth:`AsyncFireworks.generate_many` is given for this fork."""
        return self.prefix if self.ids is None else {"prompt_ids": self.ids, "prompt": self.prefix}


def _prob_at(generated: Any, position: int, token: str) -> float | None:
    entry = generated.top_logprobs[position] or {}
    if token in entry:
        return math.exp(entry[token])
    if token == generated.tokens[position] and generated.token_logprobs[position] is not None:
        return math.exp(generated.token_logprobs[position])
    return None


def _plan(
    response: FwResponse,
    generated: Any,
    starts: Sequence[int | None],
    position: int,
    token: str,
    ids: tuple[int, ...] | None = None,
) -> _Planned:
    """The fork at ``position`` with ``token``: as token ``ids`` when given, else as text (checked)."""
    offset: int | None
    if ids is None:
        offset, prefix = _cut(response, starts, position, token)
        head = response.full[:offset] + token
    else:
        offset, head = _head(response, generated, starts, position, token)
        prefix = response.prompt + head
    chosen = generated.tokens[position]
    return _Planned(position, offset, token, chosen, _prob_at(generated, position, token), prefix, head, ids)


def _fork_of(planned: _Planned, rollouts: FwRollouts, answer: AnswerFunction, base_answer: str | None) -> Fork:
    texts = tuple(planned.head + r.full for r in rollouts)
    answers = tuple(answer(t) for t in texts)
    return Fork(
        position=planned.position,
        offset=planned.offset,
        token=planned.token,
        chosen=planned.chosen,
        prob=planned.prob,
        prefix=planned.prefix,
        sent_as="text" if planned.ids is None else "ids",
        prompt_ids=planned.ids,
        rollouts=rollouts,
        texts=texts,
        answers=answers,
        outcomes=answer_distribution(answers),
        base_answer=base_answer,
    )


def _context_mismatch(response: FwResponse, fork: Fork) -> int | None:
    """Tokens the server read for an id fork beyond (or, negative, short of) the base's context at that point.

    The base's context there is its prompt as the server counted it (``usage.prompt_tokens``), its generated
    tokens before the position, and the one in its place. 0 when they agree; None when a count is missing
    (no usage reported, a text fork).
    """
    if fork.sent_as != "ids" or not response.usage.prompt_tokens:
        return None
    read = next((r.usage.prompt_tokens for r in fork.rollouts if r.usage.prompt_tokens), 0)
    if not read:
        return None
    return read - (response.usage.prompt_tokens + fork.position + 1)


def _warn_context(response: FwResponse, forks: Sequence[Fork], caller: str) -> None:
    found = [(f, d) for f in forks if (d := _context_mismatch(response, f))]
    if not found:
        return
    delta = found[0][1]
    what = (
        f"{delta} more token{'s' if delta != 1 else ''} than the base's context had: it prepends its own (a BOS) "
        "to token-id prompts as well, so the fork reads a token the base read once twice"
        if delta > 0
        else f"{-delta} fewer token{'s' if delta != -1 else ''} than the base's context had: it counted a token "
        "(a BOS) for the base's text prompt that it neither echoed nor adds to token-id prompts"
    )
    warnings.warn(
        f"{caller}: for {len(found)} of {len(forks)} id fork{'s' if len(forks) != 1 else ''} the server read {what}; "
        "token_ids=False sends text instead (see fork_prompt_ids and docs/forks.md)",
        UserWarning,
        stacklevel=4,
    )


def _sampling(sampling: dict[str, Any]) -> dict[str, Any]:
    # A fork's prompt is long and its own logprobs are the base's: echo is off unless asked for (ids: always off).
    sampling.setdefault("echo", False)
    if "raw" in sampling:
        raise ValidationError("raw", sampling["raw"], "not settable: a fork's prompt is exact text or ids (sent raw)")
    return sampling


async def fork(
    client: AsyncFireworks,
    response: FwResponse,
    position: int,
    token: str,
    n_samples: int,
    *,
    token_ids: TokenIds = None,
    answer: AnswerFunction | None = None,
    seed: int | None = None,
    **sampling: Any,
) -> Fork:
    """See :meth:`AsyncFireworks.fork`."""
    response, generated = _generated(response)
    position = _check_position(position, len(generated))
    token = _check_text(token)
    mode = _check_token_ids(token_ids)
    answer_of = answer_function(answer)
    ids: tuple[int, ...] | None = None
    if mode is not False:
        ids, missing = _ids_of(response, generated, position, token)
        if ids is None and mode:
            raise _ids_required(missing)
    if ids is None:
        token = _check_token(token)  # text: a byte piece cannot be sent
    planned = _plan(response, generated, _starts_of(response, generated), position, token, ids)
    known = generated.top_logprobs[position] or {}
    if token not in known and token != generated.tokens[position]:
        warnings.warn(
            f"fork: {token!r} is not among the alternatives the server returned at position {position} "
            f"({', '.join(map(repr, known)) or 'none'}); forking with it anyway",
            UserWarning,
            stacklevel=3,
        )
    if ids is None:
        rollouts = await client.generate(planned.prefix, n_samples, seed=seed, raw=True, **_sampling(sampling))
    else:
        (rollouts,) = await client.generate_many(
            [planned.item()], n_samples, seed=seed, raw=True, **_sampling(sampling)
        )
    result = _fork_of(planned, rollouts, answer_of, answer_of(response.full))
    _warn_context(response, [result], "fork")
    return result


async def forks(
    client: AsyncFireworks,
    response: FwResponse,
    *,
    n_samples: int,
    threshold: float = 0.05,
    positions: Sequence[int] | None = None,
    include_chosen: bool = False,
    token_ids: TokenIds = None,
    answer: AnswerFunction | None = None,
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
    mode = _check_token_ids(token_ids)
    answer_of = answer_function(answer)
    wanted_forks = [
        (point, token)
        for point in points
        for token in ([point.chosen] if include_chosen else []) + list(point.alternatives)
    ]
    # One way for every fork of the study: forks sent as ids and as text are not conditioned alike.
    every_ids: list[tuple[int, ...]] | None = None
    if mode is not False:
        prompt = _prompt_ids(response)  # once: every fork starts with the same ids
        if mode and not wanted_forks:
            _, missing = _ids_of(response, generated, 0, generated.tokens[0], prompt)
            if missing:
                raise _ids_required(missing)
        found = [_ids_of(response, generated, point.position, token, prompt) for point, token in wanted_forks]
        missing = next((why for ids, why in found if ids is None), "")
        if missing and mode:
            raise _ids_required(missing)
        if not missing:
            every_ids = [ids for ids, _ in found if ids is not None]
    planned: list[_Planned] = []
    skipped = 0
    for i, (point, token) in enumerate(wanted_forks):
        if every_ids is not None:
            planned.append(_plan(response, generated, starts, point.position, token, every_ids[i]))
        elif point.offset is None or is_byte_piece(token):
            skipped += 1
        else:
            planned.append(_plan(response, generated, starts, point.position, token))
    if skipped:
        warnings.warn(
            f"forks: {skipped} fork{'s' if skipped != 1 else ''} skipped: a byte-piece token, or a position "
            "inside a multi-byte character, cannot be sent as text (as token ids it can: see token_ids)",
            UserWarning,
            stacklevel=3,
        )
    if not planned:
        return []
    results = await client.generate_many(
        [p.item() for p in planned],
        n_samples,
        seed=seed,
        raw=True,
        on_error=on_error,
        output=output,
        **_sampling(sampling),
    )
    base_answer = answer_of(response.full)
    out = [_fork_of(p, r, answer_of, base_answer) for p, r in zip(planned, results, strict=True)]
    _warn_context(response, out, "forks")
    return out
