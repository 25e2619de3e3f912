"""The cache record: one sample as named, versioned, data-only bytes.

A record never holds code: reading one is one ``struct`` read, six UTF-8 decodes and the
logprobs bytes handed to :meth:`Logprobs.from_packed`, so a cache directory from elsewhere can
at worst be unreadable, never run anything. Format version 3, all integers little-endian::

    offset  size  field
    0       4     magic b"FWRC"
    4       1     format version (3)
    5       1     flags: 1 echo, 2 completed_reasoning known, 4 completed_reasoning, 8 seed known,
                  16 usage.cached_tokens known, 32 logprobs present, 64 prompt shared (the logprobs
                  are the generated positions only), 128 content is full (its length is then 0:
                  the text is stored once)
    6       4     key tag: CRC32 of the cache key (UTF-8) the record was written under
    10      8     seed (int64; 0 when not known)
    18      8     created (int64)
    26      8     index (uint64)
    34      32    usage: prompt_tokens, completion_tokens, total_tokens, cached_tokens (uint64 each)
    66      28    byte lengths (uint32 each) of: full, content, reasoning, finish_reason, model,
                  response_id, logprobs
    94      ...   those six strings (UTF-8), then the logprobs (Logprobs.packed())
    end-4   4     CRC32 (zlib.crc32) of every byte before it

Version 2 is the same without flag 128 (and with logprobs in packed format 1, which
:meth:`Logprobs.from_packed` still reads): version 2 records are read as they are.

Types come from the layout itself, so a well-formed record cannot hold a value of the wrong
type; the CRC catches damage to the record (every burst of up to 32 flipped bits, and any other
damage but one time in 2**32). The key tag catches damage around it: a damaged database index
can hand back another key's intact record, which the CRC alone would accept (version 1 had no
tag and served such records as the wrong sample). The prompt is not stored: the cache key
already fixes it, so the reader supplies it. The magic and version come first in every format,
so a future version can change everything after them; a version this code does not know is an
error, never a guess. Anything that is not a well-formed record of the key asked for (an old
pickled entry, a version 1 record, a flipped byte, lengths that do not add up, another key's
record) raises :class:`RecordError`.

**Echo paid once.** A sample whose echoed prompt positions are shared with the other samples of
its prompt (:func:`~._echo.with_prompt`) is stored with flag 64 and its generated positions only;
the prompt's are stored once, in the prompt record (:func:`encode_prompt_record`, under
``CacheKeyer.prompt_key()``), and :func:`decode_record` puts them back when given that part. A
release before flag 64 reads such a record as unreadable, that is a miss, and fetches the sample
again; records without it read as they always did. The prompt record, version 1::

    offset  size  field
    0       4     magic b"FWPR"
    4       1     format version (1)
    5       1     flags (none yet: any bit set is not a v1 prompt record)
    6       4     key tag: CRC32 of the prompt key (UTF-8) it was written under
    10      8     generation offset (int64): the text offset of the first generated token
    18      4     byte length (uint32) of the logprobs
    22      ...   the echoed prompt positions (Logprobs.packed(): echo, their count, the prompt's length)
    end-4   4     CRC32 (zlib.crc32) of every byte before it
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Final

from ._echo import PromptPart
from ._logprobs import Logprobs, prefix_of, share_prefix
from ._models import FwResponse, Usage

__all__ = [
    "FIELDS",
    "FORMAT_VERSION",
    "MAGIC",
    "PROMPT_FORMAT_VERSION",
    "PROMPT_MAGIC",
    "PromptPartMissing",
    "RecordError",
    "decode_prompt_record",
    "decode_record",
    "encode_prompt_record",
    "encode_record",
    "key_tag",
    "verify_record",
]

MAGIC: Final = b"FWRC"
"""The first bytes of every record."""
FORMAT_VERSION: Final = 3
"""The format :func:`encode_record` writes; :func:`decode_record` reads it and version 2."""

FIELDS: Final = (
    "flags",
    "key_tag",
    "seed",
    "created",
    "index",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "full_bytes",
    "content_bytes",
    "reasoning_bytes",
    "finish_reason_bytes",
    "model_bytes",
    "response_id_bytes",
    "logprobs_bytes",
)
"""The fixed fields after magic and version, in order (see the module docstring)."""

_FIXED = struct.Struct("<4sBBIqqQQQQQ7I")
_CRC_SIZE = 4
_CRC_RESIDUE = 0x2144DF1C  # zlib.crc32(m + zlib.crc32(m).to_bytes(4, "little")), whatever m is
_START = MAGIC + bytes((FORMAT_VERSION,))
_START_V2 = MAGIC + b"\x02"
_ECHO, _COMPLETED_KNOWN, _COMPLETED, _SEED_KNOWN, _CACHED_KNOWN, _LOGPROBS, _SHARED = 1, 2, 4, 8, 16, 32, 64
_CONTENT_IS_FULL = 128
_ALL_FLAGS = 255
_ALL_FLAGS_V2 = 127

PROMPT_MAGIC: Final = b"FWPR"
"""The first bytes of every prompt record."""
PROMPT_FORMAT_VERSION: Final = 1
"""The prompt record format :func:`encode_prompt_record` writes, the only one :func:`decode_prompt_record` reads."""
_PROMPT_FIXED = struct.Struct("<4sBBIqI")
_PROMPT_START = PROMPT_MAGIC + bytes((PROMPT_FORMAT_VERSION,))

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


class PromptPartMissing(RecordError):
    """A well-formed record of a sample that shares its prompt part, read without that part."""


def _int(name: str, value: object, *, optional: bool = False) -> int:
    """``value`` as the layout stores it; a bool or a float where an integer belongs is refused."""
    if value is None and optional:
        return 0
    if type(value) is not int:
        raise RecordError(f"cannot store this sample in the cache: {name} must be an integer, got {value!r:.60}")
    return value


def _text(name: str, value: object) -> bytes:
    if type(value) is not str:
        raise RecordError(f"cannot store this sample in the cache: {name} must be a string, got {value!r:.60}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, say
        raise RecordError(f"cannot store this sample in the cache: {name} is not valid Unicode ({exc})") from exc


def key_tag(key: str) -> int:
    """The tag of cache key ``key`` that a record written under it carries."""
    # surrogatepass: a key is whatever str a store was given; the tag must never raise.
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


def encode_record(response: FwResponse, key: str | None = None) -> bytes:
    """The cache record of ``response`` under cache key ``key`` (without its prompt, which the key fixes).

    Raises :class:`RecordError` if a field cannot be stored as its type demands (say, a
    float token count), so that every record written reads back. A record written without
    a key (tag 0) is read back only without one: every lookup of the client passes its key.
    """
    logprobs = response.logprobs
    shared = logprobs is not None and prefix_of(logprobs) is not None
    if logprobs is None:
        packed = b""
    elif shared:  # the prompt's positions are the prompt record's
        packed = logprobs.get_generation_logprobs().packed()
    else:
        packed = logprobs.packed()
    usage = response.usage
    completed = response.completed_reasoning
    if completed is not None and type(completed) is not bool:
        raise RecordError(f"cannot store this sample in the cache: completed_reasoning must be a bool or None, "
                          f"got {completed!r:.60}")  # fmt: skip
    if type(response.echo) is not bool:
        raise RecordError(f"cannot store this sample in the cache: echo must be a bool, got {response.echo!r:.60}")
    flags = (
        (_ECHO if response.echo else 0)
        | (0 if completed is None else _COMPLETED_KNOWN | (_COMPLETED if completed else 0))
        | (0 if response.seed is None else _SEED_KNOWN)
        | (0 if usage.cached_tokens is None else _CACHED_KNOWN)
        | (0 if logprobs is None else _LOGPROBS)
        | (_SHARED if shared else 0)
    )
    texts = [
        _text(name, getattr(response, name))
        for name in ("full", "content", "reasoning", "finish_reason", "model", "response_id")
    ]
    if texts[1] == texts[0] and texts[0]:  # no reasoning split off: the same text twice
        flags |= _CONTENT_IS_FULL
        texts[1] = b""
    try:
        fixed = _FIXED.pack(
            MAGIC,
            FORMAT_VERSION,
            flags,
            0 if key is None else key_tag(key),
            _int("seed", response.seed, optional=True),
            _int("created", response.created),
            _int("index", response.index),
            _int("usage.prompt_tokens", usage.prompt_tokens),
            _int("usage.completion_tokens", usage.completion_tokens),
            _int("usage.total_tokens", usage.total_tokens),
            _int("usage.cached_tokens", usage.cached_tokens, optional=True),
            *map(len, texts),
            len(packed),
        )
    except struct.error as exc:
        raise RecordError(
            f"cannot store this sample in the cache: a count is negative or an integer does not fit in 64 bits ({exc})"
        ) from exc
    body = b"".join((fixed, *texts, packed))
    return body + zlib.crc32(body).to_bytes(_CRC_SIZE, "little")


def decode_record(
    data: bytes | bytearray | memoryview,
    prompt: str,
    key: str | None = None,
    part: PromptPart | None = None,
    *,
    generation_only: bool = False,
) -> FwResponse:
    """The sample a record holds, marked ``cached``, with ``prompt`` as its prompt.

    ``key`` is the cache key the record was read under: a record written under another key
    is refused (None skips that check, for tools that list a directory's entries). The
    logprobs stay packed until first read (:meth:`Logprobs.from_packed`): the CRC has covered
    their bytes, so they are the ones :meth:`Logprobs.packed` wrote and reading them does not
    fail later. A record of a sample that shares its prompt part (flag 64) gets ``part``'s
    positions ahead of its own (:class:`PromptPartMissing` without one; ValueError for a part of
    another prompt); ``part`` is ignored for every other record. ``generation_only`` reads such a
    record without its part instead: the sample's generated positions only, not echoed (for tools
    that list a directory's entries, which cannot tell which prompt record is a sample's). Raises
    :class:`RecordError` for anything that is not a well-formed record this version reads.
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise RecordError(f"a cache record is bytes, not {type(data).__name__}")
        data = bytes(data)
    all_flags = _ALL_FLAGS
    if data[:5] != _START:
        if data[:5] != _START_V2:
            _refuse_other(data)
        all_flags = _ALL_FLAGS_V2
    # A cache hit pays for every step here.
    size = len(data)
    if size < _FIXED.size + _CRC_SIZE:
        raise RecordError(f"cache record is truncated ({size} bytes)")
    # The CRC of a message followed by its own CRC (little-endian) is always _CRC_RESIDUE: one pass, no slicing.
    if zlib.crc32(data) != _CRC_RESIDUE:
        raise RecordError("cache record is corrupt: its CRC32 does not match its contents")
    (_, _, flags, tag, seed, created, index, prompt_tokens, completion_tokens, total_tokens, cached_tokens,
     n_full, n_content, n_reasoning, n_finish, n_model, n_rid, n_lp) = _FIXED.unpack_from(data)  # fmt: skip
    if key is not None and tag != zlib.crc32(key.encode("utf-8", "surrogatepass")):  # key_tag(key), inlined
        raise RecordError("cache record was written under another key (the database around it is damaged)")
    if flags & ~all_flags:
        raise RecordError(f"cache record has unknown flags {flags:#04x}")
    end = _FIXED.size + n_full + n_content + n_reasoning + n_finish + n_model + n_rid
    if end + n_lp + _CRC_SIZE != size:
        raise RecordError(
            f"cache record lengths do not add up: its fields describe {end + n_lp + _CRC_SIZE} bytes, it has {size}"
        )
    if not flags & _LOGPROBS and n_lp:
        raise RecordError("cache record holds logprobs bytes but says it has none")
    if flags & _CONTENT_IS_FULL and n_content:
        raise RecordError("cache record holds content bytes but says its content is its full text")
    p1 = _FIXED.size + n_full
    p2 = p1 + n_content
    p3 = p2 + n_reasoning
    p4 = p3 + n_finish
    p5 = p4 + n_model
    try:
        full, content, reasoning = data[_FIXED.size : p1].decode(), data[p1:p2].decode(), data[p2:p3].decode()
        if flags & _CONTENT_IS_FULL:
            content = full
        finish, model, rid = data[p3:p4].decode(), data[p4:p5].decode(), data[p5:end].decode()
    except UnicodeDecodeError as exc:
        raise RecordError(f"cache record text is not UTF-8: {exc}") from exc
    logprobs = None
    if flags & _SHARED and not (flags & _LOGPROBS and flags & _ECHO):
        raise RecordError("cache record shares a prompt part but has no echoed logprobs")
    if flags & _LOGPROBS:
        # The record's CRC, checked above, covers these bytes: no second checksum pass per hit.
        try:
            logprobs = Logprobs.from_packed(data[end : end + n_lp], verified=True)
        except ValueError as exc:
            raise RecordError(f"cache record logprobs are malformed: {exc}") from exc
        if flags & _SHARED and part is None and generation_only:
            flags &= ~_ECHO  # the generated positions alone: what a sample fetched without echo holds
        elif flags & _SHARED:
            if part is None:
                raise PromptPartMissing(
                    "cache record holds the generated positions only, and its prompt's record is missing"
                )
            if part.prompt != prompt:
                raise ValueError("decode_record: the prompt part given is of another prompt")
            try:
                logprobs = share_prefix(part, logprobs)
            except ValueError as exc:  # the packed generated positions say they are echoed
                raise RecordError(f"cache record logprobs are malformed: {exc}") from exc
    usage = Usage(prompt_tokens, completion_tokens, total_tokens, cached_tokens if flags & _CACHED_KNOWN else None)
    # By position (see _RESPONSE_FIELDS): half the cost of keywords, on every cache hit.
    return FwResponse(
        full, content, reasoning, finish, bool(flags & _COMPLETED) if flags & _COMPLETED_KNOWN else None,
        usage, seed if flags & _SEED_KNOWN else None, model, rid, created, logprobs,
        bool(flags & _ECHO), prompt, index, True,
    )  # fmt: skip


def _refuse_other(data: bytes) -> None:
    """Bytes that do not start as a record this version reads: a RecordError saying what they are.

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
    version = data[4]
    if 0 < version < 2:
        raise RecordError(
            f"cache record format version {version} is older than the ones this version of fw_rollouts reads "
            f"(2 and {FORMAT_VERSION}); the sample is fetched again and stored anew"
        )
    raise RecordError(
        f"cache record format version {version} is not one this version of fw_rollouts reads "
        f"(it reads 2 and {FORMAT_VERSION}); the entry is probably from a newer fw_rollouts"
    )


def encode_prompt_record(part: PromptPart, key: str) -> bytes:
    """The prompt record of ``part`` under prompt key ``key`` (``CacheKeyer.prompt_key()``), without the prompt.

    Raises :class:`RecordError` if the part cannot be stored (an offset beyond 64 bits).
    """
    packed = part.logprobs.packed()
    try:
        fixed = _PROMPT_FIXED.pack(
            PROMPT_MAGIC, PROMPT_FORMAT_VERSION, 0, key_tag(key), _int("generation_offset", part.generation_offset),
            len(packed),
        )  # fmt: skip
    except struct.error as exc:
        raise RecordError(f"cannot store this prompt part in the cache: {exc}") from exc
    body = fixed + packed
    return body + zlib.crc32(body).to_bytes(_CRC_SIZE, "little")


def decode_prompt_record(data: bytes | bytearray | memoryview, prompt: str, key: str) -> PromptPart:
    """The prompt part a prompt record holds, for ``prompt``, read under prompt key ``key``.

    Its logprobs are unpacked and checked here (one record per call, not one per sample).
    Raises :class:`RecordError` for anything that is not a well-formed prompt record of ``key``
    that this version reads, or one whose prompt length is not ``prompt``'s.
    """
    logprobs, offset = _prompt_record(data, key)
    if logprobs.prompt_length != len(prompt):
        raise RecordError(f"prompt record is of a prompt of {logprobs.prompt_length} characters, not {len(prompt)}")
    return PromptPart(prompt, logprobs, offset)


def verify_record(data: bytes | bytearray | memoryview, key: str) -> None:
    """Raise :class:`RecordError` unless ``data`` is a whole, undamaged record (a sample's or a prompt's) that this
    version reads, written under ``key``: for tools that copy records as they are (``merge_caches``)."""
    if bytes(data[:4]) == PROMPT_MAGIC:
        _prompt_record(data, key)
    else:
        decode_record(data, "", key, generation_only=True)


def _prompt_record(data: bytes | bytearray | memoryview, key: str) -> tuple[Logprobs, int]:
    """The echoed prompt positions and generation offset of a prompt record (see :func:`decode_prompt_record`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RecordError(f"a prompt record is bytes, not {type(data).__name__}")
    data = bytes(data)
    if data[:5] != _PROMPT_START:
        if data[:4] == PROMPT_MAGIC and len(data) > 4:
            raise RecordError(
                f"prompt record format version {data[4]} is not one this version of fw_rollouts reads "
                f"(it reads {PROMPT_FORMAT_VERSION})"
            )
        raise RecordError(f"not a fw_rollouts prompt record (it starts {data[:8]!r}, not {PROMPT_MAGIC!r})")
    size = len(data)
    if size < _PROMPT_FIXED.size + _CRC_SIZE:
        raise RecordError(f"prompt record is truncated ({size} bytes)")
    if zlib.crc32(data) != _CRC_RESIDUE:
        raise RecordError("prompt record is corrupt: its CRC32 does not match its contents")
    _, _, flags, tag, offset, n_lp = _PROMPT_FIXED.unpack_from(data)
    if tag != key_tag(key):
        raise RecordError("prompt record was written under another key (the database around it is damaged)")
    if flags:
        raise RecordError(f"prompt record has unknown flags {flags:#04x}")
    if _PROMPT_FIXED.size + n_lp + _CRC_SIZE != size:
        raise RecordError(
            f"prompt record lengths do not add up: its fields describe {_PROMPT_FIXED.size + n_lp + _CRC_SIZE} "
            f"bytes, it has {size}"
        )
    try:
        logprobs = Logprobs.from_packed(data[_PROMPT_FIXED.size : _PROMPT_FIXED.size + n_lp], verified=True)
        n = len(logprobs)  # unpacks: whatever is wrong with the columns shows here, not on a later read
    except ValueError as exc:
        raise RecordError(f"prompt record logprobs are malformed: {exc}") from exc
    if not logprobs.echo or logprobs.num_prompt_tokens != n or not n or offset < 0:
        raise RecordError("prompt record does not hold echoed prompt positions")
    return logprobs, offset
