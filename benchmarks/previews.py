"""Preview benchmark: what a shard row's preview adds to the unit of work.

On Colin27 (a real 1 mm T1 head with its face, ``make real-mri``) through the toolkit's masks as
the build makes them (the template brain masker, defacing where the face shows), in one
process, the best of ``--repeat`` runs:

- drawing the preview (:func:`openmind_data.planes.preview_png`, with the RAS view it needs);
- the reference: the unit's NIfTI bytes, the image and its three masks deflated by
  :func:`openmind_data.nifti.encode_nifti` and :func:`openmind_data.masks.encode_mask`.

It prints the preview's size and the ratio of the two times. Run from the repository root::

    make real-mri && .venv/bin/python benchmarks/previews.py --repeat 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from timing import best

from openmind_data.masks import MaskOptions, mask_image, masker_for
from openmind_data.nifti import encode_mask, encode_nifti
from openmind_data.planes import PREVIEW_MAX_BYTES, Volume, preview_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", type=Path, default=Path(".cache/real-mri/ch2.nii.gz"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    image = nib.load(args.head)
    data = np.asarray(image.dataobj, dtype=np.float32)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    options = MaskOptions(brain="template")
    masked = mask_image(
        data, image.affine, spacing, options, masker_for(options), where=str(args.head)
    )
    masks = {"anatomy": masked.anatomy, "anonymization": masked.anon, "brain": masked.brain}

    def preview() -> bytes:
        return preview_png(Volume.from_arrays(masked.data, image.affine, masks))

    def nifti() -> None:
        encode_nifti(masked.data.astype(np.uint8), image)
        for mask in masks.values():
            if mask is not None:
                encode_mask(mask, image)

    png = preview()
    drawn = best(preview, args.repeat)
    deflated = best(nifti, args.repeat)
    print(f"{args.head} {image.shape} {spacing} mm, defacing {masked.fields['defacing']}")
    print(f"preview: {len(png)} bytes (limit {PREVIEW_MAX_BYTES}), {drawn * 1e3:.1f} ms")
    print(f"NIfTI bytes of the image and its masks: {deflated * 1e3:.1f} ms")
    print(f"preview / NIfTI bytes: {drawn / deflated:.2f}x")


if __name__ == "__main__":
    main()
