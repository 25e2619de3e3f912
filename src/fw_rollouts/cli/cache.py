"""``fw-rollouts cache stats | clear | export | merge``: what a cache directory holds, emptying it, its samples as
JSON Lines, the records of others copied into it.

The directory is read through the library's own pieces: diskcache's table read directly and
read-only (``_diskcache_rows.iter_rows`` over ``_store``'s read-only connection), each record
decoded by ``_record.decode_record``. A record is data only, so reading a cache directory from
anywhere runs nothing from it; an entry that is not a record this version reads is counted as
unreadable and skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from ._errors import CommandError, say
from ._flags import Formatter
from ._io import check_output, count, logprobs_json, write_lines

__all__ = ["register"]

NAME: Final = "cache"

DESCRIPTION: Final = """\
Look at, export or empty the local sample cache (--cache-dir, default .fw_rollouts in the
current directory): one entry per sample, plus one per prompt whose echoed logprobs its samples
share. Reading never changes the cache and never runs anything stored in it.
"""

EPILOG: Final = """\
examples:
  fw-rollouts cache stats
  fw-rollouts cache export -o samples.jsonl --model qwen-15b
  fw-rollouts cache clear --cache-dir /data/old-cache --yes
  fw-rollouts cache merge --into .fw_rollouts cache-0 cache-1 cache-2
"""

_STATS: Final = ("Entries, size on disk, and samples, generated tokens and bytes per model.",
                 "examples:\n  fw-rollouts cache stats\n  fw-rollouts cache stats --cache-dir /data/cache --json\n")
_CLEAR: Final = ("Remove every entry of the cache (asks first, unless --yes) and give the space back. The\n"
                 "next run fetches its samples again.",
                 "examples:\n  fw-rollouts cache clear\n  fw-rollouts cache clear --cache-dir /tmp/c --yes\n")
_EXPORT: Final = (
    "Write every cached sample as JSON Lines, one line per sample: key, model, seed, text, reasoning,\n"
    "content, finish_reason, completed_reasoning, usage, created, response_id, index, logprobs (the\n"
    "generated tokens) and prompt_logprobs (null where the prompt's logprobs are stored once for all its\n"
    "samples, or were not asked for). The prompt itself is not stored in the cache (its key is a hash).",
    "examples:\n  fw-rollouts cache export -o samples.jsonl\n  fw-rollouts cache export --model qwen-15b | head -1\n",
)  # fmt: skip
_MERGE: Final = (
    "Copy every record of the cache directories SRC into --into (created if need be), as they are: a run\n"
    "those records answer (the same prompts, options, seeds and base URL) then sends nothing. Each record is\n"
    "checked first (its CRC and key); a damaged one is skipped and named. A key --into holds is left as it is.\n"
    "For the caches of a study's shards (fw-rollouts generate --shard I/N). The sources are only read.",
    "examples:\n  fw-rollouts cache merge --into .fw_rollouts cache-0 cache-1 cache-2\n",
)  # fmt: skip


def register(sub: Any) -> argparse.ArgumentParser:
    """Add ``cache`` and its ``stats``, ``clear`` and ``export`` to the subcommands."""
    from .._options import by_name

    doc = by_name("cache_dir").doc.replace("`", "")
    default = by_name("cache_dir").default
    parser: argparse.ArgumentParser = sub.add_parser(
        NAME,
        help="the local sample cache: stats, clear, export, merge",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="{stats,clear,export,merge}", required=True)
    made = {}
    for name, (description, epilog), summary in (
        ("stats", _STATS, "entries, size on disk, per model"),
        ("clear", _CLEAR, "remove every entry (asks first)"),
        ("export", _EXPORT, "every cached sample as JSON Lines"),
        ("merge", _MERGE, "copy the records of other cache directories into one"),
    ):
        action = actions.add_parser(name, help=summary, description=description, epilog=epilog,
                                    formatter_class=Formatter)  # fmt: skip
        if name != "merge":
            action.add_argument("--cache-dir", metavar="DIR", default=default, help=f"{doc} (default: {default})")
        action.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show the traceback of an error")  # fmt: skip
        made[name] = action
    for name in ("stats", "clear", "export"):
        made[name].add_argument("--cache-url", dest="cache", metavar="URL", default=None,
                                help="a Redis cache (redis://host:port/db) instead of --cache-dir")  # fmt: skip
    made["stats"].add_argument("--json", action="store_true", help="print the figures as one JSON object")
    made["stats"].set_defaults(run=_stats)
    made["clear"].add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    made["clear"].set_defaults(run=_clear)
    made["export"].add_argument("-o", "--output", metavar="PATH", help="write to PATH, replacing it whole "
                                                                       "(default: stdout)")  # fmt: skip
    made["export"].add_argument("--model", metavar="MODEL", help="only the samples of this model (an alias or id)")
    made["export"].set_defaults(run=_export)
    made["merge"].add_argument("sources", nargs="+", metavar="SRC", help="a cache directory to copy from")
    made["merge"].add_argument("--into", metavar="DIR", required=True, help="the cache directory to copy into")
    made["merge"].set_defaults(run=_merge, terms={"sources": "SRC", "into": "--into"})
    parser.set_defaults(terms={})
    return parser


# -- reading a cache directory -----------------------------------------------------------------------------------


def _database(directory: str) -> str | None:
    """The cache database of ``directory``, or None where there is none."""
    import diskcache

    path = os.path.join(directory, diskcache.core.DBNAME)
    return path if os.path.isfile(path) else None


def _entries(directory: str) -> Iterator[tuple[str, bytes]]:
    """Every ``(key, bytes)`` of the cache in ``directory``, read without writing anything."""
    from .._store import iter_entries

    return iter_entries(directory)


@dataclass(slots=True)
class _Model:
    samples: int = 0
    generated_tokens: int = 0
    bytes: int = 0


@dataclass(slots=True)
class _Listing:
    """What the entries of a cache are."""

    samples: int = 0
    prompt_parts: int = 0
    unreadable: int = 0
    models: dict[str, _Model] = field(default_factory=dict)


def _samples(entries: Iterable[tuple[str, bytes]], listing: _Listing) -> Iterator[tuple[str, Any, int]]:
    """``(key, sample, record bytes)`` of each sample record, counting every entry into ``listing``."""
    from .._record import MAGIC, PROMPT_MAGIC, RecordError, decode_record

    for key, data in entries:
        kind = data[:4]
        if kind == PROMPT_MAGIC:
            listing.prompt_parts += 1
            continue
        try:
            if kind != MAGIC:
                raise RecordError("not a sample record")
            sample = decode_record(data, "", key, generation_only=True)
        except RecordError:
            listing.unreadable += 1
            continue
        listing.samples += 1
        model = listing.models.setdefault(sample.model, _Model())
        model.samples += 1
        model.generated_tokens += sample.usage.completion_tokens
        model.bytes += len(data)
        yield key, sample, len(data)


def _directory(args: argparse.Namespace) -> str:
    directory = os.path.abspath(str(args.cache_dir))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CommandError(f"--cache-dir {args.cache_dir}: is a file, not a cache directory")
    return directory


def _size(directory: str) -> int | None:
    """Bytes on disk, as the store counts them (database pages and value files)."""
    import asyncio

    from .._store import DiskStore

    store = DiskStore(directory, read_only=True)
    try:
        return asyncio.run(store.stats()).size_bytes
    finally:
        store.close()


def _human(size: int | None) -> str:
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


# -- the actions --------------------------------------------------------------------------------------------------


def _stats(args: argparse.Namespace) -> int:
    if args.cache is not None:
        return _redis(args)
    directory = _directory(args)
    listing = _Listing()
    for _ in _samples(_entries(directory), listing):
        pass
    exists = _database(directory) is not None
    size = _size(directory) if exists else 0
    entries = listing.samples + listing.prompt_parts + listing.unreadable
    if args.json:
        import json

        models = {name: {"samples": m.samples, "generated_tokens": m.generated_tokens, "bytes": m.bytes}
                  for name, m in sorted(listing.models.items())}  # fmt: skip
        print(json.dumps({"location": directory, "entries": entries, "size_bytes": size, "samples": listing.samples,
                          "prompt_parts": listing.prompt_parts, "unreadable": listing.unreadable,
                          "models": models}))  # fmt: skip
        return 0
    print(f"cache    {directory}" + ("" if exists else " (empty: no cache there yet)"))
    parts = [count(listing.samples, "sample"), count(listing.prompt_parts, "prompt part")]
    if listing.unreadable:
        parts.append(f"{listing.unreadable:,} unreadable")
    print(f"entries  {entries:,} ({', '.join(parts)})")
    print(f"size     {_human(size)} on disk")
    if listing.models:
        width = max(len("model"), *map(len, listing.models))
        print()
        print(f"{'model':<{width}}  {'samples':>9}  {'generated tokens':>16}  {'record bytes':>12}")
        for name, m in sorted(listing.models.items()):
            print(f"{name:<{width}}  {m.samples:>9,}  {m.generated_tokens:>16,}  {_human(m.bytes):>12}")
    return 0


def _clear(args: argparse.Namespace) -> int:
    import contextlib
    import sqlite3

    from .._store import open_diskcache

    if args.cache is not None:
        return _redis(args)
    directory = _directory(args)
    if _database(directory) is None:
        say(f"nothing to clear: no cache in {directory}")
        return 0
    listing = _Listing()
    for _ in _samples(_entries(directory), listing):
        pass
    entries = listing.samples + listing.prompt_parts + listing.unreadable
    size = _human(_size(directory))
    what = f"{count(entries, 'entry')} ({count(listing.samples, 'sample')}, {size}) from {directory}"
    if not args.yes:
        print(f"Remove {what}? [y/N] ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:  # stdin closed or empty: no one to ask
            print(file=sys.stderr)
            raise CommandError(f"no answer on stdin, nothing removed: pass --yes to clear {directory} without asking")
        if answer.strip().lower() not in ("y", "yes"):
            say("nothing removed")
            return 0
    cache = open_diskcache(directory)
    try:
        removed = cache.clear()
        with contextlib.suppress(sqlite3.Error):  # another process has it open: the space comes back later
            cache._con.execute("VACUUM")
    finally:
        cache.close()
    say(f"removed {count(removed, 'entry')} from {directory}")
    return 0


def _redis(args: argparse.Namespace) -> int:
    """``stats`` or ``clear`` of a Redis cache (entries and value bytes; the records are not read)."""
    import asyncio

    from .._exceptions import ValidationError
    from .._redis_store import RedisStore

    try:
        store = RedisStore(args.cache)
    except ValidationError as exc:
        raise CommandError(f"--cache-url: {exc}") from None

    async def stats() -> Any:
        async with store:
            return await store.stats()

    found = asyncio.run(stats())
    if args.run is _clear:
        if found.entries and not args.yes:
            print(f"Remove {count(found.entries, 'entry')} from {store.location}? [y/N] ", end="", file=sys.stderr,
                  flush=True)  # fmt: skip
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                say("nothing removed")
                return 0
        store = RedisStore(args.cache)

        async def clear() -> int:
            async with store:
                return await store.clear()

        say(f"removed {count(asyncio.run(clear()), 'entry')} from {store.location}")
        return 0
    if args.json:
        import json

        print(json.dumps({"location": found.location, "entries": found.entries, "size_bytes": found.size_bytes}))
        return 0
    print(f"cache    {found.location}")
    print(f"entries  {found.entries:,}")
    print(f"size     {_human(found.size_bytes)} of values")
    return 0


def _redis_entries(url: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Where a Redis cache is (its password hidden) and every record it holds."""
    import asyncio

    from .._exceptions import ValidationError
    from .._redis_store import RedisStore

    try:
        store = RedisStore(url)
    except ValidationError as exc:
        raise CommandError(f"--cache-url: {exc}") from None

    async def read() -> list[tuple[str, bytes]]:
        async with store:
            return [entry async for entry in store.entries()]

    return store.location, asyncio.run(read())


def _export(args: argparse.Namespace) -> int:
    check_output(args.output)
    entries: Iterable[tuple[str, bytes]]
    if args.cache is not None:
        directory, entries = _redis_entries(args.cache)
    else:
        directory = _directory(args)
        entries = _entries(directory)
    wanted: tuple[str, ...] = ()
    if args.model:
        from .._prompts import resolve_model

        wanted = (args.model, resolve_model(args.model))
    listing = _Listing()
    lines = []
    for key, sample, _ in _samples(entries, listing):
        if wanted and sample.model not in wanted:
            continue
        lines.append(_line(key, sample))
    write_lines(lines, args.output)
    skipped = []
    if listing.prompt_parts:
        skipped.append(count(listing.prompt_parts, "prompt part"))
    if listing.unreadable:
        skipped.append(f"{listing.unreadable:,} unreadable")
    note = f" ({' and '.join(skipped)} not exported)" if skipped else ""
    say(f"exported {count(len(lines), 'sample')} from {directory} -> {args.output or 'stdout'}{note}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from .._merge import merge_caches

    if os.path.exists(args.into) and not os.path.isdir(args.into):
        raise CommandError(f"--into {args.into}: is a file, not a cache directory")
    merged = merge_caches(args.sources, args.into)
    for source, key, why in merged.damaged:
        say(f"skipped {key} in {source}: {why}")
    damaged = f", {count(len(merged.damaged), 'damaged entry')} skipped" if merged.damaged else ""
    say(f"copied {count(merged.copied, 'record')} from {count(len(args.sources), 'cache')} into {merged.location} "
        f"({merged.present:,} already there{damaged})")  # fmt: skip
    return 0


def _line(key: str, sample: Any) -> dict[str, Any]:
    return {
        "key": key,
        "model": sample.model,
        "seed": sample.seed,
        "text": sample.full,
        "reasoning": sample.reasoning,
        "content": sample.content,
        "finish_reason": sample.finish_reason,
        "completed_reasoning": sample.completed_reasoning,
        "usage": sample.usage.to_dict(),
        "created": sample.created,
        "response_id": sample.response_id,
        "index": sample.index,
        "logprobs": logprobs_json(sample.get_generation_logprobs()),
        "prompt_logprobs": logprobs_json(sample.get_prompt_logprobs()),
    }
