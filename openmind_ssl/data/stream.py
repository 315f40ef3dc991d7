"""``OpenMindStream``: a PyTorch ``IterableDataset`` of random crops from an OpenMind dataset (a
local folder or a Hub repo), filtered by metadata, sharded across DDP ranks and DataLoader
workers by row group (``sharding``), each volume decoded once and cropped several times.

Filters are the ``openmind_data.load`` ones and go to the Parquet reader with the row group, so
a row group the statistics rule out is never read. A sample that cannot be decoded or
preprocessed is logged with its image id and counted; past ``max_failures`` the stream raises.

Replay. The samples of a row group are a function of (seed, epoch, reader, the unit's index in
the reader's share) alone: its crops, their order (the shuffle buffer is emptied at the end of
each unit) and their augmentation seeds. Each sample carries its ``Position``; a trainer that
keeps the last one it consumed per reader resumes exactly where it stopped (``resume``),
re-reading at most one row group per reader.
"""

from __future__ import annotations

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
from numpy.typing import NDArray
from torch.utils.data import IterableDataset, get_worker_info

from openmind_data.dataset_folder import DatasetFolder
from openmind_data.errors import ConfigError, OpenMindError
from openmind_data.nifti import decode_nifti
from openmind_data.schema import SPLITS
from openmind_ssl.data.augment import Augmentation, augment
from openmind_ssl.data.cache import VolumeCache
from openmind_ssl.data.crops import Crop, candidate_centres, crop
from openmind_ssl.data.preprocess import Preprocessing, preprocess
from openmind_ssl.data.sharding import Unit, assign

__all__ = ["OpenMindStream", "Position", "StreamOptions", "TooManyFailuresError"]

log = logging.getLogger(__name__)

#: Metadata a training step may want beside the voxels.
META_COLUMNS = ("image_id", "dataset_id", "modality", "image_quality_score", "license")
VOXELS = ("image", "anat_mask", "anon_mask")
Centre = tuple[int, int, int]


class TooManyFailuresError(OpenMindError, RuntimeError):
    """More samples failed to decode or preprocess than the run allows."""


@dataclass(frozen=True, order=True)
class Position:
    """Where a reader's stream is: the ``sample``-th sample of its ``unit``-th row group of
    ``epoch``. Samples carry theirs; ``next`` is where to resume after consuming one."""

    epoch: int
    unit: int
    sample: int

    @property
    def next(self) -> Position:
        return Position(self.epoch, self.unit, self.sample + 1)


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
    shuffle_buffer: int = 16  # crops held back and drawn at random, within a row group
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    seed: int = 0
    max_failures: int = 10
    cache: str | Path | None = None  # a VolumeCache root: volumes preprocessed once, reused
    augmentation: Augmentation | None = None  # MONAI transforms; each sample's seed recorded
    repeat: bool = False  # go on to the next epoch instead of stopping (step-based training)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, not {self.split!r}")
        if self.crops_per_volume < 1 or self.shuffle_buffer < 0:
            raise ConfigError("crops_per_volume >= 1 and shuffle_buffer >= 0 are needed")


class OpenMindStream(IterableDataset[dict[str, Any]]):
    """Random crops of the images of ``source`` (a dataset folder, or a Hub repo as
    :class:`~openmind_data.dataset_folder.DatasetFolder` names one, read through
    ``huggingface_hub``'s file system) that ``options`` selects."""

    def __init__(
        self, source: str | Path | DatasetFolder, options: StreamOptions | None = None
    ) -> None:
        self.options = options or StreamOptions()
        self.filesystem, self.paths = _shards(source, self.options)
        self.units = _units(self.filesystem, self.paths)
        self.cache = (
            VolumeCache(self.options.cache, self.options.preprocessing)
            if self.options.cache is not None
            else None
        )
        self.epoch = 0
        self.resume_at: dict[int, Position] = {}  # reader -> its first sample to yield
        self.rotation = 0
        self.failures = 0  # per reader: a DataLoader worker counts in its own copy

    def set_epoch(
        self, epoch: int, resume: dict[int, Position] | None = None, rotation: int = 0
    ) -> None:
        """Start ``epoch`` (a new order of row groups), or resume: each reader (a sample's
        ``reader``) starts at ``resume[reader]``, typically the ``next`` of the last sample of
        that reader a trainer consumed. A DataLoader takes samples from its workers in turn;
        ``rotation`` (the samples already consumed from this loader, modulo its workers) makes
        worker ``i`` read as reader ``i + rotation`` so that the turns continue where they
        stopped."""
        self.epoch, self.resume_at, self.rotation = epoch, dict(resume or {}), rotation

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        index, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        rank, world = _rank()
        reader = rank * workers + (index + self.rotation) % workers
        at = self.resume_at.get(reader, Position(self.epoch, 0, 0))
        epoch = at.epoch
        while True:
            mine = assign(
                self.units,
                epoch=epoch,
                seed=self.options.seed,
                rank=rank,
                world_size=world,
                worker=(index + self.rotation) % workers,
                workers=workers,
            )
            start = at.unit if epoch == at.epoch else 0
            produced = 0
            for number in range(start, len(mine)):
                skip = at.sample if (epoch, number) == (at.epoch, at.unit) else 0
                rng = np.random.default_rng([self.options.seed, epoch, reader, number])
                samples = self._shuffled(self._samples(mine[number], rng), rng)
                for count, sample in enumerate(samples):
                    produced += 1
                    if count >= skip:
                        sample["reader"] = reader
                        sample["position"] = Position(epoch, number, count)
                        yield sample
            if not self.options.repeat:
                return
            if produced == 0 and start == 0:  # nothing to repeat: end instead of spinning
                log.warning("reader %d: no selected rows in its row groups; it stops", reader)
                return
            epoch += 1

    def _shuffled(
        self, samples: Iterator[dict[str, Any]], rng: np.random.Generator
    ) -> Iterator[dict[str, Any]]:
        """``samples`` through a buffer of ``shuffle_buffer`` crops, emptied at the end."""
        buffer: list[dict[str, Any]] = []
        for sample in samples:
            if len(buffer) < self.options.shuffle_buffer:
                buffer.append(sample)
                continue
            slot = int(rng.integers(len(buffer) + 1))
            if slot == len(buffer):
                yield sample
            else:
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
            for centre in self._draw(entry.centres, rng):
                patch = entry.crop(centre, self.options.crop_size)
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
            centres = self.cache.put(row["image_id"], row.get("source_sha256"), volume).centres
        else:
            centres = candidate_centres(volume.anatomy, row["image_id"])
        return [
            self._sample(row, crop(volume, centre, self.options.crop_size), volume.spacing, rng)
            for centre in self._draw(centres, rng)
        ]

    def _draw(self, centres: NDArray[np.int32], rng: np.random.Generator) -> list[Centre]:
        """``crops_per_volume`` of a volume's candidate centres, with replacement: the same
        draws whether the volume came from the cache or was decoded."""
        picks = rng.integers(0, len(centres), size=self.options.crops_per_volume)
        return [(int(x), int(y), int(z)) for x, y, z in centres[picks]]

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


def _shards(
    source: str | Path | DatasetFolder, options: StreamOptions
) -> tuple[pafs.FileSystem, list[str]]:
    """The file system and the shard paths of the chosen modalities and split. A Hub repo is
    read through ``huggingface_hub.HfFileSystem`` wrapped for pyarrow."""
    dataset = DatasetFolder.at(source)
    filesystem: pafs.FileSystem = (
        pafs.LocalFileSystem()
        if dataset.is_local
        else pafs.PyFileSystem(pafs.FSSpecHandler(dataset.filesystem))
    )
    paths: list[str] = []
    for modality in options.modalities or ["*"]:
        found = dataset.shards(modality, options.split)
        if not found and modality != "*":
            raise ConfigError(f"{dataset} has no {options.split} shards of modality {modality!r}")
        paths += found
    if not paths:
        raise ConfigError(f"{dataset} has no {options.split} shards")
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
