"""The simulator's toy language model: deterministic next-token distributions, prompt scoring, sampling.

How it works (documented for users in ``docs/testing.md``):

* The distribution at a position depends only on the model name and the exact token prefix (an FNV
  hash of the ids) plus a small *format state* derived from the prefix's special tokens (inside
  ``<think>``, in a harmony analysis message, ...). It has six candidate tokens with float32 log
  probabilities sorted descending, plus a "tail" holding the rest of the probability mass. So scoring a
  text with ``echo`` gives the same logprob to each ordinary token as generating it did.
* Structural tokens that the format makes certain (``\\n`` after ``<think>``, harmony headers) are
  *forced*: top-1 with a logprob close to 0 and always chosen when sampling.
* A segment (reasoning, answer, harmony message) ends with its terminator (``</think>``, EOS,
  ``<|end|>``, ``<|return|>``): as the segment nears a hash-derived length the terminator takes a
  candidate slot and climbs to rank 0, so greedy decoding ends exactly there and sampling ends near it.
  Lengths are counted from the later of the segment start and the generation start.
* Sampling uses a per-choice ``random.Random`` seeded from (seed, choice index, prompt, sampling
  parameters); temperature, top_k, top_p and min_p shape the sampling distribution and thereby
  ``sampling_logprob``; the reported ``logprob`` is always the model's.
* Opt-in answers (``answers=True``, the simulator's ``answers="boxed"``): every finished sentence of the
  prefix adds hash-derived votes over :data:`ANSWERS` (a few sentences are "anchors" that add many); after
  ``\\boxed{`` the next token picks an answer from the softmax of the votes, the rest of it and ``}``
  follow forced, and an answer segment ends with `` \\boxed{<answer>}`` before its terminator.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import struct
import zlib
from collections.abc import Sequence
from typing import Final

from ._tokenizer import SPECIAL_IDS, token_id

__all__ = [
    "ANSWERS",
    "AnswerState",
    "Generation",
    "Prompt",
    "Sampling",
    "Step",
    "answer_distribution",
    "bos_token_for",
    "generate",
    "walk_prompt",
]

_MASK: Final = (1 << 64) - 1
_FNV_PRIME: Final = 0x100000001B3
_N_TEMPLATES: Final = 1024
_N_CAND: Final = 6

_f32 = struct.Struct("f")


def _round32(x: float) -> float:
    return float(_f32.unpack(_f32.pack(x))[0])


def _sid(text: str) -> int:
    return SPECIAL_IDS[text]


# Special token ids the format state machine reacts to.
R1_BOS, R1_EOS, R1_USER, R1_ASSISTANT = (
    _sid("<｜begin▁of▁sentence｜>"),
    _sid("<｜end▁of▁sentence｜>"),
    _sid("<｜User｜>"),
    _sid("<｜Assistant｜>"),
)
THINK, END_THINK = _sid("<think>"), _sid("</think>")
L3_BOS, L3_EOT, L3_EOM, L3_EOTEXT = (
    _sid("<|begin_of_text|>"),
    _sid("<|eot_id|>"),
    _sid("<|eom_id|>"),
    _sid("<|end_of_text|>"),
)
L3_START_HEADER, L3_END_HEADER = _sid("<|start_header_id|>"), _sid("<|end_header_id|>")
H_START, H_END, H_MESSAGE, H_CHANNEL = (
    _sid("<|start|>"),
    _sid("<|end|>"),
    _sid("<|message|>"),
    _sid("<|channel|>"),
)
H_RETURN, H_CALL, H_EOT, H_BOS = (
    _sid("<|return|>"),
    _sid("<|call|>"),
    _sid("<|endoftext|>"),
    _sid("<|startoftext|>"),
)
NL, NLNL = token_id("\n"), token_id("\n\n")
W_ASSISTANT, W_ANALYSIS, W_FINAL = token_id("assistant"), token_id("analysis"), token_id("final")
_ID_TEXT: Final[dict[int, str]] = {
    **{v: k for k, v in SPECIAL_IDS.items()},
    NL: "\n",
    NLNL: "\n\n",
    W_ASSISTANT: "assistant",
    W_ANALYSIS: "analysis",
    W_FINAL: "final",
}

# Families pick the end-of-sequence token of a plain segment and the implicit BOS.
FAM_PLAIN, FAM_R1, FAM_LLAMA, FAM_HARMONY = 0, 1, 2, 3
_FAMILY_EOS: Final = {FAM_PLAIN: H_EOT, FAM_R1: R1_EOS, FAM_LLAMA: L3_EOT, FAM_HARMONY: H_RETURN}
_FAMILY_BOS: Final = {FAM_PLAIN: L3_BOS, FAM_R1: R1_BOS, FAM_LLAMA: L3_BOS, FAM_HARMONY: H_BOS}

# Segment modes: what kind of text is being produced, and so which terminator ends it.
M_PLAIN, M_THINK, M_ANALYSIS, M_FINAL, M_HMSG = 0, 1, 2, 3, 4
_EXPECT_NONE, _EXPECT_ROLE, _EXPECT_CHANNEL = 0, 1, 2

_SPECIAL_SET: Final = frozenset(SPECIAL_IDS.values())
#: Terminators that end generation (not emitted) rather than being emitted as text.
STOP_TOKENS: Final = frozenset({R1_EOS, L3_EOT, L3_EOM, L3_EOTEXT, H_RETURN, H_CALL, H_EOT})

# (minimum, spread) of a segment's length in free tokens, by mode.
_SEGMENT_LEN: Final = {M_PLAIN: (6, 26), M_THINK: (12, 36), M_ANALYSIS: (10, 30), M_FINAL: (6, 20), M_HMSG: (6, 20)}
# Past this many extra tokens the terminator is forced, so every segment ends.
_SEGMENT_GRACE: Final = 24

_WORDS: Final = (
    " the", " a", " so", " we", " I", " need", " to", " find", " check", " think", " about", " this",
    " that", " it", " is", " are", " be", " can", " will", " then", " first", " next", " step",
    " value", " number", " sum", " total", " answer", " result", " problem", " question", " because",
    " which", " means", " maybe", " wait", " right", " again", " let", " me", " now", " each", " two",
    " three", " more", " less", " equal", " both", " same", " other", " case", " part", " way",
    " simple", " clear", " true", " false", " if", " not", " all", " and", " or", " of", " in", " on",
    " with", " for", " from", " by", " as", " at", " into", " over", " after", ",", ".", ":", "?",
    " café", " naïve", " über", " résumé", " 東京", " 数学", " 🙂",
)  # fmt: skip
_STARTS: Final = (
    "Okay", "Alright", "So", "First", "Hmm", "Let", "The", "Well", "Sure", "Yes", "We", "This", "It",
    "Now",
)  # fmt: skip
_WORD_IDS: Final = tuple(token_id(w) for w in _WORDS)
_START_IDS: Final = tuple(token_id(w) for w in _STARTS)
for _i, _w in zip(_WORD_IDS + _START_IDS, _WORDS + _STARTS, strict=True):
    _ID_TEXT[_i] = _w


class Dist:
    """One next-token distribution: six candidates (descending) plus the tail's total mass."""

    __slots__ = ("base", "base_ids", "cum", "frags", "ids", "key", "lps", "pool", "rank", "tail_lp", "texts")

    def __init__(
        self,
        key: int,
        ids: tuple[int, ...],
        lps: tuple[float, ...],
        tail_lp: float,
        pool: tuple[int, ...],
    ) -> None:
        self.key = key
        self.ids = ids
        self.texts = tuple(_ID_TEXT[i] for i in ids)
        self.lps = lps
        self.tail_lp = tail_lp
        #: Vocabulary the candidates were drawn from; tail tokens are drawn from it too.
        self.pool = pool
        #: Candidates before any terminator substitution.
        self.base_ids = ids
        acc = 0.0
        cum = []
        for lp in lps:
            acc += math.exp(lp)
            cum.append(acc)
        self.cum = tuple(cum)
        #: Rendering cache owned by the response builder (pre-encoded JSON of the alternatives).
        self.frags: dict[object, object] = {}
        #: For a substituted copy: the template and the rank that was replaced.
        self.base: Dist | None = None
        self.rank = -1

    def lowered(self, by: float) -> Dist:
        """A copy whose candidate logprobs are all ``by`` lower (a misreporting server's numbers)."""
        return Dist(self.key, self.ids, tuple(lp - by for lp in self.lps), self.tail_lp, self.pool)

    def substitute(self, rank: int, tid: int) -> Dist:
        """Return a copy with candidate ``rank`` replaced by ``tid`` (same probability)."""
        d = Dist.__new__(Dist)
        d.key = self.key
        d.ids = (*self.ids[:rank], tid, *self.ids[rank + 1 :])
        d.texts = (*self.texts[:rank], _ID_TEXT[tid], *self.texts[rank + 1 :])
        d.lps = self.lps
        d.tail_lp = self.tail_lp
        d.pool = self.pool
        d.base_ids = self.base_ids
        d.cum = self.cum
        d.frags = {}
        d.base = self
        d.rank = rank
        return d


def _make_lps(rng: random.Random, forced: bool) -> tuple[tuple[float, ...], float]:
    if forced:
        eps = rng.uniform(1e-5, 3e-3)
        top = math.log1p(-eps)
        rest = [math.log(eps) - 2.0 - 1.5 * k - rng.random() for k in range(_N_CAND - 1)]
        lps = [top, *rest]
        tail = math.log(max(1e-12, eps - sum(math.exp(x) for x in rest)))
    else:
        scale = rng.choice((0.4, 0.8, 1.2, 2.0, 3.5))
        z = [0.0]
        for _ in range(_N_CAND - 1):
            z.append(z[-1] - rng.expovariate(1.0) * scale)
        tail_frac = rng.uniform(0.002, 0.04)
        total = sum(math.exp(v) for v in z) / (1.0 - tail_frac)
        lps = [v - math.log(total) for v in z]
        tail = math.log(tail_frac)
    rounded = tuple(min(_round32(x), -1e-7) for x in lps)
    # Rounding can only tie neighbours, never reorder them, but keep the invariant explicit.
    return tuple(sorted(rounded, reverse=True)), tail


class _Tables:
    """Template distributions, built once on first use (a few tens of milliseconds)."""

    def __init__(self) -> None:
        rng = random.Random(0x5EED)
        self.word: list[Dist] = []
        self.start: list[Dist] = []
        self.forced_lps: list[tuple[tuple[float, ...], float, tuple[int, ...]]] = []
        key = 0
        for pool, out in ((_WORD_IDS, self.word), (_START_IDS, self.start)):
            for _ in range(_N_TEMPLATES):
                ids = tuple(rng.sample(pool, _N_CAND))
                lps, tail = _make_lps(rng, forced=False)
                out.append(Dist(key, ids, lps, tail, pool))
                key += 1
        for _ in range(_N_TEMPLATES):
            lps, tail = _make_lps(rng, forced=True)
            self.forced_lps.append((lps, tail, tuple(rng.sample(_WORD_IDS, _N_CAND - 1))))
        self.forced: dict[tuple[int, int], Dist] = {}
        self.forced_key0 = key

    def forced_dist(self, slot: int, tid: int) -> Dist:
        d = self.forced.get((slot, tid))
        if d is None:
            lps, tail, alts = self.forced_lps[slot]
            d = Dist(self.forced_key0 + slot, (tid, *alts), lps, tail, _WORD_IDS)
            self.forced[(slot, tid)] = d
        return d


_tables: _Tables | None = None


def _get_tables() -> _Tables:
    global _tables
    if _tables is None:
        _tables = _Tables()
    return _tables


def family_of(model: str) -> int:
    """Guess the chat-format family from a model name (decides the EOS and the implicit BOS)."""
    m = model.lower()
    if "deepseek" in m:  # before "llama": deepseek-r1-distill-llama-* speaks the R1 format
        return FAM_R1
    if "gpt-oss" in m or "harmony" in m:
        return FAM_HARMONY
    if "llama" in m:
        return FAM_LLAMA
    if "qwen" in m or "r1" in m:
        return FAM_R1
    return FAM_PLAIN


def bos_token_for(model: str) -> tuple[str, int]:
    """Return the (text, id) of the implicit BOS a model of this name would prepend."""
    tid = _FAMILY_BOS[family_of(model)]
    return _ID_TEXT[tid], tid


class State:
    """Format state derived from a token prefix; see the module docstring."""

    __slots__ = (
        "analysis_done",
        "count",
        "expect",
        "family",
        "fresh",
        "h",
        "h_channel",
        "h_role",
        "mode",
        "queue",
        "seg_hash",
    )

    def __init__(self, model: str) -> None:
        self.family = family_of(model)
        self.h = zlib.crc32(model.encode("utf-8")) * 0x9E3779B97F4A7C15 & _MASK
        self.mode = M_PLAIN
        self.queue: tuple[int, ...] = ()
        self.fresh = True  # no free token yet in this segment
        self.count = 0  # free tokens generated in this segment
        self.seg_hash = self.h
        self.expect = _EXPECT_NONE
        self.h_role = 0
        self.h_channel = 0
        self.analysis_done = False

    answers = False
    """Whether this state tracks answers (:class:`AnswerState`)."""
    _copied: tuple[str, ...] = __slots__

    def copy(self) -> State:
        """Return an independent copy."""
        cls = type(self)
        other = cls.__new__(cls)
        for name in cls._copied:
            setattr(other, name, getattr(self, name))
        return other

    def _segment(self, mode: int, queue: tuple[int, ...] = ()) -> None:
        self.mode = mode
        self.queue = queue
        self.fresh = True
        self.count = 0
        self.seg_hash = self.h

    def advance(self, tid: int) -> None:
        """Account for token ``tid`` having been appended to the prefix."""
        q = self.queue
        free = not q
        self.h = ((self.h ^ tid) * _FNV_PRIME) & _MASK
        if q:
            self.queue = q[1:] if q[0] == tid else ()
        else:
            self.fresh = False
            self.count += 1
        expect = self.expect
        if expect:
            self.expect = _EXPECT_NONE
            if tid not in _SPECIAL_SET:
                if expect == _EXPECT_ROLE:
                    self.h_role = tid
                    if tid == W_ASSISTANT:
                        self.queue = (H_CHANNEL,)
                    else:
                        self.analysis_done = False
                        self.queue = (H_MESSAGE,)
                else:
                    self.h_channel = tid
                    self.queue = (H_MESSAGE,)
                return
        handler = _TRANSITIONS.get(tid)
        if handler is not None:
            handler(self)
        elif free and tid == NLNL and self.mode == M_PLAIN:
            # A paragraph break starts a fresh paragraph (start-of-segment words) but keeps counting.
            self.fresh = True


def _t_r1_turn(s: State) -> None:
    s.family = FAM_R1
    s._segment(M_PLAIN)


def _t_r1_assistant(s: State) -> None:
    s.family = FAM_R1
    s._segment(M_PLAIN, (THINK,))


def _t_think(s: State) -> None:
    s._segment(M_THINK, (NL,))


def _t_end_think(s: State) -> None:
    s._segment(M_PLAIN, (NLNL,))


def _t_plain(s: State) -> None:
    s._segment(M_PLAIN)


def _t_l3_header(s: State) -> None:
    s.family = FAM_LLAMA
    s._segment(M_PLAIN, (W_ASSISTANT, L3_END_HEADER))


def _t_l3_end_header(s: State) -> None:
    s.family = FAM_LLAMA
    s._segment(M_PLAIN, (NLNL,))


def _t_l3_eot(s: State) -> None:
    s._segment(M_PLAIN, (L3_START_HEADER,))


def _t_h_start(s: State) -> None:
    s.family = FAM_HARMONY
    s._segment(M_HMSG, (W_ASSISTANT,))
    s.expect = _EXPECT_ROLE


def _t_h_channel(s: State) -> None:
    s.family = FAM_HARMONY
    s.queue = (W_FINAL if s.analysis_done else W_ANALYSIS,)
    s.expect = _EXPECT_CHANNEL


def _t_h_message(s: State) -> None:
    s.family = FAM_HARMONY
    if s.h_role == W_ASSISTANT:
        s._segment(M_ANALYSIS if s.h_channel == W_ANALYSIS else M_FINAL)
    else:
        s._segment(M_HMSG)


def _t_h_end(s: State) -> None:
    s.analysis_done = s.mode == M_ANALYSIS
    s._segment(M_PLAIN, (H_START,))
    s.h_role = s.h_channel = 0


def _t_h_return(s: State) -> None:
    s.analysis_done = False
    s.h_role = s.h_channel = 0
    s._segment(M_PLAIN)


_TRANSITIONS: Final = {
    R1_BOS: _t_plain,
    R1_USER: _t_r1_turn,
    R1_ASSISTANT: _t_r1_assistant,
    R1_EOS: _t_plain,
    THINK: _t_think,
    END_THINK: _t_end_think,
    L3_BOS: _t_plain,
    L3_START_HEADER: _t_l3_header,
    L3_END_HEADER: _t_l3_end_header,
    L3_EOT: _t_l3_eot,
    L3_EOM: _t_l3_eot,
    L3_EOTEXT: _t_plain,
    H_BOS: _t_plain,
    H_START: _t_h_start,
    H_CHANNEL: _t_h_channel,
    H_MESSAGE: _t_h_message,
    H_END: _t_h_end,
    H_RETURN: _t_h_return,
    H_CALL: _t_h_return,
    H_EOT: _t_plain,
}


def _terminator(s: State) -> int:
    mode = s.mode
    if mode == M_THINK:
        return END_THINK
    if mode in (M_ANALYSIS, M_HMSG):
        return H_END
    if mode == M_FINAL:
        return H_RETURN
    return _FAMILY_EOS[s.family]


def predict(s: State, generating: bool, ignore_eos: bool = False) -> tuple[Dist, bool]:
    """Return the next-token distribution and whether its top token is forced.

    Terminators are only placed while generating: scoring a prompt sees the plain distribution.
    """
    t = _get_tables()
    h = s.h
    slot = (h >> 32) % _N_TEMPLATES
    if s.queue:
        return t.forced_dist(slot, s.queue[0]), True
    if s.answers:
        assert isinstance(s, AnswerState)
        hooked = _predict_answer(s, t, slot, generating, ignore_eos)
        if hooked is not None:
            return hooked
    dist = (t.start if s.fresh else t.word)[slot]
    if not generating:
        return dist, False
    term = _terminator(s)
    if ignore_eos and term in STOP_TOKENS:
        return dist, False
    remaining = _remaining(s)
    if remaining <= -_SEGMENT_GRACE:
        return t.forced_dist(slot, term), True
    if remaining < _N_CAND:
        return dist.substitute(max(remaining, 0), term), False
    return dist, False


# -- opt-in answers --------------------------------------------------------------------------------

ANSWERS: Final = ("12", "7", "36", "\\frac{1}{2}", "-3", "5")
"""The candidate answers of ``answers=True``; their first tokens differ, so one draw picks one."""
_ANSWER_PRIOR: Final = (1.6, 1.0, 0.6, 0.3, 0.0, -0.4)
# A share of sentences (3 in 16) are anchors that push one answer hard; the rest add a little noise.
_ANCHOR_SHARE: Final = 3
_ANCHOR_PUSH: Final = 2.5
_NOISE: Final = 0.3
_ANSWER_TAIL: Final = 1e-6


def _register(text: str) -> tuple[int, ...]:
    from ._tokenizer import tokenize

    texts, ids = tokenize(text)
    for tt, tid in zip(texts, ids, strict=True):
        _ID_TEXT.setdefault(tid, tt)
    return ids


_ANSWER_IDS: Final = tuple(_register(a + "}") for a in ANSWERS)
#: First token of each answer -> the tokens that follow it (the rest of the answer, then ``}``).
_ANSWER_REST: Final = {ids[0]: ids[1:] for ids in _ANSWER_IDS}
_BOX_OPEN: Final = _register(" \\boxed{")  # " \\", "boxed", "{"
_BACKSLASHES: Final = frozenset({token_id("\\"), token_id(" \\")})
_BOXED, _LBRACE = _BOX_OPEN[1], _BOX_OPEN[2]
_SENTENCE_ENDS: Final = frozenset(token_id(c) for c in (".", "?", "!", " .", " ?", " !"))
_ANSWER_MODES: Final = frozenset({M_PLAIN, M_FINAL})
_B_NONE, _B_OPEN, _B_DONE = 0, 1, 2
_SENTENCE_H0: Final = 0xCBF29CE484222325  # FNV-1a's offset basis
_answer_dists: dict[tuple[float, ...], Dist] = {}
_answer_keys = itertools.count(1 << 62)  # above every template key, each answer distribution its own


class AnswerState(State):
    """A :class:`State` that also tracks answers (the simulator's ``answers="boxed"``).

    Each finished sentence (a ``.``, ``?`` or ``!`` token) folds the hash of its tokens into the
    votes over :data:`ANSWERS`; ``boxed`` says whether the prefix just opened ``\\boxed{`` (the
    next token picks the answer) or has just closed the answer (the segment's terminator follows).
    """

    __slots__ = ("boxed", "prev1", "prev2", "sent_h", "votes")
    answers = True
    _copied = State.__slots__ + __slots__

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.votes: tuple[float, ...] = _ANSWER_PRIOR
        self.sent_h = _SENTENCE_H0
        self.boxed = _B_NONE
        self.prev1 = self.prev2 = -1

    def _segment(self, mode: int, queue: tuple[int, ...] = ()) -> None:
        super()._segment(mode, queue)
        self.boxed = _B_NONE

    def advance(self, tid: int) -> None:
        """Account for ``tid`` (see :meth:`State.advance`), then for what it means to the answer."""
        free = not self.queue
        opens_box = free and self.boxed == _B_NONE and tid in _BACKSLASHES and _answer_due(self)
        picked = self.boxed == _B_OPEN
        super().advance(tid)
        self.sent_h = ((self.sent_h ^ tid) * _FNV_PRIME) & _MASK
        if tid in _SENTENCE_ENDS:
            self.votes = _fold(self.votes, self.sent_h)
            self.sent_h = _SENTENCE_H0  # a sentence's votes depend on its own tokens only
        if opens_box:
            self.queue = _BOX_OPEN[1:]
        if picked:
            rest = _ANSWER_REST.get(tid)
            self.boxed = _B_DONE if rest is not None else _B_NONE
            if rest is not None:
                self.queue = rest
        elif tid == _LBRACE and self.prev1 == _BOXED and self.prev2 in _BACKSLASHES:
            self.boxed = _B_OPEN
        self.prev2, self.prev1 = self.prev1, tid


def _fold(votes: tuple[float, ...], h: int) -> tuple[float, ...]:
    """The votes after one more sentence whose tokens hash to ``h``."""
    h = (h * 0x9E3779B97F4A7C15) & _MASK  # spread the FNV state's bits
    out = [v + (((h >> (8 + 6 * k)) % 64) / 63.0 - 0.5) * 2 * _NOISE for k, v in enumerate(votes)]
    if (h >> 48) % 16 < _ANCHOR_SHARE:
        out[(h >> 56) % len(out)] += _ANCHOR_PUSH
    return tuple(out)


def _answer_dist(votes: tuple[float, ...]) -> Dist:
    """The distribution over the answers' first tokens for ``votes`` (softmax), sorted descending."""
    d = _answer_dists.get(votes)
    if d is None:
        top = max(votes)
        weights = [math.exp(v - top) for v in votes]
        total = sum(weights) / (1.0 - _ANSWER_TAIL)
        pairs = sorted(
            ((min(_round32(math.log(w / total)), -1e-7), ids[0]) for w, ids in zip(weights, _ANSWER_IDS, strict=True)),
            key=lambda p: -p[0],
        )
        d = Dist(
            next(_answer_keys),
            tuple(tid for _, tid in pairs),
            tuple(lp for lp, _ in pairs),
            math.log(_ANSWER_TAIL),
            _WORD_IDS,
        )
        if len(_answer_dists) >= 65536:
            del _answer_dists[next(iter(_answer_dists))]
        _answer_dists[votes] = d
    return d


def answer_distribution(s: State) -> dict[str, float] | None:
    """The probability of each of :data:`ANSWERS` at ``s`` if it has just opened ``\\boxed{``, else None."""
    if not isinstance(s, AnswerState) or s.boxed != _B_OPEN:
        return None
    d = _answer_dist(s.votes)
    first = {ids[0]: answer for answer, ids in zip(ANSWERS, _ANSWER_IDS, strict=True)}
    return {first[tid]: math.exp(lp) for tid, lp in zip(d.ids, d.lps, strict=True)}


def _answer_due(s: State) -> bool:
    return s.mode in _ANSWER_MODES and _remaining(s) <= 0


def _predict_answer(
    s: AnswerState, t: _Tables, slot: int, generating: bool, ignore_eos: bool
) -> tuple[Dist, bool] | None:
    """What answers change at ``s`` (None: nothing, the plain rules apply)."""
    if s.boxed == _B_OPEN:
        return _answer_dist(s.votes), False
    if not generating or s.mode not in _ANSWER_MODES:
        return None
    term = _terminator(s)
    if ignore_eos and term in STOP_TOKENS:
        return None
    if s.boxed == _B_DONE:
        return t.forced_dist(slot, term), True
    remaining = _remaining(s)
    if remaining <= 0:
        return t.forced_dist(slot, token_id(" \\")), True
    if remaining < _N_CAND:
        return (t.start if s.fresh else t.word)[slot], False  # no terminator before the box
    return None


def _remaining(s: State) -> int:
    """Free tokens left before the segment's hash-derived length (negative past it)."""
    lo, spread = _SEGMENT_LEN[s.mode]
    return lo + (s.seg_hash >> 40) % spread - s.count


def tail_logprob(dist: Dist, h: int, tid: int) -> float:
    """Logprob of a token outside the six candidates (deterministic, below every candidate)."""
    x = ((h ^ (tid * 0x9E3779B1)) >> 24) % 1000
    return _round32(dist.lps[-1] - 0.5 - x / 100.0)


class Step:
    """One token position: its text, id, logprobs and the distribution it was drawn or scored from."""

    __slots__ = ("dist", "lp", "slp", "text", "tid")

    def __init__(self, text: str, tid: int, lp: float | None, slp: float | None, dist: Dist | None) -> None:
        self.text = text
        self.tid = tid
        #: Model logprob; None only for the first token of a sequence (nothing to condition on).
        self.lp = lp
        #: Logprob under the sampling distribution (temperature, top_k, top_p, min_p applied).
        self.slp = slp
        #: The six candidates at this position (None with ``lp``).
        self.dist = dist


class Prompt:
    """A tokenised prompt walked through the model: per-token steps and the state at its end."""

    __slots__ = ("bos_hidden", "end_state", "ids", "steps", "text", "texts")

    def __init__(
        self,
        text: str,
        texts: tuple[str, ...],
        ids: tuple[int, ...],
        steps: list[Step],
        end_state: State,
        bos_hidden: bool,
    ) -> None:
        self.text = text
        self.texts = texts
        self.ids = ids
        self.steps = steps
        self.end_state = end_state
        #: The first step is an implicit BOS that echo must not return (``bos="count"``).
        self.bos_hidden = bos_hidden


def walk_prompt(
    model: str, texts: Sequence[str], ids: Sequence[int], text: str, bos_hidden: bool, *, answers: bool = False
) -> Prompt:
    """Score every prompt token (the first gets ``None``) and return the end state.

    ``answers`` turns on the opt-in answer tracking (:class:`AnswerState`).
    """
    s = AnswerState(model) if answers else State(model)
    steps: list[Step] = []
    for i, (tt, tid) in enumerate(zip(texts, ids, strict=True)):
        if i == 0:
            steps.append(Step(tt, tid, None, None, None))
        else:
            dist, _ = predict(s, generating=False)
            if tid not in dist.ids and tid == _terminator(s):
                # Score an emitted terminator (</think>, <|end|>) where generation would have placed it.
                dist, _ = predict(s, generating=True)
            elif s.answers and tid not in dist.ids:
                # The same for the forced " \\boxed{" that ends an answer segment.
                emitted, forced = predict(s, generating=True)
                if forced and emitted.ids[0] == tid:
                    dist = emitted
            try:
                lp = dist.lps[dist.ids.index(tid)]
            except ValueError:
                lp = tail_logprob(dist, s.h, tid)
            steps.append(Step(tt, tid, lp, lp, dist))
        s.advance(tid)
    return Prompt(text, tuple(texts), tuple(ids), steps, s, bos_hidden)


class Sampling:
    """Sampling parameters that change which token is drawn (and ``sampling_logprob``)."""

    __slots__ = ("greedy", "key", "min_p", "temperature", "top_k", "top_p", "trivial")

    def __init__(self, temperature: float, top_k: int, top_p: float, min_p: float) -> None:
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.min_p = min_p
        self.greedy = temperature == 0.0 or top_k == 1
        self.trivial = temperature == 1.0 and top_k == 0 and top_p >= 1.0 and min_p <= 0.0
        self.key = (temperature, top_k, top_p, min_p)


# (template key, sampling key) -> (cumulative probs over kept candidates, their sampling logprobs,
# log-normaliser for tail tokens or None when the tail is cut off)
_Processed = tuple[tuple[float, ...], tuple[float, ...], float | None]
_processed: dict[tuple[int, tuple[float, int, float, float]], _Processed] = {}


def _process(dist: Dist, sp: Sampling) -> _Processed:
    key = (dist.key, sp.key)
    hit = _processed.get(key)
    if hit is not None:
        return hit
    t = sp.temperature
    z = [lp / t for lp in dist.lps]
    keep_tail = sp.top_k == 0 and sp.top_p >= 1.0 and sp.min_p <= 0.0
    if sp.top_k > 0:
        z = z[: sp.top_k]
    zmax = z[0]
    # Underflowed weights can only sit at the end (candidates are sorted), so the rest stays a prefix.
    w = [x for x in (math.exp(v - zmax) for v in z) if x > 0.0]
    tail_w = math.exp(dist.tail_lp / t - zmax) if keep_tail else 0.0
    if sp.min_p > 0.0:
        w = [x for x in w if x >= sp.min_p * w[0]]
    if sp.top_p < 1.0:
        total = sum(w)
        acc = 0.0
        for i, x in enumerate(w):
            acc += x / total
            if acc >= sp.top_p:
                w = w[: i + 1]
                break
    total = sum(w) + tail_w
    cum = []
    acc = 0.0
    for x in w:
        acc += x / total
        cum.append(acc)
    slps = tuple(_round32(math.log(x / total)) for x in w)
    tail_norm = zmax + math.log(total) if keep_tail else None
    result = (tuple(cum), slps, tail_norm)
    if len(_processed) >= 65536:
        del _processed[next(iter(_processed))]
    _processed[key] = result
    return result


class Generation:
    """The generated tokens of one choice and why generation ended."""

    __slots__ = ("finish_reason", "steps", "text")

    def __init__(self, steps: list[Step], text: str, finish_reason: str) -> None:
        self.steps = steps
        self.text = text
        self.finish_reason = finish_reason


def _pick_tail(rng: random.Random, dist: Dist) -> int:
    # Excluding the base candidates too keeps a tail token's logprob the same when the text is scored.
    pool = dist.pool
    n = len(pool)
    j = rng.randrange(n)
    while pool[j] in dist.base_ids or pool[j] in dist.ids:
        j = (j + 1) % n
    return pool[j]


def _cut(steps: list[Step], text: str, cut: int) -> tuple[list[Step], str]:
    """Trim steps so that they cover exactly ``text[:cut]`` (the straddling token is shortened)."""
    out: list[Step] = []
    pos = 0
    for st in steps:
        if pos >= cut:
            break
        end = pos + len(st.text)
        if end > cut:
            st = Step(st.text[: cut - pos], st.tid, st.lp, st.slp, st.dist)
        out.append(st)
        pos = end
    return out, text[:cut]


def generate(
    prompt: Prompt,
    *,
    seed_key: int,
    sampling: Sampling,
    max_tokens: int,
    stops: tuple[str, ...] = (),
    stop_included: bool = False,
    ignore_eos: bool = False,
    greedy_rank: int = 0,
) -> Generation:
    """Generate one choice; see the module docstring for the rules.

    ``greedy_rank`` is the candidate greedy decoding picks where nothing is forced: 0, or 1 for a server
    whose temperature 0 does not take the top token (``logprobs_fault="not-greedy"``).
    """
    s = prompt.end_state.copy()
    if not s.fresh:
        # Count a segment the prompt already started from here, so a long prompt still gets an answer.
        # At a segment boundary keep the segment's own origin, which scoring the text would also use.
        s.count = 0
        s.seg_hash = s.h
    rng = random.Random(seed_key)
    steps: list[Step] = []
    text = ""
    finish = "length"
    max_stop = max((len(x) for x in stops), default=0)
    for _ in range(max_tokens):
        dist, forced = predict(s, generating=True, ignore_eos=ignore_eos)
        h = s.h
        if forced or sampling.greedy:
            k = 0 if forced else greedy_rank
            slp = 0.0 if sampling.greedy else None
        elif sampling.trivial:
            k = bisect.bisect_right(dist.cum, rng.random())
            slp = None
        else:
            cum, slps, _tail = _process(dist, sampling)
            k = bisect.bisect_right(cum, rng.random())
            if k >= len(cum) and _tail is None:
                k = len(cum) - 1
            slp = slps[k] if k < len(cum) else None
        if k < _N_CAND:
            tid = dist.ids[k]
            if tid in STOP_TOKENS:
                finish = "stop"
                break
            tt = dist.texts[k]
            lp = dist.lps[k]
            if slp is None:
                if sampling.trivial:
                    slp = lp
                elif forced:
                    slps = _process(dist, sampling)[1]
                    slp = slps[0]
        else:
            tid = _pick_tail(rng, dist)
            tt = _ID_TEXT[tid]
            lp = tail_logprob(dist, h, tid)
            if sampling.trivial:
                slp = lp
            else:
                norm = _process(dist, sampling)[2]
                slp = _round32(lp / sampling.temperature - norm) if norm is not None else lp
        steps.append(Step(tt, tid, lp, slp, dist))
        before = len(text)
        text += tt
        s.advance(tid)
        if stops:
            start = max(0, before - max_stop + 1)
            best = -1
            best_len = 0
            for st in stops:
                pos = text.find(st, start)
                if pos >= 0 and (best < 0 or pos < best):
                    best, best_len = pos, len(st)
            if best >= 0:
                steps, text = _cut(steps, text, best + best_len if stop_included else best)
                finish = "stop"
                break
    return Generation(steps, text, finish)
