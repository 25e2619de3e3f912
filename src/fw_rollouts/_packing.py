"""The data-only byte form of :class:`~._columns.Columns`: FWLP, version 1.

Plain data read with ``struct``, ``array.frombytes`` and UTF-8 decoding, never pickle or eval,
so bytes from a cache directory shared with others cannot run code. All integers and array
items are little-endian. The layout::

    prefix  "FWLP", u16 version, u32 CRC-32 of every byte after the prefix
    fields  u8 flags (bit 0: echo); 7 typecodes: token key, logprob, sampling logprob, text
            offset, token id, alternative logprob, alternatives per position (NUL where the
            column is absent); u32 separator code point; u32 each: tokens, strings, UTF-8 bytes
            of the strings, alternatives, None logprobs, None sampling logprobs, positions
            without alternatives, alternatives per position when uniform; i64 each: prompt
            tokens, prompt length, text offset of the first token
    body    the strings joined by the separator (UTF-8, surrogates passed through), token keys,
            alternative keys, logprobs, positions of None logprobs, sampling logprobs, positions
            of None sampling logprobs, text offsets, token ids, alternative logprobs,
            alternatives per position, positions without alternatives (positions are u32)

Token and alternative keys are integers whose distinct values, in ascending order, name the
strings in the order they are stored: the packer writes the process's vocabulary indices as
they are when they are narrow (no per-token work), or their ranks when that is narrower. The
separator is a code point no string contains (NUL unless some token holds one).

:func:`read_header` checks what is cheap (magic, version, typecodes, lengths, checksum);
:func:`unpack` checks the rest. Both raise ValueError, with the reason, for anything malformed.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Mapping, Sequence
from itertools import pairwise
from operator import itemgetter
from typing import Any, Final, NamedTuple

from ._columns import Columns, _index_code, _indices, _strings

__all__ = ["FORMAT_VERSION", "MAGIC", "Header", "pack", "peek_attributes", "read_header", "unpack"]

MAGIC: Final = b"FWLP"
"""The first bytes of every packed form."""
FORMAT_VERSION: Final = 1
"""The packed format this module writes and the only one it reads."""

_PREFIX: Final = struct.Struct("<4sHI")  # magic, version, CRC-32 of the rest
_FIELDS: Final = struct.Struct("<B7s9I3q")
_HEADER_SIZE: Final = _PREFIX.size + _FIELDS.size
_ECHO: Final = 1
_ABSENT: Final = "\0"
_LE: Final = sys.byteorder == "little"
_U32: Final = 2**32 - 1
_MAX_CODE_POINT: Final = 0x10FFFF

# Item sizes are the format's, checked against this platform's arrays once.
_ITEM: Final = {"B": 1, "H": 2, "I": 4, "i": 4, "q": 8, "f": 4, "d": 8}
if any(array(code).itemsize != size for code, size in _ITEM.items()):  # pragma: no cover - no such CPython
    raise ImportError("fw_rollouts needs 4-byte 'I'/'i' and 8-byte 'q' arrays")

_UNSIGNED: Final = frozenset("BHI")
_FLOATS: Final = frozenset("fd")
_INTS: Final = frozenset("iq")
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


class Header(NamedTuple):
    """The fixed header of a packed form."""

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


def _malformed(why: str) -> ValueError:
    return ValueError(f"not packed logprobs (FWLP {FORMAT_VERSION}): {why}")


def read_header(data: bytes, *, checksum: bool = True) -> Header:
    """The header of ``data``, after checking the magic, version, typecodes, lengths and checksum.

    This reads every byte once (the CRC-32; ``checksum=False`` skips it) but decodes no column;
    :func:`unpack` does that and checks the rest. Raises ValueError for anything but a
    well-formed FWLP 1 form.
    """
    if not isinstance(data, bytes | bytearray):
        raise _malformed(f"expected bytes, got {type(data).__name__}")
    if data[:1] == b"\x80":
        raise _malformed("this is a pickle, the form older versions wrote, which is no longer read")
    if len(data) < _HEADER_SIZE:
        raise _malformed(f"{len(data)} bytes is shorter than the {_HEADER_SIZE}-byte header")
    magic, version, crc = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise _malformed(f"the data starts with {bytes(data[:4])!r}, not {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise _malformed(f"format version {version}; this version of fw_rollouts reads version {FORMAT_VERSION} only")
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


_START = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0)[:6]  # magic and version, as every v1 form begins


def peek_attributes(data: bytes) -> tuple[bool, int, int]:
    """``(echo, num_prompt_tokens, prompt_length)`` of ``data`` after checking only its magic and version.

    For bytes whose integrity the caller has already checked (a cache record's CRC covers them): a cache
    hit then costs a few struct reads; :func:`unpack` checks the whole header before any column is read.
    """
    if len(data) < _HEADER_SIZE or data[:6] != _START:
        raise _malformed(f"the data starts with {bytes(data[:6])!r}, not FWLP version {FORMAT_VERSION}")
    fields = _FIELDS.unpack_from(data, _PREFIX.size)
    return bool(fields[0] & _ECHO), fields[-3], fields[-2]


# -- packing -------------------------------------------------------------------------------------------------


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


def _token_keys(tok: array[int], top: array[int] | None) -> tuple[str, array[int], array[int] | None, list[str]]:
    """Key typecode, token keys, alternative keys and the strings the keys name, in key order."""
    distinct = set(tok)
    if top is not None:
        distinct.update(top)
    order = sorted(distinct)
    strings = _strings(order)
    if tok.typecode == "H" and (top is None or top.typecode == "H"):
        # The vocabulary indices themselves, no per-token work (ranks would save a byte a key under 257
        # distinct strings, for 40 us more per typical sample, on every fetched sample).
        return "H", tok, top, strings
    if len(order) > 65536:
        return "I", array("I", tok), None if top is None else array("I", top), strings
    # Ranks: one lookup per token, for both columns at once.
    rank = dict(zip(order, range(len(order)), strict=True))
    code = "B" if len(order) <= 256 else "H"
    keys = array(code, _lookup(rank, tok.tolist() if top is None else tok.tolist() + top.tolist()))
    return code, keys[: len(tok)], None if top is None else keys[len(tok) :], strings


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


def pack(columns: Columns, *, num_prompt_tokens: int, prompt_length: int, echo: bool) -> bytes:
    """``columns`` and the three attributes of a Logprobs in the packed format (see the module docstring)."""
    c = columns
    top = c.top_tok is not None and c.top_lp is not None
    key_code, tok_keys, top_keys, strings = _token_keys(c.tok, c.top_tok if top else None)
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
    return b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, crc), *sections])


# -- unpacking -----------------------------------------------------------------------------------------------


class _Reader:
    """The body sections of a packed form, in order."""

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
        if not column:
            return ()
        positions = tuple(column)
        if positions[-1] >= n or any(a >= b for a, b in pairwise(positions)):
            raise _malformed(f"the positions of {what} are not ascending positions below {n}")
        return positions


def _read_strings(raw: memoryview, header: Header) -> list[str]:
    try:
        text = str(raw, "utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise _malformed(f"the token strings are not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not header.n_strings:
        if text:
            raise _malformed("string bytes without strings")
        return []
    strings = text.split(chr(header.separator))
    if len(strings) != header.n_strings:
        raise _malformed(f"{len(strings)} strings where the header counts {header.n_strings}")
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


def unpack(data: bytes, *, checksum: bool = True) -> Columns:
    """The columns of a packed form; ValueError, with the reason, for anything malformed.

    ``checksum=False`` skips the CRC-32, for bytes whose :func:`read_header` already checked it.
    """
    header = read_header(data, checksum=checksum)
    read = _Reader(data, header)
    n = header.n
    strings = _read_strings(read.raw(), header)
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
        if top_sizes is None:
            if header.n_top != (n - len(top_none)) * header.top_k:
                raise _malformed(
                    f"{header.n_top} alternatives are not {header.top_k} at each of {n - len(top_none)} positions"
                )
        elif sum(top_sizes) != header.n_top or any(top_sizes[i] for i in top_none):
            raise _malformed(f"the alternatives per position do not add up to the {header.n_top} alternatives")
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
