"""A study's samples on disk as they arrive: appended in batches off the event loop, resumed, read back.

Two layouts, chosen by the path's suffix (or ``format=``):

**JSON Lines** (``study.jsonl``): one header line, then one line per sample, in arrival order::

    {"format": "fw_rollouts.study", "version": 1, "study": "<fingerprint>", "items": [{<item i's call fields>}, ...]}
    {"item": 0, "response": {<FwResponse fields, as FwRollouts.to_jsonl writes them>}}

The values are exact (floats at ``repr`` precision, strings ASCII-escaped, so lone surrogates
survive) and every line is a plain JSON object. The header is written whole under a temporary
name and renamed into place, then sample lines are appended; a run killed mid-write leaves at
most one torn last line, which the next :meth:`StudyWriter.open` cuts off and readers skip: a
sample is on disk once its line, newline included, is.

**Parquet** (``study.parquet``): a *directory*, since a Parquet file cannot be appended to and
one cut short has no footer::

    study.parquet/_study.json         the header above, as JSON (the leading "_" makes Parquet readers skip it)
    study.parquet/part-000000.parquet one row per sample (columns: see ``parquet_schema``)
    study.parquet/part-000001.parquet ...

Each part is written whole under a temporary name (``.part-NNNNNN.parquet.tmp``), synced, then
renamed: an interrupted run leaves complete parts only (a leftover temporary file is deleted on
resume). Any Parquet reader reads the directory as one table (``pyarrow.dataset``,
``pandas.read_parquet``, ``polars.scan_parquet("study.parquet/*.parquet")``, DuckDB). A part ends
every ``part_rows`` samples, every ``part_interval`` seconds while samples arrive, and at each
:meth:`StudyWriter.drain`. Text Parquet cannot hold (a lone surrogate, which servers return for
tokens that split a character) is stored with U+FFFD in its column and exactly in the row's
``exact_json`` column, which the loaders apply.

Either way, re-opening a study's own file resumes it (``writer.done`` lists what is there and
is not written again); a file of another study, or one that is not a study file, is refused.
One writer per file at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType, TracebackType
from typing import Any, Final

import orjson

from ._exceptions import ConfigurationError, ValidationError
from ._files import sync_directory, write_whole
from ._jsonl import response_from_dict, response_to_dict
from ._models import FwResponse, FwRollouts

__all__ = [
    "FORMAT",
    "HEADER_NAME",
    "VERSION",
    "StudyWriter",
    "load_study",
    "read_header",
    "read_samples",
    "study_format",
]

FORMAT: Final = "fw_rollouts.study"
"""The ``format`` of a study file's header."""
VERSION: Final = 1
"""The version this code writes, and the only one it reads so far."""
HEADER_NAME: Final = "_study.json"
"""The header's file name inside a Parquet study directory."""

_FORMATS: Final = ("jsonl", "parquet")
_EXTRA_HINT: Final = "pip install 'fw-rollouts[parquet]'"
# FwRollouts' own fields, bar the samples: what an item of the header may give load_study.
_ITEM_FIELDS: Final = tuple(f.name for f in dataclasses.fields(FwRollouts) if f.name != "responses")
# Our parts, and those Ray's Dataset.write_parquet writes for fw_rollouts.ray (part-<task>-<write uuid>-<n>).
_PART = re.compile(r"part-(\d{6,})(?:-[0-9a-f]{32}-\d+)?\.parquet")
_SURROGATE = re.compile("[\ud800-\udfff]")
# A run of 19 digits that starts a number (not a fraction's digits, which floats such as -0.00036964862374588 have
# and orjson reads exactly): possibly an integer past 64 bits.
_LONG_DIGITS = re.compile(rb"(?<![.\d])\d{19}")


# -- formats and headers ------------------------------------------------------------------------------------------


def import_pyarrow() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or ConfigurationError naming the extra that installs them."""
    try:
        pa: ModuleType = importlib.import_module("pyarrow")
        pq: ModuleType = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ConfigurationError(
            f"writing or reading a Parquet study needs pyarrow, which is not installed: {_EXTRA_HINT} "
            "(or write JSON Lines: a path ending in .jsonl, or format='jsonl')"
        ) from None
    return pa, pq


def study_format(output: str | os.PathLike[str], format: str | None = None) -> str:
    """``"jsonl"`` or ``"parquet"``: ``format`` if given, else by ``output``'s suffix.

    Raises :class:`ValidationError` (naming ``format`` or ``output``) for anything else, and
    :class:`ConfigurationError` for Parquet without pyarrow: call it before sending anything.
    """
    if format is not None:
        if format not in _FORMATS:
            raise ValidationError("format", format, "'jsonl' or 'parquet' (or None: by the output path's suffix)")
        kind = format
    else:
        name = os.fspath(output).rstrip("/\\").lower()
        if name.endswith(".jsonl"):
            kind = "jsonl"
        elif name.endswith(".parquet"):
            kind = "parquet"
        else:
            raise ValidationError(
                "output",
                os.fspath(output),
                "a path ending in .jsonl (JSON Lines) or .parquet (a directory of Parquet parts), "
                "or pass format='jsonl' or format='parquet'",
            )
    if kind == "parquet":
        import_pyarrow()
    return kind


def _check_header(header: Mapping[str, Any]) -> dict[str, Any]:
    """The header line's object for ``header``; ValidationError naming ``header`` for one that cannot be one."""
    if not isinstance(header, Mapping):
        raise ValidationError("header", header, "a mapping with a 'study' string and an 'items' list")
    if not isinstance(header.get("study"), str) or not header["study"]:
        raise ValidationError("header", header.get("study"), "a non-empty 'study' fingerprint string")
    items = header.get("items")
    if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
        raise ValidationError("header", items, "an 'items' list with one mapping of call fields per item")
    clash = {"format", "version"} & set(header)
    if clash:
        raise ValidationError("header", sorted(clash), "no 'format' or 'version' key (the file's own)")
    line = {"format": FORMAT, "version": VERSION, **header}
    try:
        json.dumps(line, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError("header", header, f"JSON-able values ({exc})") from None
    return line


def _bad_file(argument: str, where: str, what: str) -> ValidationError:
    return ValidationError(argument, where, f"a study file written by generate_many(output=...); {what}")


def _header_of(data: Any, argument: str, where: str) -> dict[str, Any]:
    """The header ``data`` parsed from a study file (or ValidationError naming ``argument``)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad_file(argument, where, f"it is not one (its header is not format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise _bad_file(argument, where, f"its version {data.get('version')!r} is not one this version reads")
    if not isinstance(data.get("study"), str) or not isinstance(data.get("items"), list):
        raise _bad_file(argument, where, "its header lacks the 'study' fingerprint or the 'items' list")
    return data


def _loads(line: bytes) -> Any:
    """The JSON value of ``line``, exactly as the standard parser reads it, but mostly by orjson (4x faster).

    orjson reads an integer past 64 bits as a float, and refuses lone surrogates: a line with a run of 19
    or more digits starting a number (possibly such an integer) or that orjson refuses goes to the standard
    parser.
    """
    if _LONG_DIGITS.search(line) is None:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    return json.loads(line)


def _read_json_header(where: str, argument: str) -> dict[str, Any]:
    try:
        with open(where, "rb") as lines:
            first = lines.readline()
    except IsADirectoryError:
        return _read_parquet_header(where, argument)
    return _header_line(first, argument, where)


def _header_line(first: bytes, argument: str, where: str) -> dict[str, Any]:
    """The header a study file's first line holds (ValidationError naming ``argument`` if it holds none)."""
    if not first.endswith(b"\n"):
        raise _bad_file(argument, where, "it is empty or its first line is not a whole header")
    try:
        data = _loads(first)
    except (ValueError, RecursionError):
        raise _bad_file(argument, where, "line 1 is not JSON") from None
    return _header_of(data, argument, where)


def _read_parquet_header(where: str, argument: str) -> dict[str, Any]:
    try:
        with open(os.path.join(where, HEADER_NAME), "rb") as source:
            text = source.read()
    except FileNotFoundError:
        raise _bad_file(argument, where, f"it is a directory without {HEADER_NAME}") from None
    try:
        data = _loads(text)
    except (ValueError, RecursionError):
        raise _bad_file(argument, where, f"its {HEADER_NAME} is not JSON") from None
    return _header_of(data, argument, where)


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header of the study at ``path`` (``format``, ``version``, ``study``, ``items``...), either layout.

    Raises :class:`ValidationError` naming ``path`` for anything that is not a study file.
    """
    where = os.fspath(path)
    if os.path.isdir(where):
        return _read_parquet_header(where, "path")
    return _read_json_header(where, "path")


def _foreign(where: str, found: str, wanted: str) -> ValidationError:
    return ValidationError(
        "output",
        where,
        f"a new path, or this study's own file: it holds another study (fingerprint {found[:16]!r}, "
        f"this study is {wanted[:16]!r}); write to a new path, or delete it to start this study over",
    )


# -- JSON Lines -----------------------------------------------------------------------------------------------------


def _sample_line(item: int, response: FwResponse) -> str:
    # allow_nan=False: a NaN would not be JSON; the parser refuses such replies, so none should be here.
    return json.dumps({"item": item, "response": response_to_dict(response)}, allow_nan=False)


def _jsonl_entries(where: str, argument: str) -> Iterator[tuple[int, int, bytes, dict[str, Any]]]:
    """``(line number, end offset, line, header)`` for the header line, then each whole line after it; a torn
    last line (no newline: a write cut short) is left out. ValidationError naming ``argument`` for a file that
    is not a study file."""
    with open(where, "rb") as lines:
        first = lines.readline()
        header = _header_line(first, argument, where)
        offset = len(first)
        yield 1, offset, first, header
        for number, line in enumerate(lines, start=2):
            if not line.endswith(b"\n"):
                return
            offset += len(line)
            yield number, offset, line, header


def _parse_sample(line: bytes, items: int) -> tuple[int, dict[str, Any]]:
    """``(item, response data)`` of a sample line (ValueError/KeyError/TypeError for anything else)."""
    data = _loads(line)
    item, response = data["item"], data["response"]
    if type(item) is not int or not 0 <= item < items:
        raise ValueError(f"item {item!r} is not an index of the header's {items} items")
    if type(response["seed"]) is not int:
        raise ValueError(f"its seed is {response['seed']!r}, not an integer")
    return item, response


def _scan_jsonl(where: str, study: str) -> tuple[frozenset[tuple[int, int]], int]:
    """The (item, seed) pairs an existing JSONL study holds, and where its whole lines end."""
    done: set[tuple[int, int]] = set()
    end = 0
    for number, offset, line, header in _jsonl_entries(where, "output"):
        if number == 1:
            if header["study"] != study:
                raise _foreign(where, header["study"], study)
        elif line.strip():
            try:
                item, response = _parse_sample(line, len(header["items"]))
            except (KeyError, TypeError, ValueError, RecursionError) as exc:
                raise _bad_file(
                    "output",
                    where,
                    f"line {number} is not a sample ({type(exc).__name__}: {exc}); "
                    "write to a new path, or delete the file (or that line) and run again",
                ) from None
            done.add((item, response["seed"]))
        end = offset
    return frozenset(done), end


class _JsonlSink:
    """The open study file (used on the writer's thread only): batches appended as whole lines."""

    def __init__(self, where: str, end: int) -> None:
        self._file = open(where, "r+b")  # noqa: SIM115 (closed by close())
        # Cut a torn last line: the next line must start on a line of its own.
        self._file.truncate(end)
        self._file.seek(end)
        self._end = end

    def write(self, batch: list[tuple[int, FwResponse]]) -> None:
        self.append("".join(_sample_line(item, response) + "\n" for item, response in batch).encode("ascii"))

    def append(self, data: bytes) -> None:
        """Whole sample lines as they are (``merge_studies`` copies a shard's lines)."""
        try:
            self._file.write(data)
            self._file.flush()
        except BaseException:
            # Never leave half a batch: a later batch would follow a torn line.
            with contextlib.suppress(OSError):
                self._file.truncate(self._end)
                self._file.seek(self._end)
            raise
        self._end += len(data)

    def flush(self) -> None:
        """Nothing to do: every batch reached the OS as it was written."""

    def close(self, write: bool) -> None:
        """Sync what was written to disk and close (``write`` is for the Parquet sink's gathered rows)."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()


def _open_jsonl(where: str, header: dict[str, Any]) -> tuple[_JsonlSink, frozenset[tuple[int, int]]]:
    if os.path.isdir(where):
        raise _bad_file("output", where, "it is a directory (a Parquet study?): pass a path to a .jsonl file")
    try:
        fresh = os.path.getsize(where) == 0
    except FileNotFoundError:
        fresh = True
    if fresh:
        data = json.dumps(header, allow_nan=False).encode("ascii") + b"\n"
        write_whole(where, data)
        return _JsonlSink(where, len(data)), frozenset()
    done, end = _scan_jsonl(where, header["study"])
    return _JsonlSink(where, end), done


def _read_jsonl(where: str) -> Iterator[tuple[int, FwResponse]]:
    for number, _, line, header in _jsonl_entries(where, "path"):
        if number == 1 or not line.strip():
            continue
        try:
            item, data = _parse_sample(line, len(header["items"]))
            response = response_from_dict(data)
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise _bad_file("path", where, f"line {number} is not a sample ({type(exc).__name__}: {exc})") from None
        response.item = item  # the line's item is the sample's (a fresh object)
        yield item, response


# -- Parquet --------------------------------------------------------------------------------------------------------

# Fields of response_to_dict's output stored as plain columns (usage and logprobs are split out below).
_SCALARS: Final = (
    ("full", "string"), ("content", "string"), ("reasoning", "string"), ("finish_reason", "string"),
    ("completed_reasoning", "bool"), ("seed", "int64"), ("model", "string"), ("response_id", "string"),
    ("created", "int64"), ("echo", "bool"), ("prompt", "string"), ("index", "int64"), ("cached", "bool"),
    ("provider", "string"), ("object", "string"),
)  # fmt: skip
_USAGE: Final = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")
# Logprobs columns: each null when the sample has no logprobs.
_LP_COLUMNS: Final = (
    "tokens", "token_logprobs", "top_tokens", "top_logprobs", "text_offset", "token_ids", "sampling_logprobs",
    "num_prompt_tokens", "prompt_length", "logprobs_echo", "top_token_ids",
)  # fmt: skip
# Columns whose strings may need the exact_json copy: plain strings, and lists (of lists) of tokens.
_TEXT: Final = tuple(name for name, kind in _SCALARS if kind == "string")


def parquet_schema(pa: Any) -> Any:
    """One row per sample: item, the sample's fields, usage as a struct, logprobs as list columns."""
    kinds = {"string": pa.string(), "bool": pa.bool_(), "int64": pa.int64()}
    return pa.schema(
        [
            pa.field("item", pa.int64(), nullable=False),
            *(pa.field(name, kinds[kind]) for name, kind in _SCALARS),
            pa.field("usage", pa.struct([pa.field(name, pa.int64()) for name in _USAGE])),
            pa.field("tokens", pa.list_(pa.string())),
            pa.field("token_logprobs", pa.list_(pa.float64())),
            pa.field("top_tokens", pa.list_(pa.list_(pa.string()))),
            pa.field("top_logprobs", pa.list_(pa.list_(pa.float64()))),
            pa.field("text_offset", pa.list_(pa.int64())),
            pa.field("token_ids", pa.list_(pa.int64())),
            pa.field("sampling_logprobs", pa.list_(pa.float64())),
            pa.field("num_prompt_tokens", pa.int64()),
            pa.field("prompt_length", pa.int64()),
            pa.field("logprobs_echo", pa.bool_()),
            pa.field("exact_json", pa.string()),
            # Last, and null where not sent: parts written before it was added read the same (no such column).
            pa.field("top_token_ids", pa.list_(pa.list_(pa.int64()))),
        ]
    )


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _mended(value: Any) -> Any:
    """``value`` (a string, or lists of them) with each lone surrogate as U+FFFD, which Parquet can hold."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    return [None if v is None else _mended(v) for v in value]


def _texts(value: list[Any] | None) -> str:
    """Every string in a (nested) token list, joined, to check all of them at once."""
    if not value:
        return ""
    return "".join(v if isinstance(v, str) else _texts(v) for v in value if v is not None)


def sample_row(item: int, response: FwResponse) -> dict[str, Any]:
    """A sample as a Parquet row."""
    data = response_to_dict(response)
    row: dict[str, Any] = {"item": item}
    for name, _ in _SCALARS:
        row[name] = data[name]
    row["usage"] = data["usage"]
    lp = data["logprobs"]
    if lp is None:
        row.update(dict.fromkeys(_LP_COLUMNS))
    else:
        top = lp["top_logprobs"]
        row.update(
            tokens=lp["tokens"],
            token_logprobs=lp["token_logprobs"],
            top_tokens=[None if alts is None else list(alts) for alts in top],
            top_logprobs=[None if alts is None else list(alts.values()) for alts in top],
            text_offset=lp["text_offset"],
            token_ids=lp["token_ids"],
            sampling_logprobs=lp["sampling_logprobs"],
            num_prompt_tokens=lp["num_prompt_tokens"],
            prompt_length=lp["prompt_length"],
            logprobs_echo=lp["echo"],
            top_token_ids=_top_ids(lp.get("top_token_ids")),
        )
    exact: dict[str, Any] = {}
    for name in _TEXT:
        if not _utf8(row[name]):
            exact[name] = row[name]
    for name in ("tokens", "top_tokens"):
        if row[name] is not None and not _utf8(_texts(row[name])):
            exact[name] = row[name]
    for name, value in exact.items():
        row[name] = _mended(value)
    row["exact_json"] = json.dumps(exact) if exact else None
    return row


def _top_ids(top_ids: list[dict[str, int] | None] | None) -> list[list[int] | None] | None:
    """The alternatives' ids as lists parallel to ``top_tokens`` (their keys), None when not sent."""
    return None if top_ids is None else [None if ids is None else list(ids.values()) for ids in top_ids]


def sample_from_row(row: dict[str, Any]) -> FwResponse:
    """The sample :func:`sample_row` stored (KeyError/TypeError/ValueError for a row that is not one)."""
    if row["exact_json"] is not None:
        row.update(json.loads(row["exact_json"]))
    data = {name: row[name] for name, _ in _SCALARS}
    data["usage"] = row["usage"]
    if row["tokens"] is None:
        data["logprobs"] = None
    else:
        data["logprobs"] = {
            "tokens": row["tokens"],
            "token_logprobs": row["token_logprobs"],
            "top_logprobs": [
                None if keys is None else dict(zip(keys, values, strict=True))
                for keys, values in zip(row["top_tokens"], row["top_logprobs"], strict=True)
            ],
            "text_offset": row["text_offset"],
            "token_ids": row["token_ids"],
            "sampling_logprobs": row["sampling_logprobs"],
            "num_prompt_tokens": row["num_prompt_tokens"],
            "prompt_length": row["prompt_length"],
            "echo": row["logprobs_echo"],
        }
        top_ids = row.get("top_token_ids")  # absent from parts written before the column was added
        if top_ids is not None:
            data["logprobs"]["top_token_ids"] = [
                None if keys is None else dict(zip(keys, ids, strict=True))
                for keys, ids in zip(row["top_tokens"], top_ids, strict=True)
            ]
    return response_from_dict(data)


def _parts(where: str) -> list[tuple[int, str]]:
    """``(number, path)`` of each complete part of a Parquet study, in order."""
    found = []
    for name in os.listdir(where):
        match = _PART.fullmatch(name)
        if match:
            found.append((int(match.group(1)), os.path.join(where, name)))
    return sorted(found)


def _part_error(argument: str, where: str, part: str, exc: Exception) -> ValidationError:
    return _bad_file(
        argument,
        where,
        f"its part {os.path.basename(part)} cannot be read ({type(exc).__name__}: {exc}); "
        "write to a new path, or delete that part and run again",
    )


class _ParquetSink:
    """A Parquet study directory (used on the writer's thread only): rows gathered, written a whole part at a time."""

    def __init__(self, where: str, next_part: int, part_rows: int, part_interval: float) -> None:
        self._pa, self._pq = import_pyarrow()
        self._schema = parquet_schema(self._pa)
        self._where = where
        self._next = next_part
        self._part_rows = part_rows
        self._part_interval = part_interval
        self._rows: list[dict[str, Any]] = []
        self._since = time.monotonic()

    def write(self, batch: list[tuple[int, FwResponse]]) -> None:
        if not self._rows:
            self._since = time.monotonic()
        self._rows.extend(sample_row(item, response) for item, response in batch)
        if len(self._rows) >= self._part_rows or time.monotonic() - self._since >= self._part_interval:
            self.flush()

    def flush(self) -> None:
        """Write the gathered rows as one part, all or nothing."""
        rows, self._rows = self._rows, []
        if not rows:
            return
        name = f"part-{self._next:06d}.parquet"
        temporary = os.path.join(self._where, f".{name}.tmp")
        try:
            table = self._pa.Table.from_pylist(rows, schema=self._schema)
            del rows
            with open(temporary, "wb") as out:
                self._pq.write_table(table, out, compression="zstd")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, os.path.join(self._where, name))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        sync_directory(self._where)
        self._next += 1

    def close(self, write: bool) -> None:
        """Write the gathered rows as a last part (unless ``write`` is false: a write failed)."""
        if write:
            self.flush()
        self._rows = []


def _open_parquet(
    where: str, header: dict[str, Any], part_rows: int, part_interval: float
) -> tuple[_ParquetSink, frozenset[tuple[int, int]]]:
    _, pq = import_pyarrow()
    if os.path.exists(where) and not os.path.isdir(where):
        raise _bad_file("output", where, "it is a file, and a Parquet study is a directory: pass a new path")
    os.makedirs(where, exist_ok=True)
    names = os.listdir(where)
    if HEADER_NAME not in names:
        if any(not name.startswith(".") for name in names):
            raise _bad_file("output", where, f"it is a directory with other files and no {HEADER_NAME}")
        write_whole(os.path.join(where, HEADER_NAME), json.dumps(header, allow_nan=False).encode("ascii"))
        return _ParquetSink(where, 0, part_rows, part_interval), frozenset()
    found = _read_parquet_header(where, "output")
    if found["study"] != header["study"]:
        raise _foreign(where, found["study"], header["study"])
    for name in names:  # parts a killed run was writing: never renamed, so never complete
        if name.startswith(".part-") and name.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(where, name))
    done: set[tuple[int, int]] = set()
    parts = _parts(where)
    for _, part in parts:
        try:
            table = pq.read_table(part, columns=["item", "seed"])
        except Exception as exc:
            raise _part_error("output", where, part, exc) from None
        done.update(zip(table.column("item").to_pylist(), table.column("seed").to_pylist(), strict=True))
    next_part = parts[-1][0] + 1 if parts else 0
    return _ParquetSink(where, next_part, part_rows, part_interval), frozenset(done)


def _read_parquet(where: str) -> Iterator[tuple[int, FwResponse]]:
    _, pq = import_pyarrow()
    items = len(_read_parquet_header(where, "path")["items"])
    for _, part in _parts(where):
        try:
            batches = pq.ParquetFile(part).iter_batches(batch_size=256)
        except Exception as exc:
            raise _part_error("path", where, part, exc) from None
        # A batch at a time: the file is never whole in memory.
        while True:
            try:
                batch = next(batches, None)
            except Exception as exc:
                raise _part_error("path", where, part, exc) from None
            if batch is None:
                break
            for row in batch.to_pylist():
                try:
                    item = row["item"]
                    if type(item) is not int or not 0 <= item < items:
                        raise ValueError(f"item {item!r} is not an index of the header's {items} items")
                    if type(row["seed"]) is not int:
                        raise ValueError(f"its seed is {row['seed']!r}, not an integer")
                    response = sample_from_row(row)
                except (KeyError, TypeError, ValueError) as exc:
                    raise _part_error("path", where, part, exc) from None
                response.item = item  # the row's item is the sample's (a fresh object)
                yield item, response


# -- reading --------------------------------------------------------------------------------------------------------


def read_samples(path: str | os.PathLike[str]) -> Iterator[tuple[int, FwResponse]]:
    """Stream ``(item index, sample)`` from the study at ``path`` (either layout), in the order written.

    Holds one line (or one Parquet batch of 256 rows) at a time, so memory stays flat however
    large the file. A torn last line (a run killed mid-write) is skipped. Raises
    :class:`ValidationError` naming ``path`` for a file that is not a study file or an entry that
    is not a sample.
    """
    where = os.fspath(path)
    return _read_parquet(where) if os.path.isdir(where) else _read_jsonl(where)


def load_study(path: str | os.PathLike[str]) -> list[FwRollouts]:
    """The study at ``path`` (either layout) as one :class:`FwRollouts` per item, samples in seed order.

    Each item's call fields come from the header; an item whose samples are not all there (an
    interrupted run) has fewer ``responses`` than its ``num_responses``.
    """
    where = os.fspath(path)
    header = read_header(where)
    # Seed -> sample per item: a pair written twice (StudyWriter never does) comes back once, the first.
    responses: list[dict[int, FwResponse]] = [{} for _ in header["items"]]
    for item, response in read_samples(where):
        responses[item].setdefault(response.seed or 0, response)  # readers refuse a sample without a seed
    studies = []
    for number, (fields, by_seed) in enumerate(zip(header["items"], responses, strict=True)):
        samples = [by_seed[seed] for seed in sorted(by_seed)]
        try:
            studies.append(FwRollouts(**{n: fields[n] for n in _ITEM_FIELDS if n in fields}, responses=samples))
        except TypeError as exc:
            raise _bad_file("path", where, f"its header's item {number} lacks a field ({exc})") from None
    return studies


# -- writing --------------------------------------------------------------------------------------------------------


class StudyWriter:
    """Samples of a study appended to its file as they arrive, without the event loop waiting on the disk.

    Build one with ``await StudyWriter.open(path, header=..., format=...)``. :meth:`add` queues a
    sample and returns at once; every ``batch`` samples, or ``interval`` seconds after the first
    one pending, the pending samples go to a single worker thread that encodes and writes them
    in order. :meth:`drain` waits until everything added is written; :meth:`aclose` drains,
    syncs the file to disk and closes it. Nothing is kept once written, so memory stays flat
    however many samples pass through (as long as the disk keeps up).

    A write that fails (disk full...) is raised by the next :meth:`drain` or :meth:`aclose`;
    samples added after it are not written, and the file keeps only whole entries.
    """

    __slots__ = (
        "_backlog",
        "_batch",
        "_closed",
        "_done",
        "_error",
        "_executor",
        "_format",
        "_interval",
        "_items",
        "_last",
        "_loop",
        "_path",
        "_pending",
        "_sink",
        "_timer",
    )

    def __init__(
        self,
        path: str,
        format: str,
        sink: _JsonlSink | _ParquetSink,
        done: frozenset[tuple[int, int]],
        items: int,
        *,
        batch: int,
        interval: float,
        executor: ThreadPoolExecutor,
    ) -> None:
        self._path = path
        self._format = format
        self._sink = sink
        self._done = done
        self._items = items
        self._batch = batch
        self._interval = interval
        self._executor = executor
        self._loop = asyncio.get_running_loop()
        self._pending: list[tuple[int, FwResponse]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._backlog = 0

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        header: Mapping[str, Any],
        format: str | None = None,
        batch: int = 256,
        interval: float = 0.05,
        part_rows: int = 2048,
        part_interval: float = 10.0,
    ) -> StudyWriter:
        """Open (create, or resume) the study file at ``path``.

        ``header`` is the study's JSON-able description: a ``"study"`` fingerprint string and an
        ``"items"`` list with each item's call fields (those of :class:`FwRollouts` bar ``responses``,
        which :func:`load_study` uses). An existing file of the same ``"study"`` is resumed: its
        whole entries are kept (listed in :attr:`done`), a torn last line is cut off, and new samples
        are appended. Raises :class:`ValidationError` naming ``output`` for a file of another study
        or one that is not a study file, and :class:`ConfigurationError` for Parquet without pyarrow.
        ``part_rows`` and ``part_interval`` bound a Parquet part (samples, seconds).
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        if part_rows < 1:
            raise ValueError(f"part_rows must be at least 1, not {part_rows}")
        where = os.fspath(path)
        kind = study_format(where, format)
        line = _check_header(header)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fw_rollouts-study")
        loop = asyncio.get_running_loop()
        opened: tuple[_JsonlSink | _ParquetSink, frozenset[tuple[int, int]]]
        try:
            if kind == "jsonl":
                opened = await loop.run_in_executor(executor, _open_jsonl, where, line)
            else:
                opened = await loop.run_in_executor(executor, _open_parquet, where, line, part_rows, part_interval)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        sink, done = opened
        return cls(where, kind, sink, done, len(line["items"]), batch=batch, interval=interval, executor=executor)

    @property
    def path(self) -> str:
        """The study file (a directory for Parquet)."""
        return self._path

    @property
    def format(self) -> str:
        """``"jsonl"`` or ``"parquet"``."""
        return self._format

    @property
    def done(self) -> frozenset[tuple[int, int]]:
        """``(item index, seed)`` of every sample the file already held when it was opened (a resumed run)."""
        return self._done

    @property
    def pending(self) -> int:
        """Samples added but not yet handed to the writer thread."""
        return len(self._pending)

    @property
    def backlog(self) -> int:
        """Batches handed to the writer thread and not yet written: a caller whose samples arrive faster
        than the disk takes them can hold requests back while this is high (memory stays flat only then)."""
        return self._backlog

    def add(self, item: int, response: FwResponse) -> None:
        """Queue sample ``response`` of item ``item`` for the file; never waits (call it on the writer's loop).

        A sample already in :attr:`done` is skipped. Raises ValueError for an item index the header
        does not have, or a sample without a seed (it could not be resumed), and RuntimeError once closed.
        """
        if self._closed:
            raise RuntimeError(f"the study writer for {self._path!r} is closed")
        seed = response.seed
        if type(seed) is not int:
            raise ValueError(f"a sample written to a study needs an integer seed, not {seed!r}")
        if type(item) is not int or not 0 <= item < self._items:
            raise ValueError(f"item {item!r} is not an index of the study's {self._items} items")
        if (item, seed) in self._done:
            return
        self._pending.append((item, response))
        if len(self._pending) >= self._batch:
            self._flush()
        elif self._timer is None:
            # Samples that trickle in still reach the disk soon: a killed run loses at most ``interval``.
            self._timer = self._loop.call_later(self._interval, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            self._submit(self._write, batch)

    def _submit(self, function: Any, *args: Any) -> None:
        future = self._loop.run_in_executor(self._executor, function, *args)
        self._backlog += 1
        future.add_done_callback(self._finished)
        self._last = future

    def _finished(self, future: asyncio.Future[None]) -> None:
        # Retrieved here, so none is left for "Future exception was never retrieved"; drain raises it.
        self._backlog -= 1
        if not future.cancelled():
            error = future.exception()
            if error is not None and self._error is None:
                self._error = error

    def _write(self, batch: list[tuple[int, FwResponse]]) -> None:
        # On the writer thread: batches run one at a time, in order.
        if self._error is None:
            self._sink.write(batch)

    def _flush_sink(self) -> None:
        if self._error is None:
            self._sink.flush()

    def _close_sink(self) -> None:
        self._sink.close(self._error is None)

    async def drain(self) -> None:
        """Wait until every sample added so far is written (for Parquet, as a part of its own); raise a failed write."""
        self._flush()
        if not self._closed:
            self._submit(self._flush_sink)
        last = self._last
        if last is not None:
            # shield: should this wait be cancelled, the writes themselves go on.
            await asyncio.shield(last)
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        """Write what is pending, sync the file to disk and close it (again: nothing to do)."""
        if self._closed:
            return
        try:
            await self.drain()
        finally:
            self._closed = True
            try:
                await asyncio.shield(self._loop.run_in_executor(self._executor, self._close_sink))
            finally:
                self._executor.shutdown(wait=False)

    async def __aenter__(self) -> StudyWriter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"StudyWriter({self._path!r}, format={self._format!r}, done={len(self._done)}, "
            f"pending={len(self._pending)}, closed={self._closed})"
        )
