"""The cache record: one sample as named, versioned, data-only bytes.

A record never holds code: reading one parses a JSON header and hands the logprobs bytes to
:meth:`Logprobs.from_packed`, so a cache directory from elsewhere can at worst be unreadable,
never run anything. Format version 1, all integers little-endian::

    offset  size  field
    0       4     magic b"FWRC"
    4       1     format version (1)
    5       4     header length H (uint32)
    9       H     header: a UTF-8 JSON object with exactly the fields of _FIELDS below
    9+H     L     logprobs: Logprobs.packed() (L = header["logprobs_bytes"]; absent when null)
    9+H+L   4     CRC32 (zlib.crc32) of every byte before it

The prompt is not stored: the cache key already fixes it, so the reader supplies it. The
magic and version come first in every format, so a future version can change everything
after them; a version this code does not know is an error, never a guess. Anything that is
not a well-formed record (an old pickled entry, a flipped byte, a header of the wrong
shape) raises :class:`RecordError`.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Any

import orjson

from ._logprobs import Logprobs
from ._models import FwResponse, Usage

__all__ = ["FORMAT_VERSION", "MAGIC", "RecordError", "decode_record", "encode_record"]

MAGIC = b"FWRC"
"""The first bytes of every record."""
FORMAT_VERSION = 1
"""The format :func:`encode_record` writes (and the only one :func:`decode_record` reads so far)."""

_PREFIX = struct.Struct("<4sBI")  # magic, version, header length
_CRC_SIZE = 4
_CRC_RESIDUE = 0x2144DF1C  # zlib.crc32(m + zlib.crc32(m).to_bytes(4, "little")), whatever m is
_V1_START = MAGIC + bytes((1,))
_V1_MIN_SIZE = _PREFIX.size + _CRC_SIZE
_FIELDS = (
    "full",
    "content",
    "reasoning",
    "finish_reason",
    "completed_reasoning",
    "usage",
    "seed",
    "model",
    "response_id",
    "created",
    "echo",
    "index",
    "logprobs_bytes",
)
_FIELD_SET = frozenset(_FIELDS)
_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")
_USAGE_SET = frozenset(_USAGE_FIELDS)
# The field names as orjson hands them out: it caches the str objects of keys, so comparing a parsed header's
# keys with these is mostly pointer checks (any other str with the same text compares equal all the same).
_PARSED_FIELDS = tuple(orjson.loads(orjson.dumps({name: None for name in _FIELDS})))
_PARSED_USAGE_FIELDS = tuple(orjson.loads(orjson.dumps({name: None for name in _USAGE_FIELDS})))
# decode_record builds FwResponse with positional arguments: fail at import, not silently, if they move.
_RESPONSE_FIELDS = (
    "full",
    "content",
    "reasoning",
    "finish_reason",
    "completed_reasoning",
    "usage",
    "seed",
    "model",
    "response_id",
    "created",
    "logprobs",
    "echo",
    "prompt",
    "index",
    "cached",
)
if tuple(f.name for f in dataclasses.fields(FwResponse))[: len(_RESPONSE_FIELDS)] != _RESPONSE_FIELDS:
    raise ImportError("FwResponse's fields moved: update fw_rollouts._record.decode_record, which passes them in order")


class RecordError(ValueError):
    """Bytes that are not a readable cache record (foreign, older, newer, truncated or corrupt)."""


def encode_record(response: FwResponse) -> bytes:
    """The cache record of ``response`` (without its prompt, which the cache key fixes).

    Raises :class:`RecordError` if a field cannot be stored as its type demands (say, a
    float token count), so that every record written reads back.
    """
    logprobs = response.logprobs
    packed = None if logprobs is None else logprobs.packed()
    usage = response.usage
    header = {
        "full": response.full,
        "content": response.content,
        "reasoning": response.reasoning,
        "finish_reason": response.finish_reason,
        "completed_reasoning": response.completed_reasoning,
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cached_tokens": usage.cached_tokens,
        },
        "seed": response.seed,
        "model": response.model,
        "response_id": response.response_id,
        "created": response.created,
        "echo": response.echo,
        "index": response.index,
        "logprobs_bytes": None if packed is None else len(packed),
    }
    if _checked(header) is None:
        _checked_slowly(header, "cannot store this sample in the cache")
    try:
        head = orjson.dumps(header)
    except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate in the text, an int beyond 64 bits
        raise RecordError(f"cannot store this sample in the cache: {exc}") from exc
    start = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)) + head
    if packed is None:
        return start + zlib.crc32(start).to_bytes(_CRC_SIZE, "little")
    crc = zlib.crc32(packed, zlib.crc32(start))
    return b"".join((start, packed, crc.to_bytes(_CRC_SIZE, "little")))


def decode_record(data: bytes | bytearray | memoryview, prompt: str) -> FwResponse:
    """The sample a record holds, marked ``cached``, with ``prompt`` as its prompt.

    The logprobs stay packed until first read (:meth:`Logprobs.from_packed`). Raises
    :class:`RecordError` for anything that is not a well-formed record this version reads.
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise RecordError(f"a cache record is bytes, not {type(data).__name__}")
        data = bytes(data)
    if data[:5] != _V1_START:
        return _decode_other(data, prompt)
    # Version 1, inline: a cache hit pays for every step here.
    size = len(data)
    if size < _V1_MIN_SIZE:
        raise RecordError(f"cache record is truncated ({size} bytes)")
    # The CRC of a message followed by its own CRC (little-endian) is always _CRC_RESIDUE: one pass, no slicing.
    if zlib.crc32(data) != _CRC_RESIDUE:
        raise RecordError("cache record is corrupt: its CRC32 does not match its contents")
    end = size - _CRC_SIZE
    head_end = _PREFIX.size + int.from_bytes(data[5:9], "little")
    if head_end > end:
        raise RecordError(f"cache record header length runs past the end of the record ({size} bytes)")
    try:
        header = orjson.loads(memoryview(data)[_PREFIX.size : head_end])
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"cache record header is not JSON: {exc}") from exc
    values = _checked(header)
    if values is None:
        values = _checked_slowly(header, "cache record header is malformed")
    full, content, reasoning, finish, completed, usage, seed, model, rid, created, echo, index, lp_size = values
    if (lp_size or 0) != end - head_end:
        raise RecordError(
            f"cache record lengths do not add up: the header announces {lp_size} logprobs bytes, "
            f"the record holds {end - head_end}"
        )
    # The record's CRC, checked above, covers these bytes: no second checksum pass per hit.
    try:
        logprobs = None if lp_size is None else Logprobs.from_packed(data[head_end:end], verified=True)
    except ValueError as exc:
        raise RecordError(f"cache record logprobs are malformed: {exc}") from exc
    # By position (see _RESPONSE_FIELDS): half the cost of keywords, on every cache hit.
    return FwResponse(
        full, content, reasoning, finish, completed, Usage(*usage), seed, model, rid, created, logprobs, echo, prompt,
        index, True,
    )  # fmt: skip


def _decode_other(data: bytes, prompt: str) -> FwResponse:
    """Bytes that do not start as a version 1 record: the reader of another version, or a RecordError saying why.

    (A future format version gets its reader here.)
    """
    if len(data) < 5 and MAGIC.startswith(data):
        raise RecordError(f"cache record is truncated ({len(data)} bytes)")
    if data[:4] != MAGIC:
        if data[:1] == b"\x80":
            raise RecordError(
                "cache entry is a pickle from an older fw_rollouts; it is not read (pickles can run code)"
            )
        raise RecordError(f"not a fw_rollouts cache record (it starts {data[:8]!r}, not {MAGIC!r})")
    raise RecordError(
        f"cache record format version {data[4]} is not one this version of fw_rollouts reads "
        f"(it reads {FORMAT_VERSION}); the entry is probably from a newer fw_rollouts"
    )


def _checked(h: Any) -> tuple[Any, ...] | None:
    """The header's values in ``_FIELDS`` order (usage as a 4-tuple) if it is exactly as written, else None.

    A cache hit pays for this on every sample, hence one unpacking and one expression. Types
    are exact: ``type(x) is int`` rejects a bool where a count belongs (``isinstance`` would
    not). A header with its fields in another order fails here and is sorted out by
    :func:`_checked_slowly`.
    """
    if type(h) is not dict or tuple(h) != _PARSED_FIELDS:
        return None
    full, content, reasoning, finish, completed, usage, seed, model, rid, created, echo, index, lp_size = h.values()
    if type(usage) is not dict or tuple(usage) != _PARSED_USAGE_FIELDS:
        return None
    prompt_tokens, completion_tokens, total_tokens, cached_tokens = counts = tuple(usage.values())
    if (
        type(full) is str
        and type(content) is str
        and type(reasoning) is str
        and type(finish) is str
        and type(model) is str
        and type(rid) is str
        and (completed is None or type(completed) is bool)
        and (seed is None or type(seed) is int)
        and type(created) is int
        and type(echo) is bool
        and type(index) is int
        and index >= 0
        and (lp_size is None or (type(lp_size) is int and lp_size >= 0))
        and type(prompt_tokens) is int
        and prompt_tokens >= 0
        and type(completion_tokens) is int
        and completion_tokens >= 0
        and type(total_tokens) is int
        and total_tokens >= 0
        and (cached_tokens is None or (type(cached_tokens) is int and cached_tokens >= 0))
    ):
        return (full, content, reasoning, finish, completed, counts, seed, model, rid, created, echo, index, lp_size)
    return None


def _checked_slowly(h: Any, context: str) -> tuple[Any, ...]:
    """What :func:`_checked` returns, for a header it refused: RecordError naming the first problem, if any."""
    problem = _describe_problem(h)
    if problem is not None:
        raise RecordError(f"{context}: {problem}")
    # Every field is right, only their order differs from ours (written by other code): put it in ours.
    usage = h["usage"]
    values = _checked({**{name: h[name] for name in _FIELDS}, "usage": {name: usage[name] for name in _USAGE_FIELDS}})
    if values is None:  # pragma: no cover - _describe_problem and _checked test the same things
        raise RecordError(f"{context}: its fields are not as expected")
    return values


_STR, _INT, _COUNT, _BOOL = "a string", "an integer", "a non-negative integer", "true or false"
_EXPECTED: dict[str, tuple[str, bool]] = {  # field -> (what it must be, whether null is allowed)
    "full": (_STR, False),
    "content": (_STR, False),
    "reasoning": (_STR, False),
    "finish_reason": (_STR, False),
    "completed_reasoning": (_BOOL, True),
    "seed": (_INT, True),
    "model": (_STR, False),
    "response_id": (_STR, False),
    "created": (_INT, False),
    "echo": (_BOOL, False),
    "index": (_COUNT, False),
    "logprobs_bytes": (_COUNT, True),
    "prompt_tokens": (_COUNT, False),
    "completion_tokens": (_COUNT, False),
    "total_tokens": (_COUNT, False),
    "cached_tokens": (_COUNT, True),
}


def _describe_problem(h: Any) -> str | None:
    """The first thing wrong with a header, in words, or None if nothing is."""
    if type(h) is not dict:
        return f"expected a JSON object, got {type(h).__name__}"
    if h.keys() != _FIELD_SET:
        return _key_problem("", h, _FIELD_SET)
    for name in _FIELDS:
        if name == "usage":
            usage = h[name]
            if type(usage) is not dict:
                return f"usage must be an object, got {type(usage).__name__}"
            if usage.keys() != _USAGE_SET:
                return _key_problem("usage ", usage, _USAGE_SET)
            for part in _USAGE_FIELDS:
                if (problem := _value_problem(f"usage.{part}", usage[part], *_EXPECTED[part])) is not None:
                    return problem
        elif (problem := _value_problem(name, h[name], *_EXPECTED[name])) is not None:
            return problem
    return None


def _key_problem(where: str, h: dict[Any, Any], expected: frozenset[str]) -> str:
    missing = sorted(expected - h.keys())
    extra = sorted(map(str, h.keys() - expected))
    parts = [f"missing {', '.join(missing)}"] if missing else []
    if extra:
        parts.append(f"unexpected {', '.join(extra)}")
    return f"{where}fields: {'; '.join(parts)}"


def _value_problem(name: str, value: Any, expected: str, nullable: bool) -> str | None:
    if value is None and nullable:
        return None
    kind = type(value)
    if expected == _STR:
        ok = kind is str
    elif expected == _BOOL:
        ok = kind is bool
    else:
        ok = kind is int and (expected == _INT or value >= 0)
    if ok:
        return None
    what = expected + (" or null" if nullable else "")
    return f"{name} must be {what}, got {value!r:.60}"
