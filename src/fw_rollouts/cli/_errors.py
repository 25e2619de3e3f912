"""How a command fails: one line on stderr in the command's terms, an exit status, a traceback only with --debug.

Exit statuses: 0 done; 1 the run failed (the service, the network, the disk, samples that did not
come back); 2 the command line or its input is wrong (argparse's own errors, a bad option value, a
malformed input file, no API key: nothing was sent); 130 interrupted (Ctrl-C). The API key, from
``--api-key`` or ``FIREWORKS_API_KEY``, is scrubbed from everything printed, the traceback included.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence

from ._flags import cli_terms

__all__ = ["PROG", "CommandError", "guarded", "log_to_stderr", "say"]

PROG = "fw-rollouts"

USAGE, FAILED, INTERRUPTED = 2, 1, 130


class CommandError(Exception):
    """A problem a command found itself: its one-line message and the exit status (2 usage, 1 a failed run)."""

    def __init__(self, message: str, status: int = USAGE) -> None:
        super().__init__(message)
        self.status = status


def say(message: str) -> None:
    """One line on stderr, ``fw-rollouts: <message>``."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def log_to_stderr(debug: bool) -> Iterator[None]:
    """While a command runs: the SDK's warnings (and with ``--debug`` its DEBUG records) on stderr, as
    ``fw-rollouts: warning: ...`` lines in the command's terms. The handler goes when the command ends, so a
    program that calls :func:`main` keeps its logging as it was."""
    import logging  # here, not at the top: --help does not log

    class Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"{PROG}: {record.levelname.lower()}: {cli_terms(record.getMessage())}"

    logger = logging.getLogger("fw_rollouts")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter())
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    level = logger.level
    if debug:
        logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip()) or "(no message)"


def _status(exc: BaseException) -> tuple[int, str]:
    """The exit status and the message of an error that ended a command."""
    from .._exceptions import ConfigurationError, FwRolloutsError, ValidationError

    if isinstance(exc, CommandError):
        return exc.status, str(exc)
    if isinstance(exc, (ValidationError, ConfigurationError)):
        return USAGE, str(exc)
    if isinstance(exc, FwRolloutsError):
        return FAILED, str(exc)
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return FAILED, f"cannot use{where}: {exc.strerror or exc}"
    return FAILED, f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"


def guarded(
    run: Callable[[], int],
    *,
    debug: bool,
    secrets: Sequence[str | None] = (),
    terms: Mapping[str, str] | None = None,
) -> int:
    """``run()``'s exit status; an error it raises becomes one line on stderr and a non-zero status."""
    from .._redact import redactor

    scrub = redactor(*secrets, os.environ.get("FIREWORKS_API_KEY"))
    try:
        return run()
    except KeyboardInterrupt:
        say("interrupted: what arrived is in the cache; run the command again to fetch the rest")
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): no message, and no second error when Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return FAILED
    except Exception as exc:
        status, message = _status(exc)
        if debug:
            import traceback

            sys.stderr.write(scrub("".join(traceback.format_exception(exc))))
        say("error: " + scrub(_one_line(cli_terms(message, terms))))
        return status
