"""``fw-rollouts merge``: the study files of a study's shards (``generate --shard I/N --study-file``) as one.

The library's :func:`~fw_rollouts.merge_studies` does the work: the shards are checked to be of one
study and one split, and the file written is the one the unsharded run writes.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from ._errors import CommandError, say
from ._flags import Formatter, cli_terms
from ._io import count

__all__ = ["register", "run"]

NAME: Final = "merge"

_TERMS: Final = {"paths": "SHARD", "output": "--output"}

DESCRIPTION: Final = """\
Combine the study files of a study's shards (fw-rollouts generate --shard I/N --study-file
shard-I.jsonl, or generate_many(..., shard=(i, N), output=...)) into the study file the whole
study writes: fw_rollouts.load_study reads it, and a run of the whole study with --study-file
OUTPUT resumes it. Shards of another study, of another N, and (unless --partial) missing
shards are refused before anything is written; a sample given twice is kept once. An OUTPUT that
already holds the study (an earlier merge) keeps its samples and gets the rest. To merge the
shards' caches too: fw-rollouts cache merge --into DIR SRC...
"""

EPILOG: Final = """\
examples:
  fw-rollouts merge -o study.jsonl shard-0.jsonl shard-1.jsonl shard-2.jsonl
  fw-rollouts merge -o study.parquet shard-*.parquet
  fw-rollouts merge --partial -o study.jsonl shard-0.jsonl shard-2.jsonl
"""


def register(sub: Any) -> argparse.ArgumentParser:
    """Add ``merge`` to the subcommands."""
    parser: argparse.ArgumentParser = sub.add_parser(
        NAME,
        help="combine the study files of a study's shards into one",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    parser.add_argument("paths", nargs="+", metavar="SHARD", help="a shard's study file (.jsonl, or .parquet)")
    parser.add_argument("-o", "--output", metavar="PATH", required=True,
                        help="the merged study file: .jsonl (JSON Lines) or .parquet (a directory)")  # fmt: skip
    parser.add_argument("--partial", action="store_true",
                        help="merge the shards given, even if some are missing (their items get none)")  # fmt: skip
    parser.set_defaults(run=run, terms={})
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``merge``; the exit status."""
    from .._exceptions import ValidationError
    from .._merge import merge_studies

    try:
        merged = merge_studies(args.paths, args.output, partial=args.partial)
    except ValidationError as exc:
        raise CommandError(cli_terms(str(exc).replace("partial=True", "--partial"), _TERMS)) from exc
    missing = f"; shards {', '.join(map(str, merged.missing))} missing" if merged.missing else ""
    twice = f", {count(merged.duplicates, 'duplicate')} kept once" if merged.duplicates else ""
    say(f"merged {len(merged.shards)} of {merged.count} shards: {count(merged.samples, 'sample')}{twice} -> "
        f"{args.output}{missing}")  # fmt: skip
    return 0
