"""Progress bars: tqdm, notebook-aware, falling back to the terminal bar where widgets are missing."""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["progress_bar"]


class _Silent:
    """The bar for runs that show none."""

    __slots__ = ()

    def update(self, n: int = 1) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


def progress_bar(total: int, *, enabled: bool, initial: int = 0, desc: str = "Generating") -> Any:
    """A bar counting samples (cached ones start it at ``initial``), or a silent stand-in."""
    if not enabled:
        return _Silent()
    options: dict[str, Any] = {"total": total, "initial": initial, "desc": desc, "unit": "sample", "leave": False}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm

            return tqdm(**options)
    except Exception:  # a notebook without ipywidgets: the notebook bar cannot render
        from tqdm.std import tqdm as std_tqdm

        return std_tqdm(**options)
