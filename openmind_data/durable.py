"""Files that appear whole, or not at all.

A file is written under a hidden temporary name beside its final one (``.NAME.partial``),
flushed to disk, renamed over the final name, and the folder's entry flushed too. Killed at
any moment (SIGKILL, a power cut), a writer leaves the old file or the new one, never half of
one; the next write of the same path replaces a leftover temporary file. One writer per path
at a time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["fsync_path", "write_atomic", "write_with"]


def write_with(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temporary)``, then flush it and rename it to ``path`` (folders made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    write(partial)
    fsync_path(partial)
    partial.replace(path)
    fsync_path(path.parent)
    return path


def write_atomic(path: str | Path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` whole (see the module's docstring)."""
    return write_with(path, lambda partial: partial.write_bytes(payload))


def fsync_path(path: str | Path) -> None:
    """Flush a file's contents, or a folder's entries, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a folder
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
