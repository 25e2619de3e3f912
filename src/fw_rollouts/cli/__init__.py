"""The ``fw-rollouts`` command (also ``python -m fw_rollouts``): :func:`main` and its parser.

One module per subcommand (``generate``, ``score``, ``merge``, ``cache``, ``serve_fake``, ``demo``), each with
a ``register`` that adds its parser and a ``run``. Building the parser imports argparse and the option
table only: a command imports the client, the simulator or the cache when it runs, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Final

from . import cache, demo, generate, merge, score, serve_fake
from ._errors import PROG, guarded, log_to_stderr
from ._flags import Formatter, Parser

__all__ = ["build_parser", "main"]

DESCRIPTION: Final = """\
Sample completions with full token logprobs from Fireworks (or any OpenAI-compatible completions
server), score text under a model, and look after the local sample cache. The real service needs
FIREWORKS_API_KEY (or --api-key); demo and serve-fake work offline.
"""

EPILOG: Final = """\
examples:
  fw-rollouts demo
  fw-rollouts generate -m qwen-15b "What is 2+2?" -n 5 -o samples.jsonl
  fw-rollouts score -m llama-v3p1-8b --raw --file pairs.jsonl
  fw-rollouts merge -o study.jsonl shard-0.jsonl shard-1.jsonl
  fw-rollouts cache stats
  fw-rollouts serve-fake --port 8000

Run fw-rollouts COMMAND --help for a command's options.
"""

_COMMANDS: Final = (generate, score, merge, cache, serve_fake, demo)
_TOP_FLAGS: Final = ("--debug",)


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from .._version import __version__

    parser = Parser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (never the API key)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    commands = {}
    for module in _COMMANDS:
        command = module.register(sub)
        if module is not serve_fake:  # its options, --help included, are the simulator's
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="show the traceback of an error (never the API key)")  # fmt: skip
        commands[module.NAME] = command
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``fw-rollouts`` (``serve-fake``'s own options are the simulator's, parsed when it runs)."""
    return _build()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fw-rollouts`` command: parse ``argv`` (default ``sys.argv[1:]``), run; the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = 0
    while first < len(args_list) and args_list[first] in _TOP_FLAGS:
        first += 1
    if first < len(args_list) and args_list[first] in serve_fake.NAMES:
        return serve_fake.run(args_list[first + 1 :])
    parser, _ = _build()
    args = parser.parse_args(args_list)
    debug = bool(getattr(args, "debug", False))
    with log_to_stderr(debug):
        return guarded(lambda: int(args.run(args)), debug=debug, secrets=[getattr(args, "api_key", None)],
                       terms=args.terms)  # fmt: skip
