"""A local cache of preprocessed volumes for repeated epochs: each volume resampled and
normalised once, stored as chunked blosc2 arrays so that a random crop decompresses only the
chunks it touches.

::

    ROOT/<Preprocessing.key>/<image_id>.image.b2nd   float32, nnU-Net's chunk layout, zstd
    ROOT/<Preprocessing.key>/<image_id>.masks.b2nd   uint8: bit 0 anatomy, bit 1 anonymization

The folder is named after the preprocessing, so other parameters use another folder. Each entry
records the source image's checksum; an entry of another source version is a miss. Crop centres
come from the volume's ``candidate_centres``, stored with the entry, so drawing them reads no mask.
Entries are written under hidden names and renamed, the masks file last: a killed writer leaves
no half entry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from openmind_ssl.data.crops import Crop, candidate_centres, window
from openmind_ssl.data.preprocess import Preprocessing, Volume

__all__ = ["CachedVolume", "VolumeCache"]

log = logging.getLogger(__name__)

#: The layout nnU-Net and nnssl use: a block (decompressed whole) fits a 32 KiB L1 cache, a
#: chunk an 8 MiB L3 cache; per data type, no larger than the volume.
L1, L3 = 32 * 1024, 8 * 1024**2
ANATOMY, ANONYMIZATION = 1, 2


@dataclass
class CachedVolume:
    """An entry opened for cropping; arrays are read lazily, chunk by chunk."""

    image: Any  # blosc2.NDArray of float32
    masks: Any  # blosc2.NDArray of uint8 bits
    centres: NDArray[np.int32]  # (n, 3) voxels inside the anatomy
    spacing: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.image.shape
        return int(x), int(y), int(z)

    def crop(self, centre: tuple[int, int, int], size: tuple[int, int, int]) -> Crop:
        """As ``crops.crop`` on the full volume, reading only the chunks the patch touches."""
        slices = window(centre, size, self.shape)
        if slices is None:
            empty = np.zeros(size, dtype=np.uint8)
            return Crop(np.zeros(size, dtype=np.float32), empty, empty.copy(), centre)
        source, target = slices
        image, bits = self.image[source], self.masks[source]
        if image.shape != size:  # beyond the volume: pad
            padded, padded_bits = np.zeros(size, np.float32), np.zeros(size, np.uint8)
            padded[target], padded_bits[target] = image, bits
            image, bits = padded, padded_bits
        return Crop(image, bits & ANATOMY, bits >> 1, centre)


class VolumeCache:
    """Preprocessed volumes under ``root``, for the preprocessing ``options``."""

    def __init__(self, root: str | Path, options: Preprocessing) -> None:
        self.folder = Path(root) / options.key
        self.options = options

    def _paths(self, image_id: str) -> tuple[Path, Path]:
        return self.folder / f"{image_id}.image.b2nd", self.folder / f"{image_id}.masks.b2nd"

    def open(self, image_id: str, source_sha256: str | None) -> CachedVolume | None:
        """The entry of ``image_id`` made from the source with ``source_sha256``, or None."""
        import blosc2  # noqa: PLC0415

        image_path, masks_path = self._paths(image_id)
        if not masks_path.is_file():
            return None
        try:
            masks = blosc2.open(str(masks_path), mode="r")
            meta = masks.schunk.vlmeta
            if meta["source_sha256"] != (source_sha256 or ""):
                return None
            centres = np.frombuffer(meta["centres"], dtype="<i4").reshape(-1, 3)
            x, y, z = (float(v) for v in meta["spacing"])
            image = blosc2.open(str(image_path), mode="r")
        except Exception as error:  # noqa: BLE001 (a damaged entry is a miss, made again)
            log.warning("cache entry of %s in %s is unreadable (%s)", image_id, self.folder, error)
            return None
        if image.shape != masks.shape:
            log.warning("cache entry of %s in %s: image and masks differ", image_id, self.folder)
            return None
        return CachedVolume(image, masks, centres, (x, y, z))

    def put(self, image_id: str, source_sha256: str | None, volume: Volume) -> CachedVolume:
        """Store ``volume`` (replacing an older entry) and open it."""
        import blosc2  # noqa: PLC0415

        self.folder.mkdir(parents=True, exist_ok=True)
        image_path, masks_path = self._paths(image_id)
        bits = (volume.anatomy > 0).astype(np.uint8) * ANATOMY
        bits |= (volume.anonymization > 0).astype(np.uint8) * ANONYMIZATION
        centres = candidate_centres(volume.anatomy, image_id)
        cparams = {"codec": blosc2.Codec.ZSTD, "clevel": 3}

        def image(partial: Path) -> None:
            layout = _layout(bits.shape, 4)
            blosc2.asarray(volume.image, urlpath=str(partial), mode="w", cparams=cparams, **layout)

        def masks(partial: Path) -> None:
            layout = _layout(bits.shape, 1)
            array = blosc2.asarray(bits, urlpath=str(partial), mode="w", cparams=cparams, **layout)
            array.schunk.vlmeta["source_sha256"] = source_sha256 or ""
            array.schunk.vlmeta["spacing"] = list(volume.spacing)
            array.schunk.vlmeta["centres"] = centres.astype("<i4").tobytes()
            array.schunk.vlmeta["mean_std"] = [volume.mean, volume.std]

        _write(image_path, image)
        _write(masks_path, masks)
        opened = self.open(image_id, source_sha256)
        if opened is None:
            raise OSError(f"{self.folder}: the entry of {image_id} just written cannot be read")
        return opened


def _layout(shape: tuple[int, ...], itemsize: int) -> dict[str, tuple[int, ...]]:
    block = max(1, int((L1 / itemsize) ** (1 / 3)))
    chunk = max(block, int((L3 / itemsize) ** (1 / 3)))
    chunks = tuple(min(chunk, n) for n in shape)
    return {"chunks": chunks, "blocks": tuple(min(block, c) for c in chunks)}


def _write(path: Path, write: Any) -> None:
    """``write(partial)`` then rename: the entry appears whole. Unique partial names, so two
    DataLoader workers that cache the same image never write into one file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    write(partial)
    partial.replace(path)
