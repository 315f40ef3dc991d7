"""``OpenMindStream``: a PyTorch ``IterableDataset`` of random crops from an OpenMind dataset (a
local folder or a Hub repo), filtered by metadata, sharded across DDP ranks and DataLoader
workers by row group (``sharding``), each volume decoded once and cropped several times.

Filters are the ``openmind_data.load`` ones and go to the Parquet reader with the row group, so
a row group the statistics rule out is never read. A sample that cannot be decoded or
preprocessed is logged with its image id and counted; past ``max_failures`` the stream raises.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from openmind_data.nifti import decode_nifti
from openmind_data.schema import SPLITS
from openmind_ssl.data.augment import Augmentation, augment
from openmind_ssl.data.cache import VolumeCache
from openmind_ssl.data.crops import Crop, crop, crop_centres
from openmind_ssl.data.preprocess import Preprocessing, preprocess
from openmind_ssl.data.sharding import Unit, assign

__all__ = ["OpenMindStream", "StreamOptions", "TooManyFailuresError"]

log = logging.getLogger(__name__)

#: Metadata a training step may want beside the voxels.
META_COLUMNS = ("image_id", "dataset_id", "modality", "image_quality_score", "license")
VOXELS = ("image", "anat_mask", "anon_mask")


class TooManyFailuresError(RuntimeError):
    """More samples failed to decode or preprocess than the run allows."""


@dataclass(frozen=True)
class StreamOptions:
    modalities: Sequence[str] | None = None  # None: every modality
    split: str = "train"
    max_iqs: float | None = None
    licenses: Sequence[str] | None = None
    dataset_ids: Sequence[str] | None = None
    filters: Sequence[tuple[str, str, Any]] = ()  # more (column, op, value), combined with AND
    crop_size: tuple[int, int, int] = (160, 160, 160)
    crops_per_volume: int = 4
    shuffle_buffer: int = 16  # crops held back and drawn at random
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    seed: int = 0
    max_failures: int = 10
    cache: str | Path | None = None  # a VolumeCache root: volumes preprocessed once, reused
    augmentation: Augmentation | None = None  # MONAI transforms; each sample's seed recorded

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {self.split!r}")
        if self.crops_per_volume < 1 or self.shuffle_buffer < 0:
            raise ValueError("crops_per_volume >= 1 and shuffle_buffer >= 0 are needed")


class OpenMindStream(IterableDataset[dict[str, Any]]):
    """Random crops of the images of ``source`` (a dataset folder, or ``hf://datasets/ORG/NAME``
    read through ``huggingface_hub``'s file system) that ``options`` selects."""

    def __init__(self, source: str | Path, options: StreamOptions | None = None) -> None:
        self.options = options or StreamOptions()
        self.filesystem, self.paths = _shards(str(source), self.options)
        self.units = _units(self.filesystem, self.paths)
        self.cache = (
            VolumeCache(self.options.cache, self.options.preprocessing)
            if self.options.cache is not None
            else None
        )
        self.epoch = 0
        self.positions: dict[int, int] = {}  # reader -> its units already read this epoch
        self.failures = 0  # per reader: a DataLoader worker counts in its own copy

    def set_epoch(self, epoch: int, positions: dict[int, int] | None = None) -> None:
        """Start ``epoch`` (a new order of row groups), or resume it: each reader (a sample's
        ``reader``) skips its first ``positions[reader]`` row groups. A trainer keeps, per
        reader, the largest ``position`` of the samples it consumed and passes them back; the
        crops still waiting in the shuffle buffer at that moment are not seen again."""
        self.epoch, self.positions = epoch, dict(positions or {})

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        index, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        rank, world = _rank()
        reader = rank * workers + index
        start = self.positions.get(reader, 0)
        mine = assign(
            self.units,
            epoch=self.epoch,
            seed=self.options.seed,
            rank=rank,
            world_size=world,
            worker=index,
            workers=workers,
            position=start,
        )
        rng = np.random.default_rng([self.options.seed, self.epoch, reader, start])
        buffer: list[dict[str, Any]] = []
        for done, unit in enumerate(mine, start=start + 1):
            for sample in self._samples(unit, rng):
                sample["reader"], sample["position"] = reader, done
                if self.options.shuffle_buffer == 0:
                    yield sample
                elif len(buffer) < self.options.shuffle_buffer:
                    buffer.append(sample)
                else:
                    slot = int(rng.integers(len(buffer)))
                    drawn, buffer[slot] = buffer[slot], sample
                    yield drawn
        rng.shuffle(buffer)
        yield from buffer

    def _samples(self, unit: Unit, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """The crops of one row group's selected images: from the cache where it holds them,
        else decoded (and cached, when there is a cache). Voxel columns are read only for the
        images the cache lacks."""
        fragment = pads.ParquetFileFormat().make_fragment(
            unit.path, filesystem=self.filesystem, row_groups=[unit.row_group]
        )
        selected = _expression(self.options)
        if self.cache is None:
            rows = fragment.to_table(columns=[*META_COLUMNS, *VOXELS], filter=selected)
            for row in rows.to_pylist():
                yield from self._decoded(row, rng)
            return
        meta = fragment.to_table(columns=[*META_COLUMNS, "source_sha256"], filter=selected)
        rows = meta.to_pylist()
        cached = {r["image_id"]: self.cache.open(r["image_id"], r["source_sha256"]) for r in rows}
        missing = [image_id for image_id, entry in cached.items() if entry is None]
        voxels: dict[str, dict[str, Any]] = {}
        if missing:
            wanted = pads.field("image_id").isin(missing)
            table = fragment.to_table(columns=["image_id", *VOXELS], filter=wanted)
            voxels = {r["image_id"]: r for r in table.to_pylist()}
        for row in rows:
            entry = cached[row["image_id"]]
            if entry is None:
                yield from self._decoded({**row, **voxels[row["image_id"]]}, rng)
                continue
            draws = rng.integers(0, len(entry.centres), size=self.options.crops_per_volume)
            for x, y, z in entry.centres[draws].tolist():
                patch = entry.crop((x, y, z), self.options.crop_size)
                yield self._sample(row, patch, entry.spacing, rng)

    def _decoded(self, row: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
        try:
            volume = preprocess(
                decode_nifti(row["image"]["bytes"]),
                decode_nifti(row["anat_mask"]["bytes"]),
                decode_nifti(row["anon_mask"]["bytes"]) if row.get("anon_mask") else None,
                self.options.preprocessing,
            )
        except Exception as error:
            self.failures += 1
            log.error("image %s: cannot be decoded or preprocessed: %s", row["image_id"], error)
            if self.failures > self.options.max_failures:
                raise TooManyFailuresError(
                    f"{self.failures} samples failed (the limit is {self.options.max_failures});"
                    f" the last: image {row['image_id']}: {error}"
                ) from error
            return []
        if self.cache is not None:
            self.cache.put(row["image_id"], row.get("source_sha256"), volume, rng)
        return [
            self._sample(row, crop(volume, centre, self.options.crop_size), volume.spacing, rng)
            for centre in crop_centres(volume.anatomy, self.options.crops_per_volume, rng)
        ]

    def _sample(
        self,
        row: dict[str, Any],
        patch: Crop,
        spacing: tuple[float, float, float],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        sample = {
            "image": torch.from_numpy(patch.image)[None],
            "anat_mask": torch.from_numpy(patch.anatomy)[None],
            "anon_mask": torch.from_numpy(patch.anonymization)[None],
            "centre": torch.tensor(patch.centre),
            "spacing": torch.tensor(spacing),
            **{column: row[column] for column in META_COLUMNS},
        }
        if self.options.augmentation is None:
            return sample
        seed = int(rng.integers(2**31))
        return augment(sample, self.options.augmentation, seed)


def _expression(options: StreamOptions) -> pads.Expression | None:
    from openmind_data.loading import build_filters  # noqa: PLC0415

    conditions = build_filters(
        max_iqs=options.max_iqs, licenses=options.licenses, filters=options.filters
    )
    if options.dataset_ids is not None:
        conditions.append(("dataset_id", "in", list(options.dataset_ids)))
    return pq.filters_to_expression(conditions) if conditions else None


def _shards(source: str, options: StreamOptions) -> tuple[pafs.FileSystem, list[str]]:
    """The file system and the shard paths of the chosen modalities and split. A Hub repo is
    read through ``huggingface_hub.HfFileSystem`` wrapped for pyarrow."""
    if source.startswith("hf://"):
        from huggingface_hub import HfFileSystem  # noqa: PLC0415

        filesystem: pafs.FileSystem = pafs.PyFileSystem(pafs.FSSpecHandler(HfFileSystem()))
        root = source.removeprefix("hf://").rstrip("/")
    else:
        if not Path(source).is_dir():
            raise FileNotFoundError(f"{source}: no such dataset folder")
        filesystem, root = pafs.LocalFileSystem(), Path(source).resolve().as_posix()
    listed = filesystem.get_file_info(pafs.FileSelector(f"{root}/data", recursive=True))
    files = sorted(info.path for info in listed if info.type == pafs.FileType.File)
    paths: list[str] = []
    for modality in options.modalities or ["*"]:
        pattern = f"{root}/data/{modality}/{options.split}-*-of-*.parquet"
        found = [path for path in files if fnmatch.fnmatchcase(path, pattern)]
        if not found and modality != "*":
            raise ValueError(f"{source} has no {options.split} shards of modality {modality!r}")
        paths += found
    if not paths:
        raise ValueError(f"{source} has no {options.split} shards")
    return filesystem, sorted(paths)


def _units(filesystem: pafs.FileSystem, paths: Sequence[str]) -> list[Unit]:
    """Every row group of ``paths``, from the footers alone."""
    units = []
    for path in paths:
        with filesystem.open_input_file(path) as handle:
            metadata = pq.ParquetFile(handle).metadata
        units += [
            Unit(path, index, metadata.row_group(index).num_rows)
            for index in range(metadata.num_row_groups)
        ]
    return units


def _rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
