"""The planes the previews and the QC browser draw (``openmind_data.planes``): RAS views of any
stored orientation with the right voxel sizes, and previews that fit their byte limit, on
pydeface's real mean head (its face mask as the anonymization mask)."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
from PIL import Image

from openmind_data.planes import MASK_COLOURS, PREVIEW_MAX_BYTES, Volume, preview_png
from tests.real_heads import pydeface_heads


def test_a_permuted_anisotropic_grid_is_viewed_in_ras_with_its_voxel_sizes() -> None:
    # Stored axes: 0 runs posterior to anterior (2 mm), 1 inferior to superior (3 mm), 2 left
    # to right, flipped (1 mm): an ASL-like sagittal acquisition.
    affine = np.array([[0, 0, -1.0, 30], [2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]])
    data = np.arange(10 * 20 * 30, dtype=np.float32).reshape(10, 20, 30)
    volume = Volume.from_arrays(data, affine, {"anatomy": data > 100})
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    assert volume.shape == canonical.shape == (30, 10, 20)
    assert volume.spacing == (1.0, 2.0, 3.0) == canonical.header.get_zooms()
    assert np.array_equal(volume.data, canonical.get_fdata(dtype=np.float32))
    assert np.array_equal(volume.masks["anatomy"], volume.data > 100)
    # A sagittal plane is (superior rows) x (anterior columns), pixel sizes (3 mm, 2 mm).
    picture, _, sizes = volume.plane("sagittal", 3)
    assert picture.shape == (20, 10) and sizes == (3.0, 2.0)
    assert np.array_equal(picture[::-1].T, volume.data[3])


def test_the_preview_of_a_real_head_fits_and_outlines_every_mask() -> None:
    head, defaced = pydeface_heads()
    data = defaced.values
    anatomy = data > np.percentile(data, 60)
    masks = {"anatomy": anatomy, "anonymization": defaced.anon, "brain": None}
    volume = Volume.from_arrays(data, defaced.affine, masks)
    png = preview_png(volume)
    assert len(png) <= PREVIEW_MAX_BYTES
    assert preview_png(Volume.from_arrays(data, defaced.affine, masks)) == png  # same bytes
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.height == 128 and picture.width > 2 * 128
    colours = {tuple(c) for c in np.asarray(picture.convert("RGB")).reshape(-1, 3)}
    assert MASK_COLOURS["anatomy"] in colours and MASK_COLOURS["anonymization"] in colours
    assert MASK_COLOURS["brain"] not in colours  # no brain mask given, none drawn
    assert volume.centre() == tuple(
        (int(np.flatnonzero(volume.masks["anatomy"].any(axis=others))[[0, -1]].sum())) // 2
        for others in ((1, 2), (0, 2), (0, 1))
    )
    assert head.face  # the head the mask defaced showed one


def test_a_preview_of_noise_still_fits() -> None:
    noise = np.random.default_rng(0).random((256, 256, 256), dtype=np.float32)
    png = preview_png(Volume.from_arrays(noise, np.eye(4), {"anatomy": noise > -1}))
    assert len(png) <= PREVIEW_MAX_BYTES
    assert Image.open(io.BytesIO(png)).height <= 128
