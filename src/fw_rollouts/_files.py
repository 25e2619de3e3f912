"""Files written whole: under a temporary name beside the target, synced, then renamed over it.

An interrupted write (a kill, a full disk) leaves the old file or none, never half of the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["sync_directory", "write_whole"]


def write_whole(target: str, data: bytes) -> None:
    """``data`` at ``target``, all or nothing (a temporary name, fsync, rename, the directory synced)."""
    directory = os.path.dirname(os.path.abspath(target))
    handle, temporary = tempfile.mkstemp(prefix=".fw_rollouts-", suffix=".part", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    sync_directory(directory)


def sync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where a directory cannot be opened, as on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
