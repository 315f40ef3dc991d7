"""The toolkit's NIfTI writing: deterministic bytes, a given scaling, edits in stored units."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np

from openmind_data.nifti import edit_stored, encode_nifti, scaling_of


def _decode(payload: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(payload))


def test_a_given_scaling_is_kept_with_the_stored_integers() -> None:
    raw = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    like = nib.Nifti1Image(raw, np.diag([2.0, 2.0, 3.0, 1.0]))
    payload = encode_nifti(raw, like, scaling=(0.5, 10.0))
    assert payload == encode_nifti(raw, like, scaling=(0.5, 10.0))  # same voxels, same bytes
    image = _decode(payload)
    assert image.get_data_dtype() == np.int16 and scaling_of(image) == (0.5, 10.0)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj.get_unscaled()), raw)
    np.testing.assert_allclose(image.affine, like.affine)
    assert scaling_of(_decode(encode_nifti(raw, like))) == (1.0, 0.0)


def test_an_edit_goes_back_in_stored_units_and_leaves_the_rest_bit_for_bit() -> None:
    raw = np.array([[[3, 7, 9, 11]]], dtype=np.int16)
    before = raw * np.float32(0.5) + np.float32(10.0)
    after = before.copy()
    after[0, 0, 1:3] = 10.0  # a defacing to the fill value
    edited = edit_stored(raw, before, after, (0.5, 10.0))
    assert edited.dtype == np.int16 and edited.tolist() == [[[3, 0, 0, 11]]]
    assert edit_stored(raw, before, before, (0.5, 10.0)) is raw
    floats = np.array([[[1e-7, 0.3, 0.7]]], dtype=np.float32)
    fill = floats.copy()
    fill[0, 0, 1:] = 1e-7
    # A float image keeps a fractional fill: nothing is rounded to an integer.
    assert edit_stored(floats, floats, fill, (1.0, 0.0)).tolist() == fill.tolist()
