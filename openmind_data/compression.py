"""Gzip as the toolkit writes and reads it: standard streams, made by the fastest library here.

Every NIfTI the toolkit publishes, image or mask, is a plain gzip stream (any reader opens it)
without a timestamp or a file name, so the same voxels give the same bytes on one machine. It is
deflated at level 1 by Intel ISA-L (``isal``) where installed (a dependency of the toolkit; a
platform without its wheel falls back to the standard library's zlib). The two libraries write
different deflate streams for the same bytes: the decoded voxels are identical, the gzip bytes
are not, so a folder built with one is not byte-identical to a folder built with the other
(``OPENMIND_GZIP=zlib`` chooses zlib). Reading, ISA-L inflates any gzip stream (several members
included) too.

``benchmarks/gzip_codecs.py`` on Colin27 (a real 1 mm head, its voxels and its brain and head
masks), against zlib level 1: ISA-L level 1 deflates the image 7.1x and the masks 8.6-8.8x
faster, the image 4% larger and the masks 11-24% smaller; it inflates the image 2.0x and the
masks 1.8-2.2x faster. A reader on zlib (nibabel's default) inflates ISA-L's image streams 1.15x
faster than zlib's own, its mask streams at about half the speed. zlib's run-length strategy
would make the masks 45% smaller but deflate and inflate them 3x slower than zlib level 1
(inflating distance-1 matches is a byte-by-byte copy); higher zlib levels compress the noisy
image no better.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Any, Final

_igzip: Any
try:
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal_zlib

    _ERRORS: tuple[Any, ...] = (zlib.error, _isal_zlib.error)
except ImportError:  # no wheel for this platform: the standard library does it all
    _igzip = None
    _ERRORS = (zlib.error,)

__all__ = ["GZIP_ENV", "gunzip", "gzip_bytes"]

#: Set to ``zlib`` to write and read with the standard library even where ISA-L is installed.
GZIP_ENV: Final = "OPENMIND_GZIP"
#: The deflate level, in both libraries (ISA-L's range is 0-3; its level 1 is zlib level 1's size).
LEVEL: Final = 1


def _isal() -> bool:
    return _igzip is not None and os.environ.get(GZIP_ENV, "").lower() != "zlib"


def gzip_bytes(payload: bytes) -> bytes:
    """``payload`` as one gzip member (mtime 0, no name) at :data:`LEVEL`, by ISA-L where
    installed, else by zlib."""
    if _isal():
        assert _igzip is not None
        compressed: bytes = _igzip.compress(payload, LEVEL, mtime=0)
        return compressed
    return gzip.compress(payload, LEVEL, mtime=0)


def gunzip(payload: bytes) -> bytes:
    """The bytes of a gzip stream (every member). A stream cut short raises ``EOFError``, a
    corrupt one ``OSError``, whichever library reads it."""
    try:
        if _isal():
            assert _igzip is not None
            inflated: bytes = _igzip.decompress(payload)
            return inflated
        return gzip.decompress(payload)
    except _ERRORS as error:
        raise OSError(f"corrupt gzip stream: {error}") from error
