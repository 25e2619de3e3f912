"""Progress bars: one tqdm bar per call or study, notebook-aware, left showing its final count."""

from __future__ import annotations

import time
import warnings
from typing import Any

__all__ = ["StudyProgress", "progress_bar"]


class _Silent:
    """The bar for runs that show none."""

    __slots__ = ()

    def update(self, n: int = 1) -> None:
        """Do nothing."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Do nothing."""

    def refresh(self) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


def progress_bar(total: int, *, enabled: bool, initial: int = 0, desc: str = "Generating") -> Any:
    """A tqdm bar counting samples (starting at ``initial``), or a silent stand-in.

    The bar stays on screen when it closes (``leave=True``), so it ends showing how far it got.
    """
    if not enabled:
        return _Silent()
    options: dict[str, Any] = {"total": total, "initial": initial, "desc": desc, "unit": "sample", "leave": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm

            return tqdm(**options)
    except Exception:  # a notebook without ipywidgets: the notebook bar cannot render
        from tqdm.std import tqdm as std_tqdm

        return std_tqdm(**options)


class StudyProgress:
    """One bar for a whole call or study: samples done of the total, with those served from the local
    cache and those that failed shown apart (tqdm adds the rate and the time left)."""

    __slots__ = ("_bar", "_cached", "_failed", "_last")

    def __init__(self, total: int, *, enabled: bool, desc: str = "Generating") -> None:
        self._bar = progress_bar(total, enabled=enabled, desc=desc)
        self._cached = 0
        self._failed = 0
        self._last = 0.0

    def fetched(self, n: int = 1) -> None:
        """``n`` samples arrived from the service."""
        self._bar.update(n)

    def cached(self, n: int = 1) -> None:
        """``n`` samples were served from the local cache."""
        self._cached += n
        self._bar.update(n)
        self._postfix(force=False)

    def failed(self, n: int = 1) -> None:
        """``n`` samples failed for good (they do not advance the bar)."""
        self._failed += n
        self._postfix(force=False)

    def _postfix(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        parts = []
        if self._cached:
            parts.append(f"{self._cached:,} cached")
        if self._failed:
            parts.append(f"{self._failed:,} failed")
        self._bar.set_postfix_str(", ".join(parts), refresh=False)

    def close(self) -> None:
        """Show the final counts and close the bar (it stays on screen)."""
        if self._cached or self._failed:
            self._postfix(force=True)
        self._bar.refresh()
        self._bar.close()
