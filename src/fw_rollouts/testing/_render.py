"""Response bodies: choices, legacy and content-format logprobs, and SSE events, rendered as JSON text.

Logprob objects are the bulk of every response, so they are written as JSON text directly, with the
alternatives of each distribution cached on the :class:`~._model.Dist` (many positions share one) and token
texts memoised; the rest of a body goes through the standard encoder.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final

from ._chat import Span, split_generation
from ._model import Dist, Generation, Prompt, Step
from ._reply import json_text
from ._tokenizer import token_bytes
from ._validate import CompletionRequest

__all__ = ["DONE_EVENT", "Choice", "is_finish_event", "render_body", "render_events"]

#: The event that ends every SSE stream.
DONE_EVENT: Final = b"data: [DONE]\n\n"

_encode_str: Callable[[str], str] = json.encoder.encode_basestring  # the C version when available
_MEMO_SIZE: Final = 65536


def _memoised(encode: Callable[[str], str]) -> Callable[[str], str]:
    """``encode`` with its results kept for the first ``_MEMO_SIZE`` texts (token texts repeat constantly)."""
    memo: dict[str, str] = {}

    def cached(s: str) -> str:
        r = memo.get(s)
        if r is None:
            r = encode(s)
            if len(memo) < _MEMO_SIZE:
                memo[s] = r
        return r

    return cached


#: JSON string literal of a token text.
_jstr: Final = _memoised(_encode_str)
#: JSON list of a token text's UTF-8 bytes.
_jbytes: Final = _memoised(lambda s: "[" + ",".join(map(str, token_bytes(s))) + "]")


def _float(x: float | None) -> str:
    return "null" if x is None else repr(x)


def _ids(ids: Iterable[int]) -> str:
    return "[" + ",".join(map(str, ids)) + "]"


# -- logprobs ---------------------------------------------------------------------------------------


def _entries(d: Dist, kind: int) -> tuple[str, ...]:
    """Pre-encoded JSON of each candidate: ``"text":lp`` (kind 0) or a content ``top_logprobs`` item (1)."""
    hit = d.frags.get(kind)
    if hit is not None:
        return hit  # type: ignore[return-value]
    if d.base is not None:  # a substituted copy differs from its template in one slot only
        entries = list(_entries(d.base, kind))
        ranks: Iterable[int] = (d.rank,)
    else:
        entries = [""] * len(d.ids)
        ranks = range(len(d.ids))
    for r in ranks:
        t, lp = d.texts[r], d.lps[r]
        if kind == 0:
            entries[r] = f"{_jstr(t)}:{lp!r}"
        else:
            entries[r] = f'{{"token":{_jstr(t)},"logprob":{lp!r},"token_id":{d.ids[r]},"bytes":{_jbytes(t)}}}'
    out = tuple(entries)
    d.frags[kind] = out
    return out


def _top(d: Dist, kind: int, k: int) -> str:
    hit = d.frags.get((kind, k))
    if hit is None:
        hit = ",".join(_entries(d, kind)[:k])
        d.frags[(kind, k)] = hit
    return hit  # type: ignore[return-value]


def _legacy_top(st: Step, k: int) -> str:
    d = st.dist
    assert d is not None
    frag = _top(d, 0, k)
    if st.tid in d.ids[:k] or st.text in d.texts[:k]:
        return "{" + frag + "}"
    own = f"{_jstr(st.text)}:{st.lp!r}"
    return "{" + frag + "," + own + "}" if frag else "{" + own + "}"


def _legacy(steps: list[Step], offsets: list[int], first_null: bool, k: int) -> str:
    lps: list[str] = []
    tops: list[str] = []
    for i, st in enumerate(steps):
        if st.lp is None or (i == 0 and first_null):
            lps.append("null")
            tops.append("null")
        else:
            lps.append(repr(st.lp))
            tops.append(_legacy_top(st, k))
    return (
        f'{{"tokens":[{",".join([_jstr(st.text) for st in steps])}],"token_logprobs":[{",".join(lps)}],'
        f'"top_logprobs":[{",".join(tops)}],"text_offset":[{",".join(map(str, offsets))}],'
        f'"token_ids":[{",".join([str(st.tid) for st in steps])}]}}'
    )


def _content(steps: list[Step], offsets: list[int], first_null: bool, k: int) -> str:
    parts = []
    for i, (st, off) in enumerate(zip(steps, offsets, strict=True)):
        if st.lp is None or (i == 0 and first_null):
            parts.append(
                f'{{"token":{_jstr(st.text)},"logprob":0.0,"sampling_logprob":null,"bytes":{_jbytes(st.text)},'
                f'"token_id":{st.tid},"text_offset":{off},"top_logprobs":[]}}'
            )
        else:
            parts.append(
                f'{{"token":{_jstr(st.text)},"logprob":{st.lp!r},"sampling_logprob":{_float(st.slp)},'
                f'"bytes":{_jbytes(st.text)},"token_id":{st.tid},"text_offset":{off},'
                f'"top_logprobs":[{_top(st.dist, 1, k) if st.dist is not None else ""}]}}'
            )
    return '{"content":[' + ",".join(parts) + "]}"


def _logprobs(req: CompletionRequest, steps: list[Step], offsets: list[int], first_null: bool) -> str:
    """The ``logprobs`` value of a choice: legacy or content format, as the request asked, or ``null``."""
    if req.legacy_k is not None:
        return _legacy(steps, offsets, first_null, req.legacy_k)
    if req.content_k is not None:
        return _content(steps, offsets, first_null, req.content_k)
    return "null"


def _offsets(steps: list[Step], start: int, zero_width_first: bool) -> list[int]:
    out = []
    pos = start
    for i, st in enumerate(steps):
        out.append(pos)
        if not (i == 0 and zero_width_first):
            pos += len(st.text)
    return out


# -- choices ----------------------------------------------------------------------------------------


class Choice:
    """The pieces of one choice before it becomes JSON."""

    __slots__ = ("echo_steps", "echo_text", "first_null", "gen", "index", "offset0", "prompt", "zero_width")

    def __init__(
        self,
        index: int,
        prompt: Prompt,
        gen: Generation,
        echo_steps: list[Step],
        echo_text: str,
        first_null: bool,
        zero_width: bool,
        offset0: int,
    ) -> None:
        self.index = index
        self.prompt = prompt
        self.gen = gen
        self.echo_steps = echo_steps
        self.echo_text = echo_text
        self.first_null = first_null  # the first echoed position is the start of the sequence
        self.zero_width = zero_width  # the first echoed step is an implicit BOS absent from the text
        self.offset0 = offset0  # text_offset of the first completion token

    def echo_offsets(self) -> list[int]:
        """``text_offset`` of each echoed prompt token (the last ends where the first generated one starts)."""
        return _offsets(self.echo_steps, self.offset0 - len(self.echo_text), self.zero_width)

    def gen_offsets(self) -> list[int]:
        """``text_offset`` of each generated token."""
        return _offsets(self.gen.steps, self.offset0, False)


def _choice_json(c: Choice, field: str, value: str, finish_reason: str | None, logprobs: str, extra: str) -> str:
    """One ``choices[]`` item: ``field`` (``text``, ``message`` or ``delta``) holds the JSON ``value``."""
    fr = "null" if finish_reason is None else f'"{finish_reason}"'
    return f'{{"index":{c.index},"{field}":{value},"finish_reason":{fr},"logprobs":{logprobs}{extra}}}'


def _raw_output(req: CompletionRequest, c: Choice) -> str:
    steps = c.gen.steps
    # Raw output always carries content-format logprobs, whichever format the choice has.
    logprobs = _content(steps, c.gen_offsets(), False, req.content_k or 0) if req.wants_logprobs else "null"
    return (
        f'{{"prompt_fragments":[{_encode_str(c.prompt.text)}],"prompt_token_ids":{_ids(c.prompt.ids)},'
        f'"completion":{_encode_str(c.gen.text)},"completion_token_ids":{_ids(st.tid for st in steps)},'
        f'"completion_logprobs":{logprobs},"grammar":null,"images":null}}'
    )


def _pieces(text: str, start: int, end: int, spans: list[Span]) -> tuple[str, str]:
    """The reasoning and the answer text within ``text[start:end]``."""
    reasoning = content = ""
    for a, b, kind in spans:
        lo, hi = max(start, a), min(end, b)
        if lo < hi:
            if kind == "reasoning":
                reasoning += text[lo:hi]
            else:
                content += text[lo:hi]
    return reasoning, content


def _message(text: str, spans: list[Span] | None) -> str:
    """``choices[].message`` of a chat response; ``reasoning`` repeats ``reasoning_content`` for OpenRouter clients."""
    if spans is None:
        return f'{{"role":"assistant","content":{_encode_str(text)},"reasoning_content":null}}'
    reasoning, content = _pieces(text, 0, len(text), spans)
    r = _encode_str(reasoning)
    return f'{{"role":"assistant","content":{_encode_str(content)},"reasoning_content":{r},"reasoning":{r}}}'


def _delta(text: str, start: int, end: int, spans: list[Span] | None) -> str:
    """The ``delta`` of the chat stream event of the token at ``text[start:end]`` (``{}`` for ``</think>``)."""
    if spans is None:
        return '{"content":' + _jstr(text[start:end]) + "}"
    reasoning, content = _pieces(text, start, end, spans)
    parts = []
    if reasoning:
        r = _jstr(reasoning)
        parts.append(f'"reasoning_content":{r},"reasoning":{r}')
    if content:
        parts.append('"content":' + _jstr(content))
    return "{" + ",".join(parts) + "}"


# -- whole responses --------------------------------------------------------------------------------


def _perf_metrics(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt-tokens": prompt_tokens,
        "cached-prompt-tokens": 0,
        "generated-tokens": completion_tokens,
        "server-time-to-first-token": 0.0,
    }


def _envelope(
    req: CompletionRequest, choices: list[Choice], prompt_tokens: int, completion_tokens: int
) -> tuple[str, str]:
    """The JSON around the choices: everything before them, and everything after."""
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    kind = ("chat.completion.chunk" if req.stream else "chat.completion") if req.chat else "text_completion"
    head = (
        f'{{"id":"{uuid.uuid4()}","object":"{kind}","created":{int(time.time())},'
        f'"model":{_encode_str(req.model)},"choices":['
    )
    tail = '],"usage":' + json_text(usage)
    if req.perf_metrics:
        tail += ',"perf_metrics":' + json_text(_perf_metrics(prompt_tokens, completion_tokens))
    if req.chat and req.return_token_ids:
        tail += ',"prompt_token_ids":' + _ids(choices[0].prompt.ids)
    return head, tail + "}"


def _full_choice(req: CompletionRequest, c: Choice, echo_text: bool) -> str:
    """One choice of a non-streamed response."""
    if req.wants_logprobs:
        steps = c.echo_steps + c.gen.steps if c.echo_steps else c.gen.steps
        logprobs = _logprobs(req, steps, c.echo_offsets() + c.gen_offsets(), c.first_null)
    else:
        logprobs = "null"
    extra = ""
    if req.raw_output:
        extra += ',"raw_output":' + _raw_output(req, c)
    if req.return_token_ids:
        if not req.chat:
            extra += f',"prompt_token_ids":{_ids(c.prompt.ids)}'
        extra += f',"token_ids":{_ids(st.tid for st in c.gen.steps)}'
    if req.chat:
        message = _message(c.gen.text, split_generation(c.gen.text, c.prompt.end_state))
        return _choice_json(c, "message", message, c.gen.finish_reason, logprobs, extra)
    text = c.echo_text + c.gen.text if req.echo_last is not None and echo_text else c.gen.text
    return _choice_json(c, "text", _encode_str(text), c.gen.finish_reason, logprobs, extra)


def render_body(
    req: CompletionRequest, choices: list[Choice], prompt_tokens: int, completion_tokens: int, echo_text: bool
) -> bytes:
    """The body of a non-streamed response; ``echo_text`` is ``Config.echo_text``."""
    head, tail = _envelope(req, choices, prompt_tokens, completion_tokens)
    return (head + ",".join([_full_choice(req, c, echo_text) for c in choices]) + tail).encode("utf-8")


#: One SSE event of a choice before it becomes JSON: (choice, text or delta JSON, steps, offsets,
#: first_null, extra JSON).
_Event = tuple[Choice, str, list[Step], list[int], bool, str]


def _text_events(req: CompletionRequest, c: Choice, echo_text: bool) -> list[_Event]:
    """A completions choice's events: an echo event, then one per token."""
    evs: list[_Event] = []
    if c.echo_steps:
        evs.append((c, c.echo_text if echo_text else "", c.echo_steps, c.echo_offsets(), c.first_null, ""))
    ids = req.return_token_ids
    for st, off in zip(c.gen.steps, c.gen_offsets(), strict=True):
        evs.append((c, st.text, [st], [off], False, f',"token_ids":[{st.tid}]' if ids else ""))
    if not c.gen.steps:
        evs.append((c, "", [], [], False, ',"token_ids":[]' if ids else ""))
    if ids:
        first = evs[0]
        extra = f',"prompt_token_ids":{_ids(c.prompt.ids)}' + (first[5] or ',"token_ids":[]')
        evs[0] = (*first[:5], extra)
    return evs


def _chat_events(req: CompletionRequest, c: Choice) -> list[_Event]:
    """A chat choice's events: the role (with the echoed logprobs), then one delta per token."""
    ids = req.return_token_ids
    evs: list[_Event] = []
    role = '{"role":"assistant","content":null}'
    no_ids = ',"token_ids":[]' if ids else ""
    if c.echo_steps:
        evs.append((c, role, c.echo_steps, c.echo_offsets(), c.first_null, no_ids))
    else:
        evs.append((c, role, [], [], False, no_ids))
    text = c.gen.text
    spans = split_generation(text, c.prompt.end_state)
    pos = 0
    for st, off in zip(c.gen.steps, c.gen_offsets(), strict=True):
        end = pos + len(st.text)
        evs.append((c, _delta(text, pos, end, spans), [st], [off], False, f',"token_ids":[{st.tid}]' if ids else ""))
        pos = end
    return evs


def render_events(
    req: CompletionRequest, choices: list[Choice], prompt_tokens: int, completion_tokens: int, echo_text: bool
) -> list[bytes]:
    """SSE events: each choice's events, interleaved; finish on each choice's last, usage on the last."""
    head, tail = _envelope(req, choices, prompt_tokens, completion_tokens)
    per_choice: list[list[_Event]] = []
    for c in choices:
        evs = _chat_events(req, c) if req.chat else _text_events(req, c, echo_text)
        if req.raw_output:
            evs[-1] = (*evs[-1][:5], evs[-1][5] + ',"raw_output":' + _raw_output(req, c))
        per_choice.append(evs)
    # Interleave choices token by token, as a server decoding them in one batch would.
    order = []
    for i in range(max(len(e) for e in per_choice)):
        for evs in per_choice:
            if i < len(evs):
                order.append((evs[i], i == len(evs) - 1))
    null_tail = '],"usage":null}'
    out = []
    last = len(order) - 1
    want_logprobs = req.wants_logprobs
    for i, ((c, piece, steps, offsets, first_null, extra), is_last) in enumerate(order):
        logprobs = _logprobs(req, steps, offsets, first_null) if want_logprobs and steps else "null"
        finish = c.gen.finish_reason if is_last else None
        if req.chat:
            choice = _choice_json(c, "delta", piece, finish, logprobs, extra)
        else:
            choice = _choice_json(c, "text", _encode_str(piece), finish, logprobs, extra)
        out.append(f"data: {head}{choice}{tail if i == last else null_tail}\n\n".encode())
    out.append(DONE_EVENT)
    return out


def is_finish_event(event: bytes) -> bool:
    """Whether an SSE event carries a ``finish_reason`` (used to cut streams before the end)."""
    return event == DONE_EVENT or b'"finish_reason":null' not in event
