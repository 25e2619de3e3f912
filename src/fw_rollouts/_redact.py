"""Keeping the API key out of everything we show: errors (every field), log records (every level).

A server may echo the key back anywhere: in an error message, in ``code`` or ``param``, in a
request-id header, JSON-escaped inside a body (``"\\u0066w-..."`` only becomes the key once parsed).
So the key is scrubbed from values, not from bytes: :func:`redactor` cleans a string or any
JSON-like value, :func:`scrub_error` every field of an error (and of the per-seed errors it
carries), and :class:`SecretFilter`, on each of the SDK's loggers, every record's final text.
The keys a process has given its clients are remembered (:func:`remember_secret`) for the
log filter, which cannot know which client a record came from.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from ._exceptions import FwRolloutsError

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "SDK_LOGGERS",
    "SecretFilter",
    "install_log_filter",
    "redactor",
    "remember_secret",
    "scrub_error",
]

E = TypeVar("E", bound=FwRolloutsError)

REDACTED: Final = "[REDACTED]"
"""What a secret is replaced with."""

MIN_SECRET_LENGTH: Final = 8
"""Shorter keys are not scrubbed: no real API key is that short, and replacing a test's ``"k"`` everywhere would
mangle every message and log line (``"disk"`` -> ``"dis[REDACTED]"``)."""

SDK_LOGGERS: Final = ("fw_rollouts", "fw_rollouts.cache", "fw_rollouts.ratelimit", "fw_rollouts.retry",
                      "fw_rollouts.testing")  # fmt: skip
"""Every logger the SDK's modules log to (``tests/test_lazy_import.py`` holds the modules to it)."""

_MAX_DEPTH: Final = 64  # deeper than any honest error body; what lies below is dropped, not searched
_TOO_DEEP: Final = "[nested too deep]"

_secrets: tuple[str, ...] = ()
_secrets_lock = threading.Lock()


def remember_secret(secret: str | None) -> None:
    """Add ``secret`` to the keys every SDK log record is scrubbed of (for the life of the process)."""
    global _secrets
    if not secret or len(secret) < MIN_SECRET_LENGTH or secret in _secrets:
        return
    with _secrets_lock:
        if secret not in _secrets:
            # Longest first, so that a key containing another key is replaced whole.
            _secrets = tuple(sorted({*_secrets, secret}, key=len, reverse=True))


def redactor(*secrets: str | None) -> Callable[[Any], Any]:
    """A function that replaces each of ``secrets`` (of at least :data:`MIN_SECRET_LENGTH` characters) in a
    string, or in every string (keys included) of JSON-like data (mappings, lists, tuples); other values pass
    through unchanged."""
    wanted = tuple(sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True))

    def text(value: str) -> str:
        for secret in wanted:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def redact(value: Any, depth: int = 0) -> Any:
        if not wanted:
            return value
        if isinstance(value, str):
            return text(value)
        if isinstance(value, Mapping):
            if depth >= _MAX_DEPTH:
                return _TOO_DEEP
            return {redact(k, depth + 1): redact(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            if depth >= _MAX_DEPTH:
                return _TOO_DEEP
            return [redact(item, depth + 1) for item in value]
        return value

    return redact


def scrub_error(error: E, redact: Callable[[Any], Any]) -> E:
    """``error`` with ``redact`` applied to every field (message, body, code, param, type, request id, URL ...)
    and to each per-seed error it carries; the same object when nothing needed cleaning.

    The successful samples (``rollouts``) are model output and are left as they are.
    """
    changes: dict[str, Any] = {}
    for name, value in vars(error).items():
        if name == "rollouts":
            continue
        if name == "errors":
            cleaned: Any = {seed: scrub_error(each, redact) for seed, each in value.items()}
            if any(cleaned[seed] is not value[seed] for seed in value):
                changes[name] = cleaned
            continue
        if not isinstance(value, (str, Mapping, list, tuple)):
            continue  # numbers, None, a bad argument's value of any type: nothing a server could have put there
        cleaned = redact(value)
        if cleaned != value:
            changes["message" if name == "_message" else name] = cleaned
    return error._evolve(**changes) if changes else error


class SecretFilter(logging.Filter):
    """A logging filter that replaces every remembered key in a record's message (after formatting with its
    arguments) and in the text of its exception, whatever the level."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; never drops it."""
        secrets = _secrets
        if not secrets:
            return True
        message = record.getMessage()
        redact = redactor(*secrets)
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(secret in text for secret in secrets):
                record.exc_text = redact(text)
                record.exc_info = None
        return True


_FILTER: Final = SecretFilter()


def install_log_filter(prefix: str = "fw_rollouts") -> None:
    """Put :class:`SecretFilter` on each of :data:`SDK_LOGGERS` (made now if need be) and on every other logger
    named ``prefix`` or ``prefix.*`` that exists now.

    A logger's filters see only the records logged to that logger itself, not those its children
    propagate to it, so each of the SDK's loggers gets its own. The package calls this when it is
    imported, before any of its modules can log (they are imported when first used, and make their
    loggers then: ``logging.getLogger`` hands them these, filter included), and again after each
    module it imports.
    """
    existing = (n for n in logging.Logger.manager.loggerDict if n.startswith(prefix + "."))
    for name in dict.fromkeys([*SDK_LOGGERS, prefix, *existing]):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
