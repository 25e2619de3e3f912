"""Combining the shards of a study (``generate_many(..., shard=(i, N))``): their study files and their caches.

:func:`merge_studies` writes the study file the unsharded run writes (the same header, so
:func:`load_study` reads the same results, and an unsharded ``generate_many(..., output=...)``
resumes it) from the shards' files, after checking that they are shards of one study split the
same way. :func:`merge_caches` copies the records of several cache directories into one, as
they are (a record is data only, with a CRC: see ``_record``), checking each first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import orjson

from ._exceptions import InvalidTypeError, ValidationError
from ._models import FwResponse
from ._shards import SHARD_KEY

__all__ = ["MergedCache", "MergedStudy", "merge_caches", "merge_studies"]

T = TypeVar("T")

_BATCH: Final = 256
_KEYS_PER_CALL: Final = 500


@dataclass(frozen=True, slots=True)
class MergedStudy:
    """What :func:`merge_studies` wrote."""

    path: str
    """The merged study file (a directory for Parquet)."""
    count: int
    """N, the number of shards the study was split into."""
    shards: tuple[int, ...]
    """The shards merged, in order."""
    missing: tuple[int, ...]
    """The shards that were not given (only with ``partial=True``): their items have no samples yet."""
    samples: int
    """Samples written."""
    duplicates: int
    """Samples given more than once (or already in the output), kept once."""


@dataclass(frozen=True, slots=True)
class MergedCache:
    """What :func:`merge_caches` copied."""

    location: str
    """Where the records went (the target directory, or the store's ``location``)."""
    copied: int
    """Records copied."""
    present: int
    """Records the target already held under the same key, left as they were."""
    damaged: tuple[tuple[str, str, str], ...]
    """``(source directory, key, why)`` of each entry skipped as not a whole record this version reads."""


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``coroutine``'s result, on a loop of its own (on a worker thread when this thread already runs one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fw_rollouts-merge") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _paths(paths: Any, argument: str) -> list[str]:
    if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, Iterable):
        raise InvalidTypeError(argument, paths, "a list of paths")
    out = []
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidTypeError(argument, path, "a list of paths (str or os.PathLike)")
        out.append(os.path.abspath(os.fspath(path)))
    if not out:
        raise ValidationError(argument, paths, "at least one path")
    return out


# -- studies ---------------------------------------------------------------------------------------------------------


def _shard_of_header(header: Mapping[str, Any], where: str) -> tuple[int, int, str, frozenset[int]]:
    """``(index, count, whole study fingerprint, item indices)`` of a shard's header (ValidationError otherwise)."""
    shard = header.get(SHARD_KEY)
    if shard is None:
        raise ValidationError(
            "paths", where, "the study files of shards (generate_many(..., shard=(i, N), output=...)); this one was "
            "written without shard=, so it holds a whole study"
        )
    items = len(header["items"])
    try:
        index, count, study, mine = shard["index"], shard["count"], shard["study"], shard["items"]
        if not (type(index) is int and type(count) is int and 0 <= index < count and isinstance(study, str)):
            raise ValueError
        if not all(type(i) is int and 0 <= i < items for i in mine):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise ValidationError("paths", where, f"a shard's study file; its header's {SHARD_KEY!r} is damaged") from None
    return index, count, study, frozenset(mine)


def merge_studies(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    partial: bool = False,
    format: str | None = None,
) -> MergedStudy:
    """Combine the study files of a study's shards into the file the unsharded run writes, at ``output``.

    ``paths`` are the shards' files (``generate_many(..., shard=(i, N), output=path)``, JSON Lines or
    Parquet, mixed as they come); ``output`` is written as JSON Lines or Parquet by its suffix (or
    ``format``). :func:`load_study` on it returns what the unsharded ``generate_many`` returns (samples
    in seed order per item), and it is that study's own file: ``generate_many(items, output=output)``
    resumes it. An ``output`` that already holds this study (an earlier merge) keeps its samples and
    gets the rest.

    Refused (:class:`ValidationError` naming ``paths``, before anything is written): a file that is
    not a shard's study file, shards of different studies or of a different N, and, unless
    ``partial=True``, missing shards (named in the message). A shard given twice, or a sample in two
    files, is kept once. With ``partial=True`` the missing shards' items have no samples (an
    unsharded run with ``output=output`` fetches just those). Streams: memory holds one batch and the
    ``(item, seed)`` pairs written. Into JSON Lines, a JSON Lines shard's sample lines are copied as they
    are (their item and seed read; :func:`load_study` reads the rest); anything else is read and written.
    """
    from ._study_file import _check_header, _open_jsonl, _open_parquet, _read_json_header, study_format

    where = _paths(paths, "paths")
    if not isinstance(partial, bool):
        raise InvalidTypeError("partial", partial, "True or False")
    target = os.path.abspath(os.fspath(output))
    kind = study_format(target, format)
    if target in where:
        raise ValidationError("output", os.fspath(output), "a path that is not one of the shards' files")
    headers = []
    for path in where:
        if not os.path.exists(path):
            raise ValidationError("paths", path, "existing study files (this one does not exist)")
        headers.append(_read_json_header(path, "paths"))
    shards = [_shard_of_header(header, path) for header, path in zip(headers, where, strict=True)]
    first_index, count, study, _ = shards[0]
    for (index, n, whole, _), path in zip(shards, where, strict=True):
        if whole != study:
            raise ValidationError(
                "paths", path, f"shards of one study: this file is a shard of study {whole[:16]!r}, "
                f"{where[0]} of {study[:16]!r} (shard {first_index})"
            )
        if n != count:
            raise ValidationError(
                "paths", path, f"shards of one split: this file is shard {index} of {n}, {where[0]} of {count}"
            )
    items_of: dict[int, frozenset[int]] = {}
    for (index, _, _, mine), path in zip(shards, where, strict=True):
        if items_of.setdefault(index, mine) != mine:
            raise ValidationError("paths", path, f"one split: two files of shard {index} hold different items")
    missing = tuple(i for i in range(count) if i not in items_of)
    if missing and not partial:
        shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
        raise ValidationError(
            "paths", [os.path.basename(p) for p in where],
            f"every shard of the study: {len(missing)} of {count} missing (shard {shown}); give their files, or "
            "pass partial=True to merge what is there",
        )
    seen_items: set[int] = set()
    for index, mine in sorted(items_of.items()):
        if seen_items & mine:
            raise ValidationError("paths", where, f"one split: shard {index} shares items with another shard")
        seen_items |= mine
    if not missing and seen_items != set(range(len(headers[0]["items"]))):
        raise ValidationError("paths", where, "one split: some items are in no shard")

    header = {k: v for k, v in headers[0].items() if k not in ("format", "version", SHARD_KEY)}
    header["study"] = study
    line = _check_header(header)
    opened = _open_jsonl(target, line) if kind == "jsonl" else _open_parquet(target, line, 2048, 3600.0)
    sink, done = opened
    kept: set[tuple[int, int]] = set(done)
    items = len(headers[0]["items"])
    written = duplicates = 0
    ok = False
    try:
        for path, (_, _, _, mine) in sorted(zip(where, shards, strict=True), key=lambda pair: pair[1][0]):
            raw: list[bytes] = []
            batch: list[tuple[int, FwResponse]] = []
            for item, seed, sample in _samples(path, items, lines=kind == "jsonl"):
                if item not in mine:
                    raise ValidationError(
                        "paths", path, f"a shard's file holding its own items only (item {item} is not)"
                    )
                if (item, seed) in kept:
                    duplicates += 1
                    continue
                kept.add((item, seed))
                if isinstance(sample, bytes):
                    raw.append(sample)
                else:
                    batch.append((item, sample))
                if len(raw) + len(batch) >= _BATCH:
                    written += _write(sink, raw, batch)
                    raw, batch = [], []
            written += _write(sink, raw, batch)
        ok = True
    finally:
        sink.close(ok)
    return MergedStudy(
        path=target,
        count=count,
        shards=tuple(sorted(items_of)),
        missing=missing,
        samples=written,
        duplicates=duplicates,
    )


def _samples(path: str, items: int, *, lines: bool) -> Iterator[tuple[int, int, bytes | FwResponse]]:
    """``(item, seed, sample)`` of each sample of the shard file ``path``: the line itself where ``lines`` and
    the file is JSON Lines (copied as the shard wrote it, which is what the whole study's writer writes), else
    the sample read back."""
    from ._study_file import _bad_file, _jsonl_entries, _parse_sample, read_samples

    if not lines or os.path.isdir(path):
        for item, response in read_samples(path):
            yield item, response.seed or 0, response  # readers refuse a sample without a seed
        return
    for number, _, line, _ in _jsonl_entries(path, "paths"):
        if number == 1 or not line.strip():
            continue
        # Only the item and the seed are needed: orjson reads them exactly (a seed past 64 bits it reads as a
        # float, and a line it refuses, go to the exact reader), and the line is copied as it is.
        found: Any = None
        try:
            data = orjson.loads(line)
            found = data["item"], data["response"]["seed"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
        if found is None or type(found[0]) is not int or not 0 <= found[0] < items or type(found[1]) is not int:
            try:
                item, fields = _parse_sample(line, items)
            except (KeyError, TypeError, ValueError, RecursionError) as exc:
                raise _bad_file("paths", path, f"line {number} is not a sample ({type(exc).__name__}: {exc})") from None
            found = item, fields["seed"]
        yield found[0], found[1], line


def _write(sink: Any, raw: list[bytes], batch: list[tuple[int, FwResponse]]) -> int:
    if raw:
        sink.append(b"".join(raw))
    if batch:
        sink.write(batch)
    return len(raw) + len(batch)


# -- caches ----------------------------------------------------------------------------------------------------------


def merge_caches(sources: Sequence[str | os.PathLike[str]], into: Any) -> MergedCache:
    """Copy every record of the cache directories ``sources`` into the cache ``into``; what was copied.

    ``into`` is a cache directory (created if need be) or a :class:`SampleStore` that any event loop
    may await (:class:`DiskStore`). Records are copied as they are, under their keys, so a run whose
    requests those records answer (the same prompts, options, seeds and ``base_url``: the cache key
    covers the endpoint) sends nothing. Each record is checked first (its CRC, its key, its layout);
    a damaged entry, or one that is no record this version reads, is skipped and listed in
    ``damaged``. A key ``into`` already holds is left as it is (``present``). The sources are only read.
    Raises :class:`ValidationError` naming ``sources`` for a source that is not a directory or is the target.
    """
    from ._store import DiskStore

    where = _paths(sources, "sources")
    own = not hasattr(into, "set_many")
    if own:
        if not isinstance(into, (str, os.PathLike)):
            raise InvalidTypeError("into", into, "a cache directory (a path) or a SampleStore")
        store: Any = DiskStore(into)
    else:
        store = into
    location = str(getattr(store, "location", ""))
    for path in where:
        if not os.path.isdir(path):
            raise ValidationError("sources", path, "cache directories (this one is not a directory)")
        if own and os.path.samefile(path, location):
            raise ValidationError("sources", path, "directories other than the target ('into')")
    try:
        return _run(_copy(where, store, location))
    finally:
        if own:
            store.close()


def _take(entries: Iterator[tuple[str, bytes]], n: int) -> list[tuple[str, bytes]]:
    return list(itertools.islice(entries, n))


async def _copy(sources: list[str], store: Any, location: str) -> MergedCache:
    from ._record import RecordError, verify_record
    from ._store import iter_entries

    copied = present = 0
    damaged: list[tuple[str, str, str]] = []

    async def put(batch: dict[str, bytes]) -> None:
        nonlocal copied, present
        keys = list(batch)
        found = await store.get_many(keys)
        new = [(key, batch[key]) for key, old in zip(keys, found, strict=True) if old is None]
        present += len(keys) - len(new)
        if new:
            await store.set_many(new)
            copied += len(new)

    loop = asyncio.get_running_loop()
    # One thread reads the sources: an SQLite connection is used on the thread that opened it.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fw_rollouts-merge-read") as reader:
        for source in sources:
            entries = iter_entries(source)
            try:
                while True:
                    # A chunk at a time: a large cache is never whole in memory.
                    chunk = await loop.run_in_executor(reader, _take, entries, _KEYS_PER_CALL)
                    if not chunk:
                        break
                    batch: dict[str, bytes] = {}
                    for key, data in chunk:
                        try:
                            verify_record(data, key)
                        except RecordError as exc:
                            damaged.append((source, key, str(exc)))
                            continue
                        batch[key] = data
                    if batch:
                        await put(batch)
            finally:
                await loop.run_in_executor(reader, entries.close)
    return MergedCache(location=location, copied=copied, present=present, damaged=tuple(damaged))
