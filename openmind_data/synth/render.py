"""Render the phantom as a structural MR image in a native grid, with its ground-truth masks.

One call renders one image from an :class:`AnatomySpec` and a seed: tissue contrast, subject
pose, bias field, degradation, Rician noise, then what uploaders do to images (defacing,
skull-stripping, zero padding). The masks returned are the truth the toolkit's own masks are
measured against.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from openmind_data.synth.artifacts import DEGRADATIONS, apply_degradation, bias_field, rician
from openmind_data.synth.geometry import NativeGrid, pad_grid, sample
from openmind_data.templates import CONTRASTS, HeadPhantom, Tissue, head_phantom

__all__ = [
    "BRAIN_FLAG",
    "AnatomySpec",
    "Rendered",
    "label_codes",
    "phantom_resolution",
    "render_anatomy",
    "sample_phantom",
    "subject_transform",
    "tissue_image",
    "world_coordinates",
]

DefaceStyle = Literal["none", "pydeface", "quickshear"]

BRAIN_FLAG = 16  # added to a voxel's tissue label when it belongs to the brain


@dataclass(frozen=True)
class AnatomySpec:
    """Everything that decides one rendered image, besides its seed."""

    contrast: str
    grid: NativeGrid
    pose: NDArray[np.float64]  # subject transform: native world mm -> phantom mm
    snr: float = 30.0
    bias: float = 0.25  # log peak-to-peak of the scanner's own bias field
    degradation: str | None = None
    severity: int = 0
    deface: DefaceStyle = "none"
    brain_extract: bool = False
    pad: tuple[int, int, int] = (0, 0, 0)
    phase_axis: int = 1
    gamma: float = 1.0  # scanner-specific intensity response
    uniform_background: bool = False  # MP2RAGE UNI images: salt-and-pepper air, not Rayleigh

    def __post_init__(self) -> None:
        if self.contrast not in CONTRASTS:
            raise ValueError(f"unknown contrast {self.contrast!r}; choose from {sorted(CONTRASTS)}")
        if self.degradation is not None and self.degradation not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {self.degradation!r}")
        if not 0 <= self.severity < 4:
            raise ValueError(f"severity must be 0..3, got {self.severity}")


@dataclass(frozen=True)
class Rendered:
    """An image in its native grid and its truth masks (uint8, 0/1) in the same grid."""

    data: NDArray[np.float32]
    grid: NativeGrid
    head: NDArray[np.uint8]  # anatomy present in the image (after defacing / skull-stripping)
    brain: NDArray[np.uint8]
    face: NDArray[np.uint8]  # facial features a defacer must remove (eyes, nose, lower face)
    anon: NDArray[np.uint8]  # voxels the uploader's defacing removed


def subject_transform(rng: np.random.Generator) -> NDArray[np.float64]:
    """A subject's pose and size relative to the template: rotation, scaling, shift."""
    angles = np.radians(rng.normal(0.0, 4.0, size=3))
    scale = rng.uniform(0.92, 1.08)
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rotation = rotation @ r
    pose = np.eye(4)
    pose[:3, :3] = rotation / scale
    pose[:3, 3] = rng.normal(0.0, 3.0, size=3)
    return pose


@lru_cache(maxsize=16)
def tissue_image(resolution: int, contrast: str) -> NDArray[np.float32]:
    """The phantom at ``resolution`` mm as ``contrast`` shows it, before pose, bias or noise:
    each tissue's mean intensity, brain voxels mixed by their partial-volume fractions."""
    phantom = head_phantom(resolution)
    means = CONTRASTS[contrast]
    lut = np.zeros(max(Tissue) + 1, dtype=np.float32)
    for tissue, value in means.items():
        lut[tissue] = value
    image = lut[phantom.labels]
    brain = (phantom.gm + phantom.wm + phantom.csf) > 0
    mixed = (
        phantom.gm * means[Tissue.GM]
        + phantom.wm * means[Tissue.WM]
        + phantom.csf * means[Tissue.CSF]
    )
    image[brain] = mixed[brain]
    # Within-tissue texture, the same for every subject (it is anatomy, not noise).
    texture = ndimage.gaussian_filter(
        np.random.default_rng(1).normal(size=image.shape).astype(np.float32), 1.5
    )
    texture /= texture.std() or 1.0
    image *= 1.0 + 0.04 * texture
    return image


@lru_cache(maxsize=2)
def label_codes(resolution: int) -> NDArray[np.uint8]:
    phantom = head_phantom(resolution)
    brain = (phantom.gm + phantom.wm + phantom.csf) > 0.5
    return (phantom.labels + BRAIN_FLAG * brain).astype(np.uint8)


def phantom_resolution(grid: NativeGrid) -> int:
    """The phantom grid fine enough for ``grid``: 1 mm below 1.5 mm voxels, else 2 mm."""
    return 1 if min(grid.spacing) < 1.5 else 2


def sample_phantom(
    volume: NDArray[Any],
    phantom: HeadPhantom,
    spec_grid: NativeGrid,
    pose: NDArray[np.float64],
    order: int,
) -> NDArray[Any]:
    """Sample a phantom-grid volume at the native voxels of a posed subject."""
    return sample(volume, np.linalg.inv(pose) @ phantom.affine, spec_grid, order=order)


def world_coordinates(grid: NativeGrid, pose: NDArray[np.float64]) -> NDArray[np.float32]:
    """Phantom-frame millimetres of every native voxel centre, shape (3, *grid.shape)."""
    index = np.indices(grid.shape, dtype=np.float32).reshape(3, -1)
    m = (pose @ grid.affine).astype(np.float32)
    world = m[:3, :3] @ index + m[:3, 3:4]
    return world.reshape(3, *grid.shape)


def render_anatomy(spec: AnatomySpec, rng: np.random.Generator) -> Rendered:
    resolution = phantom_resolution(spec.grid)
    phantom = head_phantom(resolution)
    clean = sample_phantom(
        tissue_image(resolution, spec.contrast), phantom, spec.grid, spec.pose, order=1
    ).astype(np.float32)
    codes = sample_phantom(label_codes(resolution), phantom, spec.grid, spec.pose, order=0)
    tissue = (codes % BRAIN_FLAG).astype(np.uint8)
    brain = codes >= BRAIN_FLAG
    head = tissue != Tissue.AIR

    bias = spec.bias + (DEGRADATIONS["bias"][spec.severity] if spec.degradation == "bias" else 0.0)
    image = clean**spec.gamma * bias_field(clean.shape, rng, bias)
    if spec.degradation is not None:
        image = apply_degradation(
            image, spec.degradation, spec.severity, rng, phase_axis=spec.phase_axis
        )
    noise_scale = DEGRADATIONS["noise"][spec.severity] if spec.degradation == "noise" else 1.0
    sigma = float(np.percentile(clean[brain], 95)) / spec.snr if brain.any() else 0.02
    image = rician(image, sigma * noise_scale, rng)
    if spec.uniform_background:
        air = ~ndimage.binary_dilation(head, iterations=2)
        image[air] = rng.uniform(0.0, 0.6, size=int(air.sum())).astype(np.float32)

    world = world_coordinates(spec.grid, spec.pose)
    face = _face_truth(tissue, world)
    anon = (
        _deface_region(spec.deface, brain, world, spec.grid)
        if spec.deface != "none"
        else (np.zeros(image.shape, dtype=bool))
    )
    image[anon] = 0.0
    anatomy = head & ~anon
    if spec.brain_extract:
        image[~brain] = 0.0
        anatomy = brain.copy()

    pad = tuple((p, p) for p in spec.pad)
    grid = pad_grid(spec.grid, spec.pad) if any(spec.pad) else spec.grid

    def finish(mask: NDArray[np.bool_]) -> NDArray[np.uint8]:
        return np.pad(mask, pad).astype(np.uint8)

    return Rendered(
        data=np.pad(image, pad).astype(np.float32),
        grid=grid,
        head=finish(anatomy),
        brain=finish(brain),
        face=finish(face & ~brain),
        anon=finish(anon),
    )


def _face_truth(tissue: NDArray[np.uint8], world: NDArray[np.float32]) -> NDArray[np.bool_]:
    _x, y, z = world
    features = (tissue == Tissue.EYE) | ((tissue == Tissue.CARTILAGE) & (y > 60.0))
    lower_face = (tissue != Tissue.AIR) & (y > 55.0) & (z < -30.0)
    return features | lower_face  # type: ignore[no-any-return]


_SHEAR_NORMAL = np.array([0.0, 1.0, -1.1]) / np.linalg.norm([0.0, 1.0, -1.1])


def _deface_region(
    style: DefaceStyle, brain: NDArray[np.bool_], world: NDArray[np.float32], grid: NativeGrid
) -> NDArray[np.bool_]:
    """Voxels an uploader's defacing set to zero, air included."""
    x, y, z = world
    if style == "quickshear":
        # A plane tangent to the brain, offset a few millimetres: all anterior-inferior of it.
        along = np.tensordot(_SHEAR_NORMAL.astype(np.float32), world, axes=1)
        limit = float(along[brain].max()) + 4.0 if brain.any() else 60.0
        return along > limit
    # pydeface: a registered template face mask: a block in front of and below the brain,
    # kept clear of the brain by a margin.
    block = (y > 10.0) & (z < 6.0) & (np.abs(x) < 80.0) & (z > -135.0)
    near_brain = ndimage.distance_transform_edt(~brain, sampling=grid.spacing) < 8.0
    return block & ~near_brain  # type: ignore[no-any-return]
