"""``fw-rollouts serve-fake`` (alias ``serve``): the simulated Fireworks server in the foreground, for offline work.

The options are the simulator's own command line (``python -m fw_rollouts.testing``: port, latency,
fault switches, rate limits), parsed there under this command's name; nothing of the simulator is
imported until the command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["NAMES", "register", "run"]

NAME: Final = "serve-fake"
NAMES: Final = (NAME, "serve")
"""The command and its alias (its name before ``serve-fake``)."""


def register(sub: Any) -> argparse.ArgumentParser:
    """Add ``serve-fake`` to the subcommands: a placeholder whose arguments all go to the simulator's parser."""
    parser: argparse.ArgumentParser = sub.add_parser(
        NAME,
        aliases=list(NAMES[1:]),
        help="run the simulated Fireworks server (port, latency, faults) for offline work",
        add_help=False,  # --help too is the simulator's
    )
    parser.set_defaults(run=None, terms={})
    return parser


def run(argv: Sequence[str]) -> int:
    """Run the simulator with ``argv`` (everything after ``serve-fake``); its exit status."""
    from ..testing._cli import main

    return main(argv, prog=f"fw-rollouts {NAME}")
