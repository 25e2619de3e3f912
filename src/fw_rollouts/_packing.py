"""The data-only byte form of :class:`~._columns.Columns`: FWLP, version 2 (version 1 still read).

Plain data read with ``struct``, ``array.frombytes``, ``zlib`` inflation and UTF-8 decoding, never
pickle or eval, so bytes from a cache directory shared with others cannot run code. All integers and
array items are little-endian. Both versions begin alike::

    prefix  "FWLP", u16 version, u32 CRC-32 of every byte after the prefix

**Version 2** (what :func:`pack` writes) is built to be small on disk::

    head    u8 flags (bit 0: echo, bit 1: the plain part is deflated, bit 2: alternatives' ids follow);
            LEB128 varints: prompt tokens and prompt length (zigzag), the stored size of the plain part,
            its size inflated, the size of the raw part
    plain   raw DEFLATE (RFC 1951) of: the fields, then every section but the low halves of float32
            items
    raw     the low two bytes of every float32 item, section after section (mantissa bits, which
            do not compress: deflating them would cost time for nothing)

    fields  8 typecodes: token key, logprob, sampling logprob, text offset, token id, alternative
            logprob, alternatives per position, rank (NUL where the column is absent); u8 sampling
            mode (0 absent, 1 every position, 2 only where it differs from the logprob); u8 id mode
            (0 absent, 1 every position, 2 one per distinct token); u32 each: separator code point,
            tokens, strings, UTF-8 bytes of the strings, alternatives, alternatives per position when
            uniform, explicit tokens, None logprobs, None sampling logprobs, differing sampling
            logprobs, positions without alternatives, ids; i64 text offset of the first token
    sections  the strings joined by the separator; ranks; explicit token keys; explicit logprobs;
            alternative keys; alternative logprobs; alternatives per position; positions without
            alternatives; positions of None logprobs; sampling logprobs (mode 1) or the positions
            where they differ and their values (mode 2); positions of None sampling logprobs; text
            offsets; token ids (mode 1) or the id of each distinct token key in ascending order
            (mode 2); the alternatives' ids (bit 2 only). Every section of items wider than a byte is
            stored byte plane by byte plane (all first bytes, then all second bytes...), which is what
            lets DEFLATE find the regularity in the high bytes of keys and floats.

**Alternatives' ids** (Fireworks' content format sends one per alternative) are an extension that
only a form holding them uses: flag bit 2, then after the fields a typecode, a u8 mode and a varint
count, and a last section. Mode 1: one id per alternative, in order. Mode 2, when the ids of both
columns are one function of the token string (they are for one tokenizer): the id of each distinct
key of the token and alternative columns together, in ascending key order; the token ids are then
in id mode 3, read from that table, with no section of their own. A form without alternatives' ids
is byte for byte what it was before the extension (and reads in a release before it); a release before
it refuses a form with them (unknown flag), which a cache then treats as a miss.

The sampled token is nearly always among its position's alternatives, with the same logprob: its
*rank* (u8) there says which, and only the other positions (rank 255, or every position when there
is no rank column) store their token key and logprob explicitly. Ranks apply only where the token
key and the logprob's bit pattern both match, so every float, NaN payloads and signed zeros
included, reads back bit for bit. Token ids are stored once per distinct token when the ids are a
function of the token string (they are for one tokenizer), and per position otherwise.

**Version 1**: the same fixed-size header fields as version 2's fields (7 typecodes, separator, 9
counts, prompt tokens, prompt length, first offset), then every column whole, uncompressed, in
vocabulary order; :func:`pack` writes it with ``version=1`` (for benchmarks and tests of old caches).

Token and alternative keys are integers whose distinct values, in ascending order, name the
strings in the order they are stored. The separator is a code point no string contains (NUL
unless some token holds one).

:func:`read_header` checks what is cheap (magic, version, lengths, checksum, and in version 1
the typecodes); :func:`unpack` checks the rest. Both raise ValueError, with the reason, for
anything malformed.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Mapping, Sequence
from itertools import accumulate, pairwise
from operator import itemgetter
from typing import Any, Final, NamedTuple

from ._columns import Columns, _index_code, _indices, _strings

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "READ_VERSIONS",
    "Envelope",
    "Header",
    "pack",
    "peek_attributes",
    "read_header",
    "unpack",
]

MAGIC: Final = b"FWLP"
"""The first bytes of every packed form."""
FORMAT_VERSION: Final = 2
"""The packed format :func:`pack` writes by default."""
READ_VERSIONS: Final = (1, 2)
"""The packed formats :func:`unpack` reads."""

_PREFIX: Final = struct.Struct("<4sHI")  # magic, version, CRC-32 of the rest
_FIELDS: Final = struct.Struct("<B7s9I3q")  # version 1
_HEADER_SIZE: Final = _PREFIX.size + _FIELDS.size
_ECHO: Final = 1
_DEFLATED: Final = 2
_TOP_IDS: Final = 4
_ABSENT: Final = "\0"
_LE: Final = sys.byteorder == "little"
_U32: Final = 2**32 - 1
_I64: Final = (-(2**63), 2**63 - 1)
_MAX_CODE_POINT: Final = 0x10FFFF

# Item sizes are the format's, checked against this platform's arrays once.
_ITEM: Final = {"B": 1, "H": 2, "I": 4, "i": 4, "q": 8, "f": 4, "d": 8, "Q": 8}
if any(array(code).itemsize != size for code, size in _ITEM.items()):  # pragma: no cover - no such CPython
    raise ImportError("fw_rollouts needs 4-byte 'I'/'i'/'f' and 8-byte 'q'/'Q'/'d' arrays")

_UNSIGNED: Final = frozenset("BHI")
_FLOATS: Final = frozenset("fd")
_INTS: Final = frozenset("iq")
_BITS: Final = {"f": "I", "d": "Q"}  # the unsigned integer of the same width: a float's bit pattern
# The typecodes allowed for each column the header names, and whether the column may be absent.
_CODES: Final = (
    ("token key", _UNSIGNED, False),
    ("logprob", _FLOATS, False),
    ("sampling logprob", _FLOATS, True),
    ("text offset", _INTS, True),
    ("token id", _INTS, True),
    ("alternative logprob", _FLOATS, True),
    ("alternatives per position", _UNSIGNED, True),
)


def _malformed(why: str) -> ValueError:
    return ValueError(f"not packed logprobs (FWLP): {why}")


class Header(NamedTuple):
    """The fixed header of a version 1 form."""

    crc: int
    echo: bool
    key: str
    lp: str
    samp: str
    off: str
    ids: str
    top_lp: str
    top_sizes: str
    separator: int
    n: int
    n_strings: int
    text_bytes: int
    n_top: int
    n_lp_none: int
    n_samp_none: int
    n_top_none: int
    top_k: int
    num_prompt_tokens: int
    prompt_length: int
    off_base: int

    def sections(self) -> tuple[tuple[str, int], ...]:
        """``(typecode, item count)`` of each body section in order; ``("", 0)`` for an absent one."""
        n = self.n

        def column(code: str, count: int) -> tuple[str, int]:
            return ("", 0) if code == _ABSENT else (code, count)

        return (
            ("B", self.text_bytes),
            (self.key, n),
            column(self.top_lp and self.key, self.n_top),
            (self.lp, n),
            ("I", self.n_lp_none),
            column(self.samp, n),
            ("I", self.n_samp_none),
            column(self.off, n),
            column(self.ids, n),
            column(self.top_lp, self.n_top),
            column(self.top_sizes, n),
            ("I", self.n_top_none),
        )


class Envelope(NamedTuple):
    """The head of a version 2 form: its attributes and where its parts are."""

    crc: int
    echo: bool
    num_prompt_tokens: int
    prompt_length: int
    deflated: bool
    """Whether the plain part is stored deflated (else as is)."""
    stored: int
    """Bytes of the plain part as stored."""
    plain: int
    """Bytes of the plain part inflated."""
    raw: int
    """Bytes of the raw part."""
    start: int
    """Offset of the plain part."""
    top_ids: bool = False
    """Whether the alternatives' ids follow (flag bit 2)."""


def read_header(data: bytes, *, checksum: bool = True) -> Header | Envelope:
    """The header of ``data``, after checking the magic, version, lengths and checksum.

    This reads every byte once (the CRC-32; ``checksum=False`` skips it) but decodes no column;
    :func:`unpack` does that and checks the rest. Raises ValueError for anything but a
    well-formed FWLP form of a version in :data:`READ_VERSIONS`.
    """
    if not isinstance(data, bytes | bytearray):
        raise _malformed(f"expected bytes, got {type(data).__name__}")
    if data[:1] == b"\x80":
        raise _malformed("this is a pickle, the form older versions wrote, which is no longer read")
    if len(data) < _PREFIX.size:
        raise _malformed(f"{len(data)} bytes is shorter than the {_PREFIX.size}-byte prefix")
    magic, version, crc = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise _malformed(f"the data starts with {bytes(data[:4])!r}, not {MAGIC!r}")
    if version == 2:
        return _read_envelope(data, crc, checksum=checksum)
    if version == 1:
        return _read_header_v1(data, crc, checksum=checksum)
    raise _malformed(f"format version {version}; this version of fw_rollouts reads versions 1 and 2 only")


_START_V1: Final = _PREFIX.pack(MAGIC, 1, 0)[:6]
_START_V2: Final = _PREFIX.pack(MAGIC, 2, 0)[:6]


def peek_attributes(data: bytes) -> tuple[bool, int, int]:
    """``(echo, num_prompt_tokens, prompt_length)`` of ``data`` after checking only its magic and version.

    For bytes whose integrity the caller has already checked (a cache record's CRC covers them): a cache
    hit then costs a few reads; :func:`unpack` checks the whole header before any column is read.
    """
    start = data[:6]
    if start == _START_V2 and len(data) > _PREFIX.size:
        flags = data[_PREFIX.size]
        prompt_tokens, at = _varint(data, _PREFIX.size + 1)
        prompt_length, _ = _varint(data, at)
        return bool(flags & _ECHO), _unzigzag(prompt_tokens), _unzigzag(prompt_length)
    if start == _START_V1 and len(data) >= _HEADER_SIZE:
        fields = _FIELDS.unpack_from(data, _PREFIX.size)
        return bool(fields[0] & _ECHO), fields[-3], fields[-2]
    raise _malformed(f"the data starts with {bytes(data[:6])!r}, not FWLP version 1 or 2")


def pack(columns: Columns, *, num_prompt_tokens: int, prompt_length: int, echo: bool, version: int = 2) -> bytes:
    """``columns`` and the three attributes of a Logprobs in packed format ``version`` (see the module docstring)."""
    if version == 2:
        return _pack_v2(columns, num_prompt_tokens, prompt_length, echo)
    if version == 1:
        return _pack_v1(columns, num_prompt_tokens=num_prompt_tokens, prompt_length=prompt_length, echo=echo)
    raise ValueError(f"version must be one of {READ_VERSIONS}, not {version!r}")


def unpack(data: bytes, *, checksum: bool = True) -> Columns:
    """The columns of a packed form; ValueError, with the reason, for anything malformed.

    ``checksum=False`` skips the CRC-32, for bytes whose :func:`read_header` already checked it.
    """
    header = read_header(data, checksum=checksum)
    if isinstance(header, Envelope):
        return _unpack_v2(data, header)
    return _unpack_v1(data, header)


# -- shared by both versions ---------------------------------------------------------------------------------


def _le_bytes(column: array[Any]) -> bytes:
    if not _LE:  # pragma: no cover - big-endian hosts
        column = array(column.typecode, column)
        column.byteswap()
    return column.tobytes()


def _lookup(table: Sequence[int] | Mapping[int, int], keys: Sequence[int]) -> Sequence[int]:
    """``[table[k] for k in keys]``, in C (itemgetter returns a bare item for one key, and needs one)."""
    if len(keys) > 1:
        return itemgetter(*keys)(table)  # type: ignore[no-any-return]
    return [table[k] for k in keys]


def _joined(strings: list[str]) -> tuple[int, str]:
    """A code point no string contains, and the strings joined by it."""
    joined = "\0".join(strings)
    if joined.count("\0") == max(len(strings) - 1, 0):
        return 0, joined
    used = set("".join(strings))
    free = next((cp for cp in range(_MAX_CODE_POINT + 1) if chr(cp) not in used), None)
    if free is None:  # pragma: no cover - the strings would hold every code point
        raise ValueError("cannot pack logprobs whose token strings use every Unicode code point")
    return free, chr(free).join(strings)


def _positions(none: tuple[int, ...]) -> bytes:
    return _le_bytes(array("I", none)) if none else b""


def _read_strings(raw: bytes | bytearray | memoryview, n_strings: int, separator: int) -> list[str]:
    try:
        text = str(raw, "utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise _malformed(f"the token strings are not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not n_strings:
        if text:
            raise _malformed("string bytes without strings")
        return []
    strings = text.split(chr(separator))
    if len(strings) != n_strings:
        raise _malformed(f"{len(strings)} strings where the header counts {n_strings}")
    return strings


def _vocabulary_columns(
    strings: list[str], tok_keys: array[int], top_keys: array[int] | None
) -> tuple[array[int], array[int] | None]:
    """The keys of both token columns as this process's vocabulary indices."""
    n = len(tok_keys)
    keys = tok_keys.tolist() if top_keys is None else (tok_keys + top_keys).tolist()
    distinct = set(keys)
    if len(distinct) != len(strings):
        raise _malformed(f"the token columns name {len(distinct)} distinct strings, the table holds {len(strings)}")
    indices = _indices(strings)
    table: Sequence[int] | Mapping[int, int] = indices
    if distinct and max(distinct) != len(distinct) - 1:  # the keys are not the ranks 0..k-1
        table = dict(zip(sorted(distinct), indices, strict=True))
    column = array(_index_code(indices), _lookup(table, keys))
    return (column, None) if top_keys is None else (column[:n], column[n:])


def _zero(column: array[float], positions: tuple[int, ...]) -> array[float]:
    for i in positions:
        column[i] = 0.0
    return column


def _check_positions(positions: tuple[int, ...], n: int, what: str) -> tuple[int, ...]:
    if positions and (positions[-1] >= n or any(a >= b for a, b in pairwise(positions))):
        raise _malformed(f"the positions of {what} are not ascending positions below {n}")
    return positions


def _check_alternatives(
    n: int, n_top: int, top_k: int, top_sizes: array[int] | None, top_none: tuple[int, ...]
) -> None:
    if top_sizes is None:
        if n_top != (n - len(top_none)) * top_k:
            raise _malformed(f"{n_top} alternatives are not {top_k} at each of {n - len(top_none)} positions")
    elif sum(top_sizes) != n_top or any(top_sizes[i] for i in top_none):
        raise _malformed(f"the alternatives per position do not add up to the {n_top} alternatives")


# -- version 1 -----------------------------------------------------------------------------------------------


def _read_header_v1(data: bytes, crc: int, *, checksum: bool) -> Header:
    """The header of the version 1 form ``data`` (magic and version already checked)."""
    if len(data) < _HEADER_SIZE:
        raise _malformed(f"{len(data)} bytes is shorter than the {_HEADER_SIZE}-byte header")
    flags, raw_codes, *numbers = _FIELDS.unpack_from(data, _PREFIX.size)
    if flags & ~_ECHO:
        raise _malformed(f"unknown flags {flags:#04x}")
    codes = raw_codes.decode("latin-1")
    for code, (name, allowed, optional) in zip(codes, _CODES, strict=True):
        if code not in allowed and not (optional and code == _ABSENT):
            raise _malformed(f"typecode {code!r} is not allowed for the {name} column")
    header = Header(crc, bool(flags & _ECHO), *codes, *numbers)
    if header.separator > _MAX_CODE_POINT:
        raise _malformed(f"separator {header.separator:#x} is not a code point")
    if header.top_lp == _ABSENT and (header.n_top or header.n_top_none or header.top_k or header.top_sizes != _ABSENT):
        raise _malformed("alternatives are described but their column is absent")
    if header.top_sizes != _ABSENT and header.top_k:
        raise _malformed("both a uniform and a varying number of alternatives per position")
    if header.samp == _ABSENT and header.n_samp_none:
        raise _malformed("None sampling logprobs are listed but their column is absent")
    expected = _HEADER_SIZE + sum(count * _ITEM[code] for code, count in header.sections() if code)
    if expected != len(data):
        raise _malformed(f"{len(data)} bytes where the header describes {expected}")
    if checksum and zlib.crc32(memoryview(data)[_PREFIX.size :]) != crc:
        raise _malformed("the checksum does not match (the data is corrupted)")
    return header


def _fits_u16(keys: array[int]) -> bool:
    """Whether the vocabulary indices fit two bytes: by the typecode, or (once the process vocabulary outgrew two
    bytes) by the values, so that a run packs to the same bytes whatever else this process interned."""
    return keys.typecode in ("B", "H") or not keys or max(keys) < 65536


def _token_keys_v1(tok: array[int], top: array[int] | None) -> tuple[str, array[int], array[int] | None, list[str]]:
    """Key typecode, token keys, alternative keys and the strings the keys name, in key order."""
    distinct = set(tok)
    if top is not None:
        distinct.update(top)
    order = sorted(distinct)
    strings = _strings(order)
    if tok.typecode == "H" and (top is None or top.typecode == "H"):
        # The vocabulary indices themselves, no per-token work.
        return "H", tok, top, strings
    if len(order) > 65536:
        return "I", array("I", tok), None if top is None else array("I", top), strings
    rank = dict(zip(order, range(len(order)), strict=True))
    code = "B" if len(order) <= 256 else "H"
    keys = array(code, _lookup(rank, tok.tolist() if top is None else tok.tolist() + top.tolist()))
    return code, keys[: len(tok)], None if top is None else keys[len(tok) :], strings


def _pack_v1(columns: Columns, *, num_prompt_tokens: int, prompt_length: int, echo: bool) -> bytes:
    c = columns
    if c.top_ids is not None:
        raise ValueError("packed format 1 cannot hold the alternatives' token ids (format 2 can)")
    top = c.top_tok is not None and c.top_lp is not None
    key_code, tok_keys, top_keys, strings = _token_keys_v1(c.tok, c.top_tok if top else None)
    separator, joined = _joined(strings)
    text = joined.encode("utf-8", "surrogatepass")
    codes = (
        key_code,
        c.lp.typecode,
        _ABSENT if c.samp is None else c.samp.typecode,
        _ABSENT if c.off is None else c.off.typecode,
        _ABSENT if c.ids is None else c.ids.typecode,
        c.top_lp.typecode if top and c.top_lp is not None else _ABSENT,
        c.top_sizes.typecode if top and c.top_sizes is not None else _ABSENT,
    )
    top_lp = c.top_lp if top else None
    counts = (
        len(c.tok),
        len(strings),
        len(text),
        0 if top_lp is None else len(top_lp),
        len(c.lp_none),
        len(c.samp_none),
        len(c.top_none) if top else 0,
    )
    if max(counts) > _U32:
        raise ValueError("logprobs too large for the packed format (a column over 2**32 - 1 entries)")
    try:
        fields = _FIELDS.pack(
            _ECHO if echo else 0,
            "".join(codes).encode("latin-1"),
            separator,
            *counts,
            c.top_k if top else 0,
            num_prompt_tokens,
            prompt_length,
            c.off_base,
        )
    except struct.error as exc:
        raise ValueError(f"the logprobs' attributes do not fit the packed format: {exc}") from None
    sections = [
        fields,
        text,
        _le_bytes(tok_keys),
        b"" if top_keys is None else _le_bytes(top_keys),
        _le_bytes(c.lp),
        _positions(c.lp_none),
        b"" if c.samp is None else _le_bytes(c.samp),
        _positions(c.samp_none),
        b"" if c.off is None else _le_bytes(c.off),
        b"" if c.ids is None else _le_bytes(c.ids),
        b"" if top_lp is None else _le_bytes(top_lp),
        _le_bytes(c.top_sizes) if top and c.top_sizes is not None else b"",
        _positions(c.top_none) if top else b"",
    ]
    crc = 0
    for section in sections:
        crc = zlib.crc32(section, crc)
    return b"".join([_PREFIX.pack(MAGIC, 1, crc), *sections])


class _Reader:
    """The body sections of a version 1 form, in order."""

    __slots__ = ("_data", "_pos", "_sections")

    def __init__(self, data: bytes, header: Header) -> None:
        self._data = memoryview(data)
        self._pos = _HEADER_SIZE
        self._sections = iter(header.sections())

    def raw(self) -> memoryview:
        code, count = next(self._sections)
        start = self._pos
        self._pos += count * _ITEM[code] if code else 0
        return self._data[start : self._pos]

    def column(self) -> array[Any] | None:
        code, count = next(self._sections)
        if not code:
            return None
        start = self._pos
        self._pos += count * _ITEM[code]
        column: array[Any] = array(code)
        column.frombytes(self._data[start : self._pos])
        if not _LE:  # pragma: no cover - big-endian hosts
            column.byteswap()
        return column

    def positions(self, n: int, what: str) -> tuple[int, ...]:
        column = self.column()
        return _check_positions(tuple(column), n, what) if column else ()


def _unpack_v1(data: bytes, header: Header) -> Columns:
    read = _Reader(data, header)
    n = header.n
    strings = _read_strings(read.raw(), header.n_strings, header.separator)
    tok_keys, top_keys = read.column(), read.column()
    assert tok_keys is not None  # never absent: read_header checked the typecodes
    tok, top_tok = _vocabulary_columns(strings, tok_keys, top_keys)
    lp = read.column()
    assert lp is not None
    lp_none = read.positions(n, "None logprobs")
    samp = read.column()
    samp_none = read.positions(n, "None sampling logprobs")
    off, ids, top_lp, top_sizes = read.column(), read.column(), read.column(), read.column()
    top_none = read.positions(n, "missing alternatives")
    if top_lp is not None:
        _check_alternatives(n, header.n_top, header.top_k, top_sizes, top_none)
    return Columns(
        tok,
        _zero(lp, lp_none),
        lp_none,
        None if samp is None else _zero(samp, samp_none),
        samp_none,
        off,
        header.off_base,
        ids,
        top_tok,
        top_lp,
        top_sizes,
        header.top_k,
        top_none,
    )


# -- version 2 -----------------------------------------------------------------------------------------------

# 7 typecodes; samp mode, ids mode, tok mode; then LEB128 varints: separator, tokens, strings, string bytes,
# alternatives, uniform top_k, None logprobs, None sampling logprobs, positions without alternatives, ids, and the
# first offset (zigzag). Varints: a short form's fields are a few bytes, not 58.
_CODES_V2: Final = struct.Struct("<7sBBB")
_N_COUNTS: Final = 10
_LEVEL: Final = 1  # DEFLATE level: 6 saves 1-2% of the bytes for twice the time
_SAMP_ALL, _SAMP_XOR = 1, 2
_IDS_ALL, _IDS_PER_TOKEN, _IDS_FROM_TOP = 1, 2, 3
_TOP_IDS_FIELDS: Final = struct.Struct("<1sB")  # typecode, mode (then a varint count)
_TOK_ALL, _TOK_XOR = 0, 1


def _varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    """The LEB128 varint at ``at`` (at most 10 bytes) and the offset after it."""
    value = shift = 0
    for i in range(at, min(at + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise _malformed("a varint runs past the end of its part")


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag(value: int) -> int:
    if not _I64[0] <= value <= _I64[1]:
        raise ValueError(f"the logprobs' attributes do not fit the packed format: {value} is not a 64-bit integer")
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value // 2 if not value & 1 else -(value + 1) // 2


def _read_envelope(data: bytes, crc: int, *, checksum: bool) -> Envelope:
    """The head of the version 2 form ``data`` (magic and version already checked)."""
    if len(data) <= _PREFIX.size:
        raise _malformed(f"{len(data)} bytes is shorter than the head")
    flags = data[_PREFIX.size]
    if flags & ~(_ECHO | _DEFLATED | _TOP_IDS):
        raise _malformed(f"unknown flags {flags:#04x}")
    at = _PREFIX.size + 1
    numbers = []
    for _ in range(5):
        value, at = _varint(data, at)
        numbers.append(value)
    prompt_tokens, prompt_length, stored, plain, raw = numbers
    if not flags & _DEFLATED and stored != plain:
        raise _malformed(f"a plain part of {plain} bytes stored as is in {stored}")
    if at + stored + raw != len(data):
        raise _malformed(f"{len(data)} bytes where the header describes {at + stored + raw}")
    if checksum and zlib.crc32(memoryview(data)[_PREFIX.size :]) != crc:
        raise _malformed("the checksum does not match (the data is corrupted)")
    return Envelope(
        crc,
        bool(flags & _ECHO),
        _unzigzag(prompt_tokens),
        _unzigzag(prompt_length),
        bool(flags & _DEFLATED),
        stored,
        plain,
        raw,
        at,
        bool(flags & _TOP_IDS),
    )


def _shared_ids(
    tok: array[int], ids: array[int] | None, top_tok: array[int], top_ids: array[int]
) -> list[int] | None:
    """The id of each distinct key of both token columns, in ascending key order, when the ids of both are one
    function of the key (one tokenizer); else None."""
    keys = tok.tolist() + top_tok.tolist() if ids is not None else top_tok.tolist()
    values = ids.tolist() + top_ids.tolist() if ids is not None else top_ids.tolist()
    if ids is None and set(tok) - set(top_tok):
        return None  # a token key without an id: the table would not cover it
    id_of = dict(zip(keys, values, strict=True))
    # Never larger than the per-position columns it replaces: a distinct key is at least one position.
    if list(map(id_of.__getitem__, keys)) != values:
        return None
    return list(_lookup(id_of, sorted(id_of))) if id_of else []


def _xor(a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview) -> bytes:
    """``a`` XOR ``b``, byte by byte (equal lengths): one big-integer operation in C, no per-item work."""
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _firsts(n: int, top_k: int, top_sizes: array[int] | None, top_none: tuple[int, ...]) -> Sequence[int] | None:
    """Where each position's first alternative is (``len(alternatives)`` for a position without any),
    None when that is every ``top_k``-th: then a strided slice gathers them."""
    if top_sizes is None and not top_none:
        return None
    if top_sizes is not None:
        sizes: Sequence[int] = top_sizes
        starts = list(accumulate(sizes, initial=0))
        end = starts.pop()
    else:
        sizes = [top_k] * n
        for i in top_none:
            sizes[i] = 0
        starts = list(accumulate(sizes, initial=0))
        end = starts.pop()
    if 0 in sizes:  # rare: None or empty alternatives; those positions point past the end, at a zero
        for i, size in enumerate(sizes):
            if not size:
                starts[i] = end
    return starts


def _gather(
    items: bytes | bytearray | memoryview, code: str, n: int, top_k: int, firsts: Sequence[int] | None
) -> bytes:
    """The little-endian bytes of the first alternative's item at each of ``n`` positions (zero where none)."""
    width = _ITEM[code]
    if firsts is None:
        if not top_k:
            return bytes(n * width)
        return _le_bytes(_column(code, items)[0 : n * top_k : top_k])
    column = _column(code, items)
    column.append(0)  # what a position without alternatives is XORed with
    return _le_bytes(array(code, _lookup(column, firsts) if n else ()))


def _planes(data: bytes | bytearray | memoryview, width: int) -> bytes:
    """``data``'s items of ``width`` bytes, byte plane by byte plane."""
    if type(data) is not bytes:
        data = bytes(data)
    if width == 1:
        return data
    return b"".join([data[i::width] for i in range(width)])  # bytes slicing: far faster than a strided memoryview


def _items(planes: bytes | memoryview, width: int) -> bytes | bytearray | memoryview:
    """The inverse of :func:`_planes`."""
    if width == 1:
        return planes
    out = bytearray(len(planes))
    m = len(planes) // width
    for i in range(width):
        out[i::width] = planes[i * m : (i + 1) * m]
    return out


def _bits_code(code: str) -> str:
    return _BITS.get(code, code)


def _pack_v2(c: Columns, num_prompt_tokens: int, prompt_length: int, echo: bool) -> bytes:
    n = len(c.tok)
    top = c.top_tok is not None and c.top_lp is not None
    top_tok, top_lp = (c.top_tok, c.top_lp) if top else (None, None)
    distinct = set(c.tok)
    if top_tok is not None:
        distinct.update(top_tok)
    strings = _strings(sorted(distinct))
    # The vocabulary indices themselves are the keys: no per-token work, and their byte planes deflate about as
    # well as ranks would (a high byte takes few values).
    key_code = "H" if _fits_u16(c.tok) and (top_tok is None or _fits_u16(top_tok)) else "I"
    tok_keys = c.tok if c.tok.typecode == key_code else array(key_code, c.tok)
    top_keys = (
        array(key_code) if top_tok is None else top_tok if top_tok.typecode == key_code else array(key_code, top_tok)
    )
    separator, joined = _joined(strings)
    text = joined.encode("utf-8", "surrogatepass")
    lp_code = c.lp.typecode
    lp_bytes = _le_bytes(c.lp)
    top_k = c.top_k if top else 0
    top_sizes = c.top_sizes if top else None
    top_none = c.top_none if top else ()

    # The sampled token is its position's first alternative, with the same logprob, at most positions: XORed
    # with that alternative's key and logprob bits it is zeros, which DEFLATE all but drops. Bit for bit, in C.
    tok_mode = _TOK_ALL
    tok_data, lp_data = _le_bytes(tok_keys), lp_bytes
    if top_lp is not None and len(top_lp) and top_lp.typecode == lp_code:
        tok_mode = _TOK_XOR
        firsts = _firsts(n, top_k, top_sizes, top_none)
        tok_data = _xor(tok_data, _gather(_le_bytes(top_keys), key_code, n, top_k, firsts))
        lp_data = _xor(lp_data, _gather(_le_bytes(top_lp), _BITS[lp_code], n, top_k, firsts))

    samp_mode, samp_code, samp_data = 0, _ABSENT, b""
    if c.samp is not None:
        samp_mode, samp_code, samp_data = _SAMP_ALL, c.samp.typecode, _le_bytes(c.samp)
        if c.samp.typecode == lp_code:  # mostly equal to the logprob: zeros once XORed with it
            samp_mode, samp_data = _SAMP_XOR, _xor(samp_data, lp_bytes)

    ids_mode, ids_code, ids_values, n_ids = 0, _ABSENT, b"", 0
    if c.ids is not None:
        ids_mode, ids_code, ids_values, n_ids = _IDS_ALL, c.ids.typecode, _le_bytes(c.ids), n
        tok_list = c.tok.tolist()
        ids = c.ids.tolist()
        id_of = dict(zip(tok_list, ids, strict=True))
        if len(id_of) < n and list(map(id_of.__getitem__, tok_list)) == ids:
            ids_mode, n_ids = _IDS_PER_TOKEN, len(id_of)
            ids_values = _le_bytes(array(ids_code, _lookup(id_of, sorted(id_of))))
    top_ids_head, top_ids_values = b"", b""
    top_ids_code = _ABSENT
    if top_tok is not None and c.top_ids is not None:
        top_ids_code, top_ids_mode = c.top_ids.typecode, _IDS_ALL
        top_ids_values, n_top_ids = _le_bytes(c.top_ids), len(c.top_ids)
        table = _shared_ids(c.tok, c.ids, top_tok, c.top_ids)
        if table is not None:
            top_ids_code = "q" if "q" in (c.top_ids.typecode, ids_code) else "i"
            top_ids_mode, n_top_ids = _IDS_PER_TOKEN, len(table)
            top_ids_values = _le_bytes(array(top_ids_code, table))
            if c.ids is not None:
                ids_mode, n_ids, ids_values = _IDS_FROM_TOP, 0, b""
        top_ids_head = _TOP_IDS_FIELDS.pack(top_ids_code.encode("latin-1"), top_ids_mode) + _varint_bytes(n_top_ids)

    top_code = _ABSENT if top_lp is None else top_lp.typecode
    sizes_code = top_sizes.typecode if top_sizes is not None else _ABSENT
    off_code = _ABSENT if c.off is None else c.off.typecode
    codes = (key_code, lp_code, samp_code, off_code, ids_code, top_code, sizes_code)
    counts = (
        separator,
        n,
        len(strings),
        len(text),
        len(top_keys),
        top_k,
        len(c.lp_none),
        len(c.samp_none),
        len(top_none),
        n_ids,
    )
    if max(counts) > _U32:
        raise ValueError("logprobs too large for the packed format (a column over 2**32 - 1 entries)")
    fields = (
        _CODES_V2.pack("".join(codes).encode("latin-1"), samp_mode, ids_mode, tok_mode)
        + b"".join(map(_varint_bytes, (*counts, _zigzag(c.off_base))))
        + top_ids_head
    )
    # (bytes, typecode, whether the low half of each float32 goes to the raw part): see _Fields.sections.
    sections = (
        (text, "B", False),
        (tok_data, key_code, False),
        (lp_data, lp_code, tok_mode == _TOK_ALL),
        (_le_bytes(top_keys), key_code, False),
        (b"" if top_lp is None else _le_bytes(top_lp), top_code, True),
        (_le_bytes(top_sizes) if top_sizes is not None else b"", sizes_code, False),
        (_positions(top_none), "I", False),
        (_positions(c.lp_none), "I", False),
        (samp_data, samp_code, samp_mode == _SAMP_ALL),
        (_positions(c.samp_none), "I", False),
        (b"" if c.off is None else _le_bytes(c.off), off_code, False),
        (ids_values, ids_code, False),
        (top_ids_values, top_ids_code, False),
    )
    plain = [fields]
    raw = []
    for data, code, split in sections:
        if not data:
            continue
        planes = _planes(data, _ITEM[code])
        if split and code == "f":  # the low half of a float32 is mantissa noise: kept out of DEFLATE
            half = len(data) // 2
            raw.append(planes[:half])
            planes = planes[half:]
        plain.append(planes)
    body = b"".join(plain)
    # A window no larger than the input: a small form costs less to set up (any window inflates with -15).
    deflater = zlib.compressobj(_LEVEL, zlib.DEFLATED, -max(9, min(15, len(body).bit_length())), 8)
    stored = deflater.compress(body) + deflater.flush()
    flags = (_ECHO if echo else 0) | (_TOP_IDS if top_ids_head else 0)
    if len(stored) < len(body):
        flags |= _DEFLATED
    else:
        stored = body
    tail = b"".join(raw)
    head = bytes([flags]) + b"".join(
        map(_varint_bytes, (_zigzag(num_prompt_tokens), _zigzag(prompt_length), len(stored), len(body), len(tail)))
    )
    crc = zlib.crc32(tail, zlib.crc32(stored, zlib.crc32(head)))
    return b"".join((_PREFIX.pack(MAGIC, 2, crc), head, stored, tail))


def _inflate(stored: memoryview, size: int) -> bytes:
    """``stored`` inflated, refusing anything but exactly ``size`` bytes (a damaged stream cannot balloon)."""
    inflater = zlib.decompressobj(-15)
    try:
        plain = inflater.decompress(stored, size)
    except zlib.error as exc:
        raise _malformed(f"the plain part does not inflate ({exc})") from None
    if len(plain) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise _malformed(f"the plain part does not inflate to the {size} bytes the header describes")
    return plain


class _Fields(NamedTuple):
    key: str
    lp: str
    samp: str
    off: str
    ids: str
    top_lp: str
    top_sizes: str
    samp_mode: int
    ids_mode: int
    tok_mode: int
    separator: int
    n: int
    n_strings: int
    text_bytes: int
    n_top: int
    top_k: int
    n_lp_none: int
    n_samp_none: int
    n_top_none: int
    n_ids: int
    off_base: int
    start: int
    """Where the first section starts, after the fields."""
    top_ids: str = _ABSENT
    """Typecode of the alternatives' ids (NUL: absent)."""
    top_ids_mode: int = 0
    n_top_ids: int = 0

    def sections(self) -> tuple[tuple[str, int, bool], ...]:
        """``(typecode, item count, split)`` of each section in order (``("", 0, False)`` for an absent one);
        ``split``: the low half of each float32 item is in the raw part."""
        n = self.n

        def column(code: str, count: int, split: bool = False) -> tuple[str, int, bool]:
            return (code, count, split) if code != _ABSENT else ("", 0, False)

        return (
            ("B", self.text_bytes, False),
            (self.key, n, False),
            (self.lp, n, self.tok_mode == _TOK_ALL),
            column(self.top_lp and self.key, self.n_top),
            column(self.top_lp, self.n_top, True),
            column(self.top_sizes, n),
            ("I", self.n_top_none, False),
            ("I", self.n_lp_none, False),
            column(self.samp, n, self.samp_mode == _SAMP_ALL),
            ("I", self.n_samp_none, False),
            column(self.off, n),
            column(self.ids, n if self.ids_mode == _IDS_ALL else self.n_ids),
            column(self.top_ids, self.n_top_ids),
        )


def _read_fields(plain: bytes, raw_size: int, top_ids: bool = False) -> _Fields:
    if len(plain) < _CODES_V2.size:
        raise _malformed(f"a plain part of {len(plain)} bytes is shorter than its fields")
    raw_codes, *numbers = _CODES_V2.unpack_from(plain)
    at = _CODES_V2.size
    for _ in range(_N_COUNTS + 1):
        value, at = _varint(plain, at)
        numbers.append(value)
    numbers[-1] = _unzigzag(numbers[-1])
    if max(numbers[3:-1]) > _U32:
        raise _malformed("a count beyond 2**32 - 1")
    codes = raw_codes.decode("latin-1")
    for code, (name, allowed, optional) in zip(codes, _CODES, strict=True):
        if code not in allowed and not (optional and code == _ABSENT):
            raise _malformed(f"typecode {code!r} is not allowed for the {name} column")
    extension: list[Any] = []
    if top_ids:
        if len(plain) < at + _TOP_IDS_FIELDS.size:
            raise _malformed("the fields of the alternatives' ids run past the end of the plain part")
        raw_code, mode = _TOP_IDS_FIELDS.unpack_from(plain, at)
        count, at = _varint(plain, at + _TOP_IDS_FIELDS.size)
        code = raw_code.decode("latin-1")
        if code not in _INTS or mode not in (_IDS_ALL, _IDS_PER_TOKEN) or count > _U32:
            raise _malformed(f"alternatives' ids of typecode {code!r} in mode {mode}, {count} of them")
        extension = [code, mode, count]
    f = _Fields._make([*codes, *numbers, at, *(extension or (_ABSENT, 0, 0))])
    if f.separator > _MAX_CODE_POINT:
        raise _malformed(f"separator {f.separator:#x} is not a code point")
    if f.top_lp == _ABSENT and (f.n_top or f.n_top_none or f.top_k or f.top_sizes != _ABSENT):
        raise _malformed("alternatives are described but their column is absent")
    if f.top_sizes != _ABSENT and f.top_k:
        raise _malformed("both a uniform and a varying number of alternatives per position")
    if f.tok_mode > _TOK_XOR or (f.tok_mode == _TOK_XOR and (f.top_lp != f.lp or not f.n_top)):
        raise _malformed(f"tokens in mode {f.tok_mode} with alternatives of typecode {f.top_lp!r}")
    if (f.samp == _ABSENT) != (f.samp_mode == 0) or f.samp_mode > _SAMP_XOR:
        raise _malformed(f"sampling logprobs of typecode {f.samp!r} in mode {f.samp_mode}")
    if f.samp_mode == _SAMP_XOR and f.samp != f.lp:
        raise _malformed("sampling logprobs stored as differences from logprobs of another type")
    if f.samp == _ABSENT and f.n_samp_none:
        raise _malformed("None sampling logprobs are listed but their column is absent")
    if (f.ids == _ABSENT) != (f.ids_mode == 0) or f.ids_mode > _IDS_FROM_TOP:
        raise _malformed(f"token ids of typecode {f.ids!r} in mode {f.ids_mode}")
    if f.ids_mode == _IDS_FROM_TOP and (f.top_ids_mode != _IDS_PER_TOKEN or f.n_ids):
        raise _malformed("token ids read from a table of the alternatives' ids that is not there")
    if f.top_ids != _ABSENT and (f.top_lp == _ABSENT or (f.top_ids_mode == _IDS_ALL and f.n_top_ids != f.n_top)):
        raise _malformed(f"{f.n_top_ids} alternatives' ids for {f.n_top} alternatives")
    plain_size = at
    raw = 0
    for code, count, split in f.sections():
        if count:
            size = count * _ITEM[code]
            half = size // 2 if split and code == "f" else 0
            plain_size += size - half
            raw += half
    if (plain_size, raw) != (len(plain), raw_size):
        raise _malformed(f"parts of {len(plain)} and {raw_size} bytes where the fields describe {plain_size} and {raw}")
    return f


class _Sections:
    """The sections of a version 2 form, in order, put back together from their byte planes."""

    __slots__ = ("_plain", "_plain_at", "_raw", "_raw_at", "_sections")

    def __init__(self, plain: bytes, raw: memoryview, fields: _Fields) -> None:
        self._plain = memoryview(plain)
        self._plain_at = fields.start
        self._raw = raw
        self._raw_at = 0
        self._sections = iter(fields.sections())

    def data(self) -> tuple[str, bytes | bytearray | memoryview]:
        """The next section's typecode and little-endian items."""
        code, count, split = next(self._sections)
        if not count:
            return code, b""  # "" for an absent section
        width = _ITEM[code]
        size = count * width
        if split and code == "f":
            half = size // 2
            low = self._raw[self._raw_at : self._raw_at + half]
            self._raw_at += half
            high = self._plain[self._plain_at : self._plain_at + size - half]
            self._plain_at += size - half
            return code, _items(bytes(low) + high, width)
        planes = self._plain[self._plain_at : self._plain_at + size]
        self._plain_at += size
        return code, _items(planes, width)

    def column(self, as_code: str = "") -> array[Any] | None:
        """The next section as an array (of ``as_code`` items, the same bytes), None if it is absent."""
        code, data = self.data()
        if not code:
            return None
        return _column(as_code or code, data)

    def positions(self, n: int, what: str) -> tuple[int, ...]:
        column = self.column()
        return _check_positions(tuple(column), n, what) if column else ()


def _column(code: str, data: bytes | bytearray | memoryview) -> array[Any]:
    column: array[Any] = array(code)
    column.frombytes(data)
    if not _LE:  # pragma: no cover - big-endian hosts
        column.byteswap()
    return column


def _unpack_v2(data: bytes, envelope: Envelope) -> Columns:
    view = memoryview(data)
    start, stored = envelope.start, envelope.stored
    part = view[start : start + stored]
    plain = _inflate(part, envelope.plain) if envelope.deflated else bytes(part)
    f = _read_fields(plain, envelope.raw, envelope.top_ids)
    read = _Sections(plain, view[start + stored :], f)
    n = f.n
    strings = _read_strings(read.data()[1], f.n_strings, f.separator)
    tok_data = read.data()[1]
    lp_data = read.data()[1]
    top_key_data = read.data()[1]
    top_lp_data = read.data()[1]
    top_keys = _column(f.key, top_key_data) if f.top_lp != _ABSENT else None
    top_lp = _column(f.top_lp, top_lp_data) if f.top_lp != _ABSENT else None
    top_sizes = read.column()
    top_none = read.positions(n, "missing alternatives")
    if top_lp is not None:
        _check_alternatives(n, f.n_top, f.top_k, top_sizes, top_none)
    lp_none = read.positions(n, "None logprobs")
    if f.tok_mode == _TOK_XOR:
        firsts = _firsts(n, f.top_k, top_sizes, top_none)
        tok_data = _xor(tok_data, _gather(top_key_data, f.key, n, f.top_k, firsts))
        lp_data = _xor(lp_data, _gather(top_lp_data, _BITS[f.lp], n, f.top_k, firsts))
    tok_keys = _column(f.key, tok_data)
    lp = _column(f.lp, lp_data)
    samp_data = read.data()[1]
    samp_none = read.positions(n, "None sampling logprobs")
    samp = None
    if f.samp_mode:
        samp = _column(f.samp, _xor(samp_data, lp_data) if f.samp_mode == _SAMP_XOR else samp_data)
    off = read.column()
    ids = read.column()
    if ids is not None and f.ids_mode == _IDS_PER_TOKEN:
        distinct = sorted(set(tok_keys))
        if len(distinct) != len(ids):
            raise _malformed(f"{len(ids)} token ids for {len(distinct)} distinct tokens")
        ids = array(ids.typecode, _lookup(dict(zip(distinct, ids, strict=True)), tok_keys.tolist()))
    top_ids = read.column()
    if top_ids is not None and f.top_ids_mode == _IDS_PER_TOKEN:
        assert top_keys is not None  # _read_fields: alternatives' ids come with alternatives
        distinct = sorted(set(tok_keys) | set(top_keys))
        if len(distinct) != len(top_ids):
            raise _malformed(f"{len(top_ids)} ids in the table for {len(distinct)} distinct tokens")
        table = dict(zip(distinct, top_ids, strict=True))
        if f.ids_mode == _IDS_FROM_TOP:
            ids = array(f.ids, _lookup(table, tok_keys.tolist()))
        top_ids = array(top_ids.typecode, _lookup(table, top_keys.tolist()))
    tok, top_tok = _vocabulary_columns(strings, tok_keys, top_keys)
    return Columns(
        tok,
        _zero(lp, lp_none),
        lp_none,
        None if samp is None else _zero(samp, samp_none),
        samp_none,
        off,
        f.off_base,
        ids,
        top_tok,
        top_lp,
        top_sizes,
        f.top_k,
        top_none,
        top_ids,
    )
