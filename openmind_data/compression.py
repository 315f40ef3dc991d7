"""Gzip as the toolkit writes and reads it: standard streams, made by the fastest library here.

Every NIfTI the toolkit publishes is a plain gzip stream (any reader opens it) without a
timestamp or a file name, so the same voxels give the same bytes on one machine.

- **Images** are deflated at level 1 (noisy voxels compress barely better at higher levels) by
  Intel ISA-L (``isal``), about eight times faster than the standard library's zlib at the same
  size, where it is installed (a dependency of the toolkit; a platform without its wheel falls
  back to zlib). The two libraries write different deflate streams for the same bytes: the
  decoded voxels are identical, the gzip bytes are not, so a folder built with one is not
  byte-identical to a folder built with the other (``OPENMIND_GZIP=zlib`` chooses zlib).
- **Masks** (uint8 0 and 1: long runs) are deflated by zlib's run-length strategy: 45% smaller
  than level 1 at about its speed, and the same bytes whichever library images use.
- **Reading**: ISA-L decompresses about 2.3 times faster than zlib; both read any gzip stream,
  several members included.

Measured by hand on one synthetic 1 mm T1 (images, 19.8 MB of int16) and on Colin27's brain and
head masks (a real 1 mm head); ``benchmarks/build.py`` prints the I/O floor with both libraries.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Any, Final, Literal

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
#: Deflate levels: ISA-L's range is 0-3, and its level 1 is zlib level 1's size.
IMAGE_LEVEL: Final = 1
MASK_LEVEL: Final = 1


def _isal() -> bool:
    return _igzip is not None and os.environ.get(GZIP_ENV, "").lower() != "zlib"


def gzip_bytes(payload: bytes, kind: Literal["image", "mask"] = "image") -> bytes:
    """``payload`` as one gzip member (mtime 0, no name): a mask by zlib's run-length
    strategy, anything else at :data:`IMAGE_LEVEL` by ISA-L where installed, else by zlib."""
    if kind == "mask":
        # wbits 16 + 15: zlib writes the gzip header itself (mtime 0, no name).
        deflate = zlib.compressobj(MASK_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)
        return deflate.compress(payload) + deflate.flush()
    if _isal():
        assert _igzip is not None
        compressed: bytes = _igzip.compress(payload, IMAGE_LEVEL, mtime=0)
        return compressed
    return gzip.compress(payload, IMAGE_LEVEL, mtime=0)


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
