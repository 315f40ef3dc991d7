"""Gzip benchmark: the codecs the toolkit writes NIfTI with, against the standard library's zlib.

On Colin27 (a real 1 mm T1 head from Debian's mricron-data, ``make real-mri``): its voxels as
stored (uint8: Colin27 is an average of scans; most scanners write int16), and as masks its
brain (``ch2bet`` above zero) and its head (the toolkit's anatomy mask), uint8 0/1 as the
toolkit writes them. Per payload and codec, in one process, the best of ``--repeat`` runs:

- compress and decompress time, as a ratio to zlib level 1 (the reference: what
  ``gzip.compress(data, 1)`` and ``gzip.decompress`` cost) and the compressed size;
- images: zlib level 1 and 6, ISA-L (``isal.igzip``) levels 0-2;
- masks: zlib level 1 and 6, zlib level 1 with the run-length strategy, ISA-L level 1 (the
  toolkit's, as for images).

Every stream is checked to decode, by the standard library, to the same bytes.

Run from the repository root::

    make real-mri && .venv/bin/python benchmarks/gzip_codecs.py --repeat 5
"""

from __future__ import annotations

import argparse
import gzip
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip
from timing import best

from openmind_data.masks import foreground

REAL_MRI = Path(".cache/real-mri")
Codec = Callable[[bytes], bytes]


def _zlib(level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> Codec:
    def compress(data: bytes) -> bytes:
        deflate = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 8, strategy)
        return deflate.compress(data) + deflate.flush()

    return compress


def _isal(level: int) -> Codec:
    return lambda data: igzip.compress(data, level, mtime=0)


IMAGE_CODECS: dict[str, Codec] = {
    "zlib 1 (reference)": _zlib(1),
    "zlib 6": _zlib(6),
    "isal 0": _isal(0),
    "isal 1 (toolkit)": _isal(1),
    "isal 2": _isal(2),
}
MASK_CODECS: dict[str, Codec] = {
    "zlib 1 (reference)": _zlib(1),
    "zlib 6": _zlib(6),
    "zlib 1 run-length": _zlib(1, zlib.Z_RLE),
    "isal 1 (toolkit)": _isal(1),
}


def measure(name: str, payload: bytes, codecs: dict[str, Codec], repeat: int) -> None:
    print(f"\n{name}: {len(payload) / 1e6:.1f} MB")
    print(f"  {'codec':<28} {'size MB':>8} {'compress':>9} {'inflate zlib':>13} {'isal':>6}")
    reference: tuple[float, float] | None = None
    for label, codec in codecs.items():
        stream = codec(payload)
        if gzip.decompress(stream) != payload:
            raise SystemExit(f"{label} does not decode to its input")
        deflate = best(partial(codec, payload), repeat)
        inflate = best(partial(gzip.decompress, stream), repeat)
        fast = best(partial(igzip.decompress, stream), repeat)
        if reference is None:
            reference = (deflate, inflate)
        print(
            f"  {label:<28} {len(stream) / 1e6:8.2f} {reference[0] / deflate:8.2f}x "
            f"{reference[1] / inflate:12.2f}x {reference[1] / fast:5.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--real-mri", type=Path, default=REAL_MRI)
    args = parser.parse_args()
    head = args.real_mri / "ch2.nii.gz"
    brain = args.real_mri / "ch2bet.nii.gz"
    if not head.exists():
        raise SystemExit(f"{head} not found: run `make real-mri` first")
    image = nib.load(head)
    voxels = np.asanyarray(image.dataobj)
    print(f"Colin27 {voxels.shape} {voxels.dtype}; speeds as multiples of zlib level 1's")
    measure("image (as stored)", voxels.tobytes(), IMAGE_CODECS, args.repeat)
    brain_mask = np.asanyarray(nib.load(brain).dataobj) > 0
    measure("brain mask (uint8)", brain_mask.astype(np.uint8).tobytes(), MASK_CODECS, args.repeat)
    head_mask = foreground(voxels, image.header.get_zooms()).anatomy
    measure("head mask (uint8)", head_mask.astype(np.uint8).tobytes(), MASK_CODECS, args.repeat)


if __name__ == "__main__":
    main()
