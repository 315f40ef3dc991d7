"""The head template: a head phantom built around real brain anatomy, and its tissue contrasts.

The brain is the MNI152 2009c symmetric template that ships inside nilearn's wheel (its T1
image is skull-stripped, with grey- and white-matter probability maps beside it), so sulci,
ventricles and the cerebellum are real. Around it this module builds what a head MRI also shows
and a curator must handle: cerebrospinal fluid, skull, scalp, a face with nose and eyes, ears and
a neck. Everything lives in MNI world coordinates (RAS+, millimetres): the synthetic collection
samples native images from it (:mod:`openmind_data.synth`), and the template brain masker
registers its T1w rendering to each image (:mod:`openmind_data.masks.brain`); both import it
from here.

The label volume is the ground truth for every mask: head, brain, face (what defacing must
remove) and tissue classes.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = [
    "CONTRASTS",
    "FACE_TISSUES",
    "PHANTOM_VERSION",
    "HeadPhantom",
    "Tissue",
    "cache_dir",
    "head_phantom",
    "mni_template_files",
]

#: Bump when the phantom's construction changes, so cached copies are rebuilt.
PHANTOM_VERSION = 1


class Tissue(IntEnum):
    """Labels of the phantom's label volume."""

    AIR = 0
    CSF = 1
    GM = 2
    WM = 3
    BONE = 4
    FAT = 5  # scalp and subcutaneous fat
    MUSCLE = 6  # face, tongue, neck
    EYE = 7
    CARTILAGE = 8  # nose and ears


#: Labels a defacing algorithm is meant to remove.
FACE_TISSUES = (Tissue.EYE, Tissue.CARTILAGE)

_T = Tissue
#: Mean intensity of each tissue per contrast (relative units; grey/white matter and CSF mix by
#: their partial-volume fractions).
CONTRASTS: dict[str, dict[Tissue, float]] = {
    "T1w": {_T.CSF: .15, _T.GM: .55, _T.WM: .85, _T.BONE: .05, _T.FAT: .95, _T.MUSCLE: .35,
            _T.EYE: .10, _T.CARTILAGE: .45},
    "T2w": {_T.CSF: 1.0, _T.GM: .60, _T.WM: .42, _T.BONE: .04, _T.FAT: .70, _T.MUSCLE: .28,
            _T.EYE: .95, _T.CARTILAGE: .40},
    "FLAIR": {_T.CSF: .06, _T.GM: .68, _T.WM: .50, _T.BONE: .04, _T.FAT: .80, _T.MUSCLE: .30,
              _T.EYE: .05, _T.CARTILAGE: .40},
    "PDw": {_T.CSF: .90, _T.GM: .82, _T.WM: .68, _T.BONE: .06, _T.FAT: .85, _T.MUSCLE: .55,
            _T.EYE: .85, _T.CARTILAGE: .60},
    "T2starw": {_T.CSF: .85, _T.GM: .55, _T.WM: .45, _T.BONE: .03, _T.FAT: .50, _T.MUSCLE: .25,
                _T.EYE: .70, _T.CARTILAGE: .30},
    "UNIT1": {_T.CSF: .20, _T.GM: .58, _T.WM: .88, _T.BONE: .10, _T.FAT: .70, _T.MUSCLE: .40,
              _T.EYE: .15, _T.CARTILAGE: .45},
    "MP2RAGE": {_T.CSF: .95, _T.GM: .45, _T.WM: .25, _T.BONE: .05, _T.FAT: .20, _T.MUSCLE: .45,
                _T.EYE: .90, _T.CARTILAGE: .50},
    "inplaneT2": {_T.CSF: 1.0, _T.GM: .62, _T.WM: .44, _T.BONE: .04, _T.FAT: .72, _T.MUSCLE: .28,
                  _T.EYE: .95, _T.CARTILAGE: .40},
    "T1rho": {_T.CSF: .90, _T.GM: .60, _T.WM: .50, _T.BONE: .05, _T.FAT: .60, _T.MUSCLE: .30,
              _T.EYE: .85, _T.CARTILAGE: .40},
}  # fmt: skip


# How far the phantom's box extends beyond the template's (mm): the template box ends at the
# brainstem, the head continues to the chin and neck.
_PAD_MM = {"x": (20, 20), "y": (20, 40), "z": (90, 24)}


def mni_template_files() -> dict[str, str]:
    """Paths of the MNI152 files inside nilearn's wheel (no download involved)."""
    data = files("nilearn.datasets") / "data"
    names = {
        "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
        "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    }
    return {key: str(data / name) for key, name in names.items()}


@dataclass(frozen=True)
class HeadPhantom:
    """Tissue volumes on one grid. ``affine`` maps voxel indices to MNI millimetres."""

    labels: NDArray[np.uint8]  # Tissue, the majority class of each voxel
    gm: NDArray[np.float32]  # partial-volume fractions inside the brain
    wm: NDArray[np.float32]
    csf: NDArray[np.float32]
    affine: NDArray[np.float64]

    @property
    def resolution(self) -> float:
        return float(self.affine[0, 0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.labels.shape

    def world_grid(self) -> tuple[NDArray[np.float32], ...]:
        """x, y, z world coordinates of every voxel, broadcastable (open grid)."""
        axes = [
            (self.affine[i, i] * np.arange(n) + self.affine[i, 3]).astype(np.float32)
            for i, n in enumerate(self.shape)
        ]
        return tuple(np.ix_(*axes))


def cache_dir() -> Path:
    """Where derived, re-creatable files go: $OPENMIND_CACHE, else ~/.cache/openmind."""
    configured = os.environ.get("OPENMIND_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "openmind"


@lru_cache(maxsize=2)
def head_phantom(resolution: int = 2) -> HeadPhantom:
    """The phantom at 1 or 2 mm: built once (seconds), then read from the cache directory."""
    if resolution not in (1, 2):
        raise ValueError(f"resolution must be 1 or 2 mm, got {resolution}")
    path = cache_dir() / f"head-phantom-v{PHANTOM_VERSION}-{resolution}mm.npz"
    if path.is_file():
        with np.load(path) as stored:
            return HeadPhantom(**{name: stored[name] for name in stored.files})
    phantom = _build(resolution)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so parallel processes never read a half-written cache file.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        np.savez(
            tmp,
            labels=phantom.labels,
            gm=phantom.gm,
            wm=phantom.wm,
            csf=phantom.csf,
            affine=phantom.affine,
        )
    Path(tmp.name).replace(path)
    return phantom


def _build(resolution: int) -> HeadPhantom:
    paths = mni_template_files()
    t1_img = nib.load(paths["t1"])
    gm = np.asarray(nib.load(paths["gm"]).dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(nib.load(paths["wm"]).dataobj, dtype=np.float32) / 255.0
    brain = np.asarray(t1_img.dataobj) > 0
    affine = t1_img.affine.copy()

    # Pad the box so the head fits, then coarsen to the requested resolution.
    pads = [tuple(int(p) for p in _PAD_MM[a]) for a in "xyz"]
    gm, wm = (np.pad(v, pads) for v in (gm, wm))
    brain = np.pad(brain, pads)
    affine[:3, 3] -= [p[0] for p in pads]
    if resolution == 2:
        gm, wm = (_block_mean(v) for v in (gm, wm))
        brain = _block_mean(brain.astype(np.float32)) >= 0.5
        affine[:3, :3] *= 2
        affine[:3, 3] += 0.5  # the centre of a 2x2x2 block
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=1))
    csf = np.clip(brain - gm - wm, 0.0, 1.0).astype(np.float32) * brain
    gm *= brain
    wm *= brain

    shell = _Shell(affine, brain)
    labels = shell.labels(gm, wm, csf)
    return HeadPhantom(labels=labels, gm=gm, wm=wm, csf=csf, affine=affine)


def _block_mean(volume: NDArray[np.float32]) -> NDArray[np.float32]:
    nx, ny, nz = (n // 2 * 2 for n in volume.shape)
    v = volume[:nx, :ny, :nz]
    blocks = v.reshape(nx // 2, 2, ny // 2, 2, nz // 2, 2)
    mean: NDArray[np.float32] = blocks.mean(axis=(1, 3, 5)).astype(np.float32)
    return mean


class _Shell:
    """The non-brain anatomy, drawn from distances to the brain and a few ellipsoids."""

    def __init__(self, affine: NDArray[np.float64], brain: NDArray[np.bool_]) -> None:
        self.affine = affine
        self.brain = brain
        self.res = float(affine[0, 0])
        axes = [
            (affine[i, i] * np.arange(n) + affine[i, 3]).astype(np.float32)
            for i, n in enumerate(brain.shape)
        ]
        self.x, self.y, self.z = np.ix_(*axes)

    def ellipsoid(
        self, centre: tuple[float, float, float], radii: tuple[float, float, float]
    ) -> NDArray[np.bool_]:
        (cx, cy, cz), (rx, ry, rz) = centre, radii
        inside: NDArray[np.bool_] = (
            ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2 + ((self.z - cz) / rz) ** 2
        ) <= 1.0
        return inside

    def labels(
        self, gm: NDArray[np.float32], wm: NDArray[np.float32], csf: NDArray[np.float32]
    ) -> NDArray[np.uint8]:
        x, y, z = self.x, self.y, self.z
        # Distance (mm) from the brain; the cranium is a set of shells around it, kept above
        # the skull base so the brainstem does not grow a skull tube.
        outside = ndimage.distance_transform_edt(~self.brain, sampling=self.res)
        above_base = np.broadcast_to(z > -62.0, self.brain.shape)
        cranium = (outside <= 15.0) & above_base

        neck = (((x / 48.0) ** 2 + ((y + 18.0) / 50.0) ** 2) <= 1.0) & (z < -40.0)
        face = self.ellipsoid((0, 48, -52), (62, 52, 52)) & (y > 0.0)
        jaw = self.ellipsoid((0, 40, -88), (48, 42, 26))
        head = cranium | neck | face | jaw
        head = ndimage.gaussian_filter(head.astype(np.float32), 4.0 / self.res) > 0.5

        labels = np.full(self.brain.shape, Tissue.MUSCLE, dtype=np.uint8)
        labels[~head] = Tissue.AIR
        # Scalp fat over the cranium, skull beneath it, CSF beneath that.
        labels[cranium & (outside > 9.0)] = Tissue.FAT
        labels[cranium & (outside > 2.5) & (outside <= 9.0)] = Tissue.BONE
        labels[cranium & (outside > 0) & (outside <= 2.5)] = Tissue.CSF
        # Subcutaneous fat layer of face and neck: the outer 4 mm of the head below the cranium.
        skin = head & ~ndimage.binary_erosion(head, iterations=max(1, round(4.0 / self.res)))
        labels[skin & ~cranium] = Tissue.FAT
        # Spine and spinal cord in the neck.
        spine = ((x**2 + (y + 38.0) ** 2) <= 12.0**2) & (z < -62.0)
        cord = ((x**2 + (y + 38.0) ** 2) <= 5.0**2) & (z < -62.0)
        labels[spine] = Tissue.BONE
        labels[cord] = Tissue.WM
        # Face: eyes in their orbits, a nose, and ears on the sides.
        for side in (-1.0, 1.0):
            labels[self.ellipsoid((side * 32.0, 56.0, -40.0), (12.0, 12.0, 11.0))] = Tissue.EYE
            ear = self.ellipsoid((side * 80.0, -22.0, -28.0), (7.0, 16.0, 26.0))
            labels[ear] = Tissue.CARTILAGE
        nose = self.ellipsoid((0.0, 98.0, -42.0), (13.0, 22.0, 24.0)) & (y > 82.0)
        labels[nose] = Tissue.CARTILAGE

        # The brain itself: majority class of its partial-volume fractions.
        fractions = np.stack([csf, gm, wm])
        brain_labels = np.array([Tissue.CSF, Tissue.GM, Tissue.WM], dtype=np.uint8)
        labels[self.brain] = brain_labels[np.argmax(fractions[:, self.brain], axis=0)]
        return labels
