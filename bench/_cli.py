"""The command line of a bench module that prints its figures as JSON: ``python -m bench.<module> [--smoke]``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any


def smoke_main(description: str, measure: Callable[[bool], dict[str, Any]], argv: Sequence[str] | None) -> int:
    """Parse ``--smoke``, run ``measure(smoke)`` and print its figures as indented JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the measurement runs")
    print(json.dumps(measure(parser.parse_args(argv).smoke), indent=2))
    return 0
