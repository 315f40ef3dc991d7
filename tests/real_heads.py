"""Real MRI heads for the tests and benchmarks, and the variations made of them.

Two real heads come from packages, never from the network at run time:

- pydeface's wheel (PyPI ``pydeface``, installed without its dependencies by ``make``) ships a
  real mean T1 head with its face and noisy air (``mean_reg2mean.nii.gz``) and pydeface's face
  mask in that grid (``facemask.nii.gz``, 0 = face). Their product is a real pydeface defacing
  whose anonymization truth is exact.
- Debian's ``mricron-data`` ships Colin27 (``ch2.nii.gz``: a real single-subject 1 mm T1 head
  with its face, and air that is exactly zero) and its brain extraction (``ch2bet.nii.gz``).
  ``make`` takes the package with ``apt-get download`` and unpacks it into ``.cache/real-mri``
  (or ``$OPENMIND_REAL_MRI``); tests that need it skip, saying why, where it is not there.

The brain truth is ``ch2bet`` closed by a 4 mm ball, holes filled: ch2bet leaves out the CSF of
the sulci, which every brain masker here keeps (the brain mask is brain with its CSF). Dice
against ch2bet as it is, is reported beside it by ``benchmarks/masks.py``.

Variations (:data:`VARIATIONS`) change how the same head is stored, never what it shows: axis
flips and permutations, int16 with a scl_slope, uint8, 4 mm slices, an oblique affine, a
singleton fourth axis, zero-filled wedges from an oblique resampling, a field of view that cuts
the top of the head, zeroed air. Degradations (:data:`DEGRADATIONS`, :func:`degraded`) change
what it shows, at three severities: noise, blur, a bias field, ghosting and motion.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from openmind_data.masks import MaskedImage, MaskOptions, brain_masker, mask_image
from openmind_data.synth.artifacts import DEGRADATIONS as DEGRADATIONS_SYNTH
from openmind_data.synth.artifacts import apply_degradation, bias_field, rician

ROOT = Path(__file__).resolve().parents[1]
#: Where ``make`` unpacks mricron-data's templates.
MRICRON = Path(os.environ.get("OPENMIND_REAL_MRI", ROOT / ".cache" / "real-mri"))
WHY_NO_COLIN = (
    f"Colin27 (Debian mricron-data) is not in {MRICRON}: `make real-mri` unpacks it there "
    "(apt-get download mricron-data; needs Debian's package lists)"
)


@dataclass(frozen=True)
class Head:
    """One real head as stored: voxels (stored type), affine, slope, and what is true of it.

    ``face``: whether it shows a face; ``brain``/``anon``: truth masks in its grid, or None."""

    name: str
    data: NDArray[np.generic]
    affine: NDArray[np.float64]
    face: bool
    brain: NDArray[np.bool_] | None = None
    anon: NDArray[np.bool_] | None = None
    brain_extract: bool = False
    slope: float = 1.0

    def image(self) -> nib.Nifti1Image:
        image = nib.Nifti1Image(self.data, self.affine)
        if self.slope != 1.0:
            image.header.set_slope_inter(self.slope, 0.0)
        return image

    @property
    def values(self) -> NDArray[np.float32]:
        """Scaled voxels, 3D (a singleton fourth axis dropped)."""
        data = np.asarray(self.data, dtype=np.float32) * np.float32(self.slope)
        return data.reshape(data.shape[:3])

    @property
    def spacing(self) -> tuple[float, float, float]:
        zooms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(zooms[0]), float(zooms[1]), float(zooms[2]))


def pydeface_files() -> tuple[Path, Path]:
    data = importlib.resources.files("pydeface") / "data"
    return Path(str(data / "mean_reg2mean.nii.gz")), Path(str(data / "facemask.nii.gz"))


def have_colin() -> bool:
    return (MRICRON / "ch2.nii.gz").is_file() and (MRICRON / "ch2bet.nii.gz").is_file()


def _ball(radius: int) -> NDArray[np.bool_]:
    grid = np.indices((2 * radius + 1,) * 3) - radius
    ball: NDArray[np.bool_] = (grid**2).sum(axis=0) <= radius * radius
    return ball


@lru_cache(maxsize=1)
def colin() -> tuple[Head, Head]:
    """Colin27 with its face, and its brain extraction (ch2bet)."""
    head = nib.load(MRICRON / "ch2.nii.gz")
    bet = nib.load(MRICRON / "ch2bet.nii.gz")
    extracted = np.asarray(bet.dataobj)
    padded = np.pad(extracted > 0, 8)
    closed = ndimage.binary_closing(padded, _ball(4))[8:-8, 8:-8, 8:-8]
    brain = ndimage.binary_fill_holes(closed)
    face = Head("colin27", np.asarray(head.dataobj), head.affine, True, brain=brain)
    stripped = Head(
        "colin27-bet", extracted, bet.affine, False, brain=extracted > 0, brain_extract=True
    )
    return face, stripped


@lru_cache(maxsize=1)
def pydeface_heads() -> tuple[Head, Head]:
    """pydeface's mean head with its face, and the same head defaced by pydeface's mask."""
    head_path, mask_path = pydeface_files()
    head = nib.load(head_path)
    keep = np.asarray(nib.load(mask_path).dataobj) >= 0.5
    data = np.asarray(head.dataobj)
    with_face = Head("pydeface-mean", data, head.affine, True)
    defaced = Head(
        "pydeface-defaced",
        (data * keep).astype(data.dtype),
        head.affine,
        False,
        anon=~keep,
    )
    return with_face, defaced


# -- variations ------------------------------------------------------------------------------------
def _remap(
    head: Head, data: NDArray[np.generic], affine: NDArray[np.float64], **kw: object
) -> Head:
    return replace(head, data=data, affine=affine, **kw)  # type: ignore[arg-type]


def flipped(head: Head) -> Head:
    """Axes permuted (y, x, z) and the new first axis flipped: the same world, another grid."""

    def move(a: NDArray[np.generic] | None) -> NDArray[np.generic] | None:
        return None if a is None else np.ascontiguousarray(np.transpose(a, (1, 0, 2))[::-1])

    n = head.data.shape[1]
    # new[a, b, c] = old[b, n - 1 - a, c]: old index = swap @ new index
    swap = np.array([[0, 1, 0, 0], [-1, 0, 0, n - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    return replace(
        head,
        data=move(head.data),
        affine=head.affine @ swap,
        brain=move(head.brain),
        anon=move(head.anon),
    )


def int16_scaled(head: Head) -> Head:
    """int16 voxels with scl_slope 0.25: the same values, stored as a scanner might."""
    values = head.values
    stored = np.round(values / 0.25).astype(np.int16)
    return replace(head, data=stored, slope=0.25)


def uint8(head: Head) -> Head:
    values = head.values
    stored = np.round(255 * values / float(values.max())).astype(np.uint8)
    return replace(head, data=stored, slope=1.0)


def thick_slices(head: Head, mm: int = 4) -> Head:
    """Slices of ``mm`` along the third axis: blocks of voxels averaged (a 2D acquisition)."""
    values = head.values
    n = values.shape[2] // mm * mm

    def block(a: NDArray[np.generic], how: str) -> NDArray[np.generic]:
        b = np.asarray(a)[:, :, :n].reshape(a.shape[0], a.shape[1], n // mm, mm)
        return b.mean(axis=3) if how == "mean" else (b.mean(axis=3) >= 0.5)

    affine = head.affine.copy()
    affine[:3, 2] *= mm
    affine[:3, 3] += head.affine[:3, 2] * (mm - 1) / 2
    return replace(
        head,
        data=block(values, "mean").astype(np.float32),
        affine=affine,
        slope=1.0,
        brain=None if head.brain is None else block(head.brain, "mask"),
        anon=None if head.anon is None else block(head.anon, "mask"),
    )


def _rotation(degrees: float, centre: NDArray[np.float64]) -> NDArray[np.float64]:
    """A world rotation about the left-right axis through ``centre`` (pitch)."""
    t = np.deg2rad(degrees)
    r = np.eye(4)
    r[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    shift, back = np.eye(4), np.eye(4)
    shift[:3, 3], back[:3, 3] = -centre, centre
    return back @ r @ shift


def _centre(head: Head) -> NDArray[np.float64]:
    middle = (np.array(head.data.shape[:3]) - 1) / 2
    return head.affine[:3, :3] @ middle + head.affine[:3, 3]


def oblique(head: Head, degrees: float = 15.0) -> Head:
    """The same voxels under an affine rotated by ``degrees``: an oblique acquisition."""
    return replace(head, affine=_rotation(degrees, _centre(head)) @ head.affine)


def resampled_oblique(head: Head, degrees: float = 12.0) -> Head:
    """The head rotated in its own grid by linear resampling, outside filled with zeros: the
    zero wedges an oblique reslicing leaves at the grid's corners."""
    voxel_rotation = np.linalg.inv(head.affine) @ _rotation(degrees, _centre(head)) @ head.affine

    def warp(a: NDArray[np.generic], order: int) -> NDArray[np.generic]:
        return ndimage.affine_transform(
            np.asarray(a, dtype=np.float32),
            voxel_rotation[:3, :3],
            offset=voxel_rotation[:3, 3],
            order=order,
            mode="constant",
            cval=0.0,
        )

    return replace(
        head,
        data=np.maximum(warp(head.values, 1), 0).astype(np.float32),
        slope=1.0,
        brain=None if head.brain is None else warp(head.brain, 0) > 0.5,
        anon=None if head.anon is None else warp(head.anon, 0) > 0.5,
    )


def cut_top(head: Head, mm: float = 25.0) -> Head:
    """The top ``mm`` of the head outside the field of view: a slab that misses the vertex, not
    the face (the superior axis is found from the affine, whatever the voxel order)."""
    axis = int(np.argmax(np.abs(head.affine[2, :3])))
    keep = head.data.shape[axis] - round(mm / head.spacing[axis])
    upward = head.affine[2, axis] > 0
    index = [slice(None)] * head.data.ndim
    index[axis] = slice(0, keep) if upward else slice(head.data.shape[axis] - keep, None)
    affine = head.affine.copy()
    if not upward:
        affine[:3, 3] += affine[:3, axis] * (head.data.shape[axis] - keep)

    def crop(a: NDArray[np.generic] | None) -> NDArray[np.generic] | None:
        return None if a is None else np.ascontiguousarray(a[tuple(index[:3])])

    return replace(
        head,
        data=np.ascontiguousarray(head.data[tuple(index)]),
        affine=affine,
        brain=crop(head.brain),
        anon=crop(head.anon),
    )


def singleton_axis(head: Head) -> Head:
    return replace(head, data=head.data[..., None])


def zeroed_air(head: Head) -> Head:
    """Air set to exactly zero (as some converters and uploaders do), the face left in place."""
    values = head.values
    level = 0.1 * float(np.percentile(values[values > 0], 99))
    body = ndimage.binary_fill_holes(ndimage.binary_opening(values > level, iterations=2))
    labels, count = ndimage.label(body)
    if count > 1:
        body = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return replace(head, data=np.where(body, values, 0).astype(np.float32), slope=1.0)


VARIATIONS: dict[str, Callable[[Head], Head]] = {
    "as-stored": lambda head: head,
    "flipped": flipped,
    "int16-slope": int16_scaled,
    "uint8": uint8,
    "4mm-slices": thick_slices,
    "oblique-15deg": oblique,
    "singleton-4th-axis": singleton_axis,
    "resampled-wedges": resampled_oblique,
    "top-cut": cut_top,
    "zeroed-air": zeroed_air,
}


#: Kind -> the parameter of severities 1, 2, 3 on a real head. noise: SD of added complex
#: Gaussian noise (the magnitude is Rician) as a share of the head's 99th percentile; the others
#: as the synthetic generator's (openmind_data.synth.artifacts.DEGRADATIONS): blur sigma in
#: voxels, bias log peak-to-peak, ghost intensity, share of k-space lines moved.
DEGRADATIONS: dict[str, tuple[float, float, float]] = {
    "noise": (0.02, 0.05, 0.10),
    "blur": DEGRADATIONS_SYNTH["blur"][1:],  # type: ignore[dict-item]
    "bias": DEGRADATIONS_SYNTH["bias"][1:],  # type: ignore[dict-item]
    "ghosting": DEGRADATIONS_SYNTH["ghosting"][1:],  # type: ignore[dict-item]
    "motion": DEGRADATIONS_SYNTH["motion"][1:],  # type: ignore[dict-item]
}
#: The anterior-posterior axis of both real heads' grids: the phase-encode axis of a sagittal
#: or axial T1 acquisition, where ghosts and motion lines fall.
PHASE_AXIS = 1


def degraded(head: Head, kind: str, severity: int, seed: int = 0) -> Head:
    """``head`` degraded by ``kind`` at ``severity`` (1-3), stored as float32; the same seed
    gives the same noise, field or lines at every severity."""
    values = head.values
    rng = np.random.default_rng(seed)
    level = DEGRADATIONS[kind][severity - 1]
    if kind == "noise":
        sigma = level * float(np.percentile(values, 99))
        out = rician(values, sigma, rng)
    elif kind == "bias":
        out = values * bias_field(values.shape, rng, level)
    else:
        out = apply_degradation(values, kind, severity, rng, phase_axis=PHASE_AXIS)
    return replace(
        head, name=f"{head.name}/{kind}-{severity}", data=out.astype(np.float32), slope=1.0
    )


def masked(head: Head, modality: str | None = None, **options: Any) -> MaskedImage:
    """``head`` through the toolkit's masks stage with ``MaskOptions(**options)``."""
    chosen = MaskOptions(**options)
    return mask_image(
        head.values,
        head.affine,
        head.spacing,
        chosen,
        brain_masker(chosen.brain),
        where=head.name,
        modality=modality,
    )


def with_faces() -> list[Head]:
    """Every real head with a face that is here, under every variation."""
    heads = [pydeface_heads()[0]]
    if have_colin():
        heads.append(colin()[0])
    return [
        replace(vary(head), name=f"{head.name}/{name}")
        for head in heads
        for name, vary in VARIATIONS.items()
    ]


def save(head: Head, path: Path) -> Path:
    nib.save(head.image(), path)
    return path
