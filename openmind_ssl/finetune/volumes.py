"""Downstream cases preprocessed once, like the pretraining data, and the patches training draws
from them.

A case goes through :func:`openmind_ssl.data.preprocess`: RAS, resampled to ``spacing`` mm,
z-scored inside its anatomy mask (found on the first channel with the curation's own
``openmind_data.masks.anatomy.foreground``, so that a downstream image is normalised as a
pretraining image was). Its label map is resampled by nearest neighbour. The arrays are saved as
``.npy`` under ``folder`` and memory-mapped afterwards: a dataset larger than memory trains
without being held in it, and a second run (another schedule, another checkpoint) reuses them.

Segmentation patches are centred on a foreground voxel for a third of the draws (nnU-Net's
foreground oversampling), anywhere otherwise; classification crops are centred on the volume
with a random shift. Both are mirrored along each axis with probability 1/2 and their intensity
scaled and shifted a little. Every draw is a function of (seed, epoch, index), so a resumed
epoch sees the patches it would have seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from numpy.typing import NDArray

from openmind_data.errors import ConfigError
from openmind_data.masks.anatomy import foreground
from openmind_ssl.data.preprocess import Preprocessing, preprocess, resample_labels
from openmind_ssl.finetune.tasks import Case

__all__ = ["PatchSamples", "Prepared", "center_crop", "prepare"]

#: Foreground voxel positions kept per class and case for oversampling (nnU-Net keeps 10,000).
MAX_LOCATIONS = 10_000
VERSION = 1  # of the stored arrays; bump when preprocessing changes


@dataclass(frozen=True)
class Prepared:
    """A preprocessed case: ``image`` (C, X, Y, Z) float32 and, for segmentation, ``label``
    (X, Y, Z) uint8 and up to ``MAX_LOCATIONS`` foreground voxel positions (N, 3)."""

    name: str
    image: NDArray[np.float32]
    label: NDArray[np.uint8] | None
    target: int | None
    locations: NDArray[np.int64] | None


def prepare(case: Case, channels: int, spacing: float, folder: Path) -> Prepared:
    """``case`` preprocessed, from ``folder`` if it was done before."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {part: folder / f"{case.name}.{part}.npy" for part in ("image", "label", "fg")}
    info = folder / f"{case.name}.json"
    expected = {"version": VERSION, "spacing": spacing, "sources": _sources(case)}
    done = info.is_file() and json.loads(info.read_text()) == expected
    segmentation = isinstance(case.target, Path)
    if not done:
        image, label = _preprocess(case, channels, spacing)
        _save(paths["image"], image)
        if label is not None:
            _save(paths["label"], label)
            _save(paths["fg"], _locations(label, np.random.default_rng(0)))
        info.write_text(json.dumps(expected))  # last: the marker that the case is complete
    return Prepared(
        case.name,
        np.load(paths["image"], mmap_mode="r"),
        np.load(paths["label"], mmap_mode="r") if segmentation else None,
        None if segmentation else int(case.target),  # type: ignore[arg-type]
        np.load(paths["fg"]) if segmentation else None,
    )


def _sources(case: Case) -> list[list[Any]]:
    files = [*case.images, *([case.target] if isinstance(case.target, Path) else [])]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _save(path: Path, array: NDArray[Any]) -> None:
    partial = path.with_name(f".{path.name}.partial.npy")
    np.save(partial, np.ascontiguousarray(array))
    partial.replace(path)


def _preprocess(
    case: Case, channels: int, spacing: float
) -> tuple[NDArray[np.float32], NDArray[np.uint8] | None]:
    images = _channel_images(case, channels)
    first = images[0]
    zooms = tuple(float(z) for z in first.header.get_zooms()[:3])
    anatomy = foreground(np.asarray(first.dataobj, dtype=np.float32), zooms).anatomy
    if not anatomy.any():
        anatomy = np.ones(first.shape[:3], dtype=bool)
    anatomy_image = nib.Nifti1Image(anatomy.astype(np.uint8), first.affine)
    options = Preprocessing(spacing=spacing)
    volumes = []
    for k, image in enumerate(images):
        if image.shape[:3] != first.shape[:3] or not np.allclose(
            image.affine, first.affine, atol=1e-3
        ):
            raise ConfigError(f"{case.name}: channel {k} is not on the grid of channel 0")
        volumes.append(preprocess(image, anatomy_image, None, options))
    stacked = np.stack([v.image for v in volumes]).astype(np.float32)
    if not isinstance(case.target, Path):
        return stacked, None
    label_image = nib.load(case.target)
    if label_image.shape[:3] != first.shape[:3] or not np.allclose(
        label_image.affine, first.affine, atol=1e-3
    ):
        raise ConfigError(f"{case.target}: not on the grid of its image {case.images[0]}")
    canonical = nib.as_closest_canonical(
        nib.Nifti1Image(np.asarray(label_image.dataobj), first.affine)
    )
    labels = np.rint(np.asarray(canonical.dataobj)).astype(np.int64)
    return stacked, resample_labels(labels, stacked.shape[1:])


def _channel_images(case: Case, channels: int) -> list[Any]:
    """One 3D nibabel image per channel."""
    if case.channel_axis:
        (path,) = case.images
        image = nib.load(path)
        if image.ndim != 4 or image.shape[3] != channels:
            raise ConfigError(f"{path}: {channels} channels on the last axis expected")
        data = np.asarray(image.dataobj, dtype=np.float32)
        return [nib.Nifti1Image(data[..., k], image.affine) for k in range(channels)]
    if len(case.images) != channels:
        raise ConfigError(f"{case.name}: {len(case.images)} images for {channels} channels")
    loaded = []
    for path in case.images:
        image = nib.load(path)
        if image.ndim == 4 and image.shape[3] == 1:
            image = image.slicer[..., 0]
        if image.ndim != 3:
            raise ConfigError(f"{path}: a 3D image is needed, this one has shape {image.shape}")
        loaded.append(image)
    return loaded


def _locations(label: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.int64]:
    """Up to ``MAX_LOCATIONS`` voxel positions of each foreground class, all classes together."""
    found = []
    for value in np.unique(label):
        if value == 0:
            continue
        where = np.argwhere(label == value)
        if len(where) > MAX_LOCATIONS:
            where = where[rng.choice(len(where), MAX_LOCATIONS, replace=False)]
        found.append(where)
    return np.concatenate(found) if found else np.zeros((0, 3), dtype=np.int64)


def center_crop(
    image: NDArray[Any], size: tuple[int, int, int], shift: NDArray[Any] | None = None
) -> NDArray[Any]:
    """The ``size`` box of ``image`` (C, X, Y, Z) around its centre (moved by ``shift``),
    zero-padded where it leaves the volume."""
    centre = np.array(image.shape[1:]) // 2 + (0 if shift is None else shift)
    return _box(image, centre, size)


def _box(array: NDArray[Any], centre: NDArray[Any], size: tuple[int, ...]) -> NDArray[Any]:
    """The ``size`` box of ``array`` (C, X, Y, Z) centred on ``centre``, zero outside."""
    start = np.asarray(centre) - np.asarray(size) // 2
    out = np.zeros((array.shape[0], *size), dtype=array.dtype)
    source, target = [slice(None)], [slice(None)]
    for begin, n, extent in zip(start, size, array.shape[1:], strict=True):
        lo, hi = max(begin, 0), min(begin + n, extent)
        source.append(slice(lo, max(lo, hi)))
        target.append(slice(lo - begin, lo - begin + max(0, hi - lo)))
    out[tuple(target)] = array[tuple(source)]
    return out


class PatchSamples(torch.utils.data.Dataset[dict[str, Any]]):
    """``length`` training samples per epoch, each drawn from (seed, epoch, index)."""

    def __init__(
        self,
        cases: list[Prepared],
        patch_size: tuple[int, int, int],
        length: int,
        *,
        seed: int,
        oversample: float = 1 / 3,
        augment: bool = True,
    ) -> None:
        self.cases = cases
        self.patch_size = patch_size
        self.length = length
        self.seed = seed
        self.oversample = oversample
        self.augment = augment
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        case = self.cases[int(rng.integers(len(self.cases)))]
        size = np.array(self.patch_size)
        if case.label is None:
            free = np.maximum(np.array(case.image.shape[1:]) - size, 0)
            shift = rng.integers(-(free // 4), free // 4 + 1)
            image = center_crop(case.image, self.patch_size, shift)
            label = None
        else:
            assert case.locations is not None
            if len(case.locations) and rng.random() < self.oversample:
                centre = case.locations[int(rng.integers(len(case.locations)))]
            else:
                # Anywhere the patch keeps at least half of itself inside the volume.
                low = np.minimum(size // 2, np.array(case.image.shape[1:]) // 2)
                high = np.maximum(np.array(case.image.shape[1:]) - size // 2, low + 1)
                centre = rng.integers(low, high)
            image = _box(case.image, centre, self.patch_size)
            label = _box(case.label[None], centre, self.patch_size)
        if self.augment:
            for axis in range(1, 4):
                if rng.random() < 0.5:
                    image = np.flip(image, axis)
                    label = np.flip(label, axis) if label is not None else None
            image = image * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
        sample: dict[str, Any] = {"image": torch.from_numpy(np.ascontiguousarray(image))}
        if label is not None:
            sample["label"] = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))
        else:
            sample["label"] = torch.tensor(case.target, dtype=torch.int64)
        return sample
