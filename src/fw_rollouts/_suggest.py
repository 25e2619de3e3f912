"""'Did you mean ...?' for a mistyped name: the closest of the names that would have worked.

Used where a name the user typed is not one we know: model aliases (see
:func:`fw_rollouts._prompts.model_hint`) and option names. Only ever on an error path.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

__all__ = ["closest", "did_you_mean"]


def closest(
    name: str, candidates: Iterable[str], *, key: Callable[[str], str] = str.casefold, cutoff: float = 0.6
) -> str | None:
    """The candidate most like ``name`` when both are compared as ``key(...)``, or None if none is close.

    "Close" is :func:`difflib.get_close_matches`'s ratio of at least ``cutoff``. None too when
    ``name`` is itself one of the candidates: there is nothing to correct.
    """
    by_key: dict[str, str] = {}
    for candidate in candidates:
        if candidate == name:
            return None
        by_key.setdefault(key(candidate), candidate)
    match = difflib.get_close_matches(key(name), by_key, n=1, cutoff=cutoff)
    return by_key[match[0]] if match else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` naming the candidate closest to ``name``, or ``""`` when none is close.

    Made to be appended to an error message: ``f"unknown option {name!r}{did_you_mean(name, OPTIONS)}"``.
    """
    match = closest(name, candidates)
    return "" if match is None else f" (did you mean {match!r}?)"
