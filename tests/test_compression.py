"""The toolkit's gzip: standard streams whichever library writes them, the same decoded bytes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from scipy import ndimage

from openmind_data.compression import GZIP_ENV, gunzip, gzip_bytes
from openmind_data.masks.brain import _cross
from openmind_data.masks.face import ZONE_MM, brain_distance


@pytest.fixture
def payload() -> bytes:
    rng = np.random.default_rng(0)
    return rng.normal(100, 20, (40, 30, 20)).astype(np.int16).tobytes()


@pytest.fixture(params=["isal", "zlib"])
def library(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The gzip library the toolkit is told to use."""
    monkeypatch.setenv(GZIP_ENV, request.param)
    return str(request.param)


def test_the_libraries_write_different_streams(
    payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(GZIP_ENV, "zlib")
    with_zlib = gzip_bytes(payload)
    monkeypatch.setenv(GZIP_ENV, "isal")
    assert gzip_bytes(payload) != with_zlib  # the setting reaches the writer
    assert gzip.decompress(gzip_bytes(payload)) == gzip.decompress(with_zlib)


def test_every_library_writes_standard_gzip(payload: bytes, library: str) -> None:
    stream = gzip_bytes(payload)
    assert gzip.decompress(stream) == payload  # any reader opens it
    assert gunzip(stream) == payload
    assert gzip_bytes(payload) == stream  # no timestamp: same bytes, same stream
    mask = (np.frombuffer(payload, np.int16) > 100).astype(np.uint8).tobytes()
    assert gzip.decompress(gzip_bytes(mask)) == mask


def test_a_cut_or_corrupt_stream_is_an_error(payload: bytes, library: str) -> None:
    stream = gzip_bytes(payload)
    with pytest.raises(EOFError):
        gunzip(stream[: len(stream) // 2])
    with pytest.raises(OSError):
        gunzip(stream[:10] + b"\xff" * 64 + stream[74:])


def test_the_cross_opening_is_scipys() -> None:
    rng = np.random.default_rng(1)
    for share in (0.5, 0.9, 0.97):
        mask = rng.random((17, 12, 9)) < share
        assert np.array_equal(
            _cross(mask, np.logical_and), ndimage.binary_erosion(mask, border_value=1)
        )
        assert np.array_equal(_cross(mask, np.logical_or), ndimage.binary_dilation(mask))


def test_brain_distance_is_scipys_edt_within_the_zone() -> None:
    # A grid far larger than the brain and the zone around it: scipy's distances wherever they
    # are within ZONE_MM, and only farther ones (infinite here) beyond.
    brain = np.zeros((150, 140, 120), dtype=bool)
    brain[60:80, 50:70, 40:52] = True
    brain[70:75, 20:50, 45:50] = True  # not a box: the nearest brain voxel varies
    spacing = (0.9375, 0.9375, 1.2)
    expected = ndimage.distance_transform_edt(~brain, sampling=spacing)
    distance = brain_distance(brain, spacing)
    near = expected <= ZONE_MM
    np.testing.assert_allclose(distance[near], expected[near], atol=1e-4)
    assert (distance[~near] > ZONE_MM).all()
    assert np.isinf(distance).any()  # the grid's corners lie beyond the grown box
    assert np.isinf(brain_distance(np.zeros((5, 5, 5), dtype=bool), spacing)).all()
    # Asked where a check looks (a corner region, a short reach): exact there, never nearer
    # than scipy's anywhere.
    where = np.zeros(brain.shape, dtype=bool)
    where[75:110, 60:100, 30:60] = True
    for reach in (2.0, 12.0):
        distance = brain_distance(brain, spacing, where=where, reach=reach)
        near = where & (expected <= reach)
        assert near.any()
        np.testing.assert_allclose(distance[near], expected[near], atol=1e-4)
        assert (distance[where & ~near] > reach).all()
        assert (distance >= expected - 1e-4).all()
