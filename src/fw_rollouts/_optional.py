"""Optional extras (pandas, matplotlib): imported when first used, or an error naming the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from ._exceptions import ConfigurationError

__all__ = ["optional_module"]


def optional_module(name: str, *, needed_by: str, extra: str) -> ModuleType:
    """The module ``name``, imported; :class:`ConfigurationError` naming ``extra`` when it is not installed.

    ``needed_by`` names what the user called (``"to_pandas"``), so the message says what to install for it.
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigurationError(
            f"{needed_by} needs {name.partition('.')[0]}, which is not installed: pip install 'fw-rollouts[{extra}]'"
        ) from None
