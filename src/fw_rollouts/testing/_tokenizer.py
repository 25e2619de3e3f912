"""The simulator's toy tokenizer.

Special tokens of the three chat formats the project targets are single tokens with their real ids.
Everything else is split by a regex in the spirit of the Llama 3 / GPT-4 pre-tokenizers:

* a run of letters with an optional single leading space (``" hello"``), cut into chunks of
  :data:`CHUNK` letters when longer than :data:`MAX_WORD` so long words become several tokens;
* one digit per token (as Qwen and the R1 distills do);
* one punctuation or symbol character (emoji included) with an optional leading space;
* whitespace: newline runs (with the whitespace before them) are one token, a run of spaces before a
  word leaves its last space to the word.

Tokens always concatenate back to the input text. Ids are stable across processes: a fixed table for
special tokens, the code point for single ASCII characters, and a CRC-32 hash into ``[256, 126256)``
for everything else (collisions are possible, as in any toy; decoding keeps the first text seen).
"""

from __future__ import annotations

import re
import zlib
from typing import Final

from ._memo import Memo

__all__ = [
    "CHUNK",
    "MAX_WORD",
    "SPECIAL_IDS",
    "decode_id",
    "token_bytes",
    "token_id",
    "tokenize",
]

#: Special tokens and their ids (R1-distill/Qwen, Llama 3, harmony/o200k).
SPECIAL_IDS: Final[dict[str, int]] = {
    # DeepSeek-R1-Distill (Qwen tokenizer)
    "<｜end▁of▁sentence｜>": 151643,
    "<｜User｜>": 151644,
    "<｜Assistant｜>": 151645,
    "<｜begin▁of▁sentence｜>": 151646,
    "<think>": 151648,
    "</think>": 151649,
    # Llama 3
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eom_id|>": 128008,
    "<|eot_id|>": 128009,
    "<|python_tag|>": 128010,
    # harmony (gpt-oss)
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
}

#: Letter runs longer than this are split into chunks.
MAX_WORD: Final = 10
#: Chunk size for long letter runs (the first chunk keeps the leading space).
CHUNK: Final = 6

_HASH_BASE: Final = 256
_HASH_SPAN: Final = 126_000

# Longest first so that no special token shadows a longer one sharing its prefix.
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in sorted(SPECIAL_IDS, key=len, reverse=True)) + ")")
_PIECE = re.compile(
    r" ?[^\W\d_]+"  # letters, optional leading space
    r"|\d"  # digits one by one
    r"| ?[^\s\w]"  # one punctuation/symbol character
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"  # whitespace, newline runs kept whole
    r"|.",  # anything left (the underscore)
    re.DOTALL,
)

_ids: dict[str, int] = dict(SPECIAL_IDS)
_texts: dict[int, str] = {v: k for k, v in SPECIAL_IDS.items()}
_bytes: dict[str, list[int]] = {}
_cache: Memo[str, tuple[tuple[str, ...], tuple[int, ...]]] = Memo(8_000_000)  # characters


def token_id(text: str) -> int:
    """Return the stable id of one token's text."""
    tid = _ids.get(text)
    if tid is None:
        if len(text) == 1 and ord(text) < 128:
            tid = ord(text)
        else:
            tid = _HASH_BASE + zlib.crc32(text.encode("utf-8")) % _HASH_SPAN
        _ids[text] = tid
        _texts.setdefault(tid, text)
    return tid


def decode_id(tid: int) -> str:
    """Return the text of a token id.

    Ids never produced by :func:`token_id` in this process decode to a placeholder ``"<tok_N>"``, so a
    token-id prompt always has some text to echo.
    """
    text = _texts.get(tid)
    if text is None:
        if 0 <= tid < 128:
            return chr(tid)
        return f"<tok_{tid}>"
    return text


def token_bytes(text: str) -> list[int]:
    """Return the UTF-8 bytes of a token as a list of ints (memoised; callers must not mutate it)."""
    b = _bytes.get(text)
    if b is None:
        b = list(text.encode("utf-8"))
        if len(_bytes) < 65536:
            _bytes[text] = b
    return b


def _split_word(piece: str, out: list[str]) -> None:
    start = 1 if piece[0] == " " else 0
    if len(piece) - start <= MAX_WORD:
        out.append(piece)
        return
    first = start + CHUNK
    out.append(piece[:first])
    for i in range(first, len(piece), CHUNK):
        out.append(piece[i : i + CHUNK])


def tokenize(text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Split ``text`` into token texts and ids; ``"".join(texts) == text`` always holds."""
    hit = _cache.get(text)
    if hit is not None:
        return hit
    out: list[str] = []
    for i, seg in enumerate(_SPECIAL_SPLIT.split(text)):
        if i % 2:
            out.append(seg)
        elif seg:
            for piece in _PIECE.findall(seg):
                if len(piece) > MAX_WORD:
                    _split_word(piece, out)
                else:
                    out.append(piece)
    texts = tuple(out)
    result = (texts, tuple(token_id(t) for t in texts))
    _cache.put(text, result, len(text))
    return result
