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


def test_the_bytes_are_nibabels_for_every_stored_type_and_order() -> None:
    # The grid and units come from ``like``, the voxels as given: the same file as nibabel's
    # own writer, byte for byte, for C and Fortran arrays, native and swapped byte orders.
    rng = np.random.default_rng(3)
    affine = np.array([[0, 0, -1.2, 90], [0.9, 0, 0, -126], [0, 1.1, 0, -72], [0, 0, 0, 1.0]])
    like = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), affine)
    like.header.set_qform(affine, code=1)
    like.header.set_sform(affine, code=4)
    for dtype in ("u1", "i1", "<i2", ">i2", "<u2", "<i4", "<f4", ">f4", "<f8"):
        data = (rng.random((7, 6, 5)) * 100).astype(dtype)
        for array in (data, np.asfortranarray(data), data[:, ::-1]):
            reference = nib.Nifti1Image(array, like.affine)
            reference.header.set_xyzt_units("mm", "sec")
            reference.set_qform(affine, code=1)
            reference.set_sform(affine, code=4)
            assert gzip.decompress(encode_nifti(array, like)) == reference.to_bytes(), dtype
