"""The build's unit of work: one candidate of the crawl in, its published images out.

A composition of stages (:mod:`openmind_data.stages`): an anatomical image is loaded once and
goes through the masks (defaced where its defacing is not confirmed), the quality metrics and
the publish stage; a DWI series goes through the diffusion stage, and each of its maps through
the same three. Pure: the inputs are a candidate row, the folder of its dataset and the options;
the outputs are image-table rows with their voxel columns as NIfTI ``.nii.gz`` bytes and their
previews, and exclusion rows. Nothing is written, so any executor can run it and a retry is
harmless. Voxels keep their stored type and scaling: an int16 image is published as int16, with
its slope, even when the toolkit defaced it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmind_data.dwi import DwiOptions
from openmind_data.dwi.stage import Diffusion
from openmind_data.masks.stage import MaskOptions, Masks
from openmind_data.quality.stage import Quality
from openmind_data.release.layout import published_path
from openmind_data.stages import Item, Load, Publish, Published, Stage, UnitResult, run_stages

__all__ = ["Published", "UnitOptions", "UnitResult", "process_candidate", "process_image"]


@dataclass(frozen=True)
class UnitOptions:
    """Options of every stage the unit runs."""

    masks: MaskOptions = field(default_factory=MaskOptions)
    dwi: DwiOptions = field(default_factory=DwiOptions)

    def stages(self, modality: str) -> tuple[Stage, ...]:
        """The stages a candidate of ``modality`` goes through."""
        first: Stage = Diffusion(self.dwi) if modality == "DWI" else Load()
        return (first, Masks(self.masks), Quality(), Publish())


def process_candidate(
    row: Mapping[str, Any], dataset_root: str | Path, options: UnitOptions | None = None
) -> UnitResult:
    """Everything the build does to one candidate row (see the module's docstring). Bad input
    and unexpected errors become exclusion rows at the stage that met them; this never raises
    for one image's sake."""
    options = options or UnitOptions()
    root = Path(dataset_root)
    modality = str(row["modality"])
    item = Item(_seed(row) if modality != "DWI" else dict(row), root / row["source_path"], root)
    return run_stages(options.stages(modality), item)


def process_image(row: Mapping[str, Any], path: str | Path, options: UnitOptions) -> Published:
    """One 3D image file through the unit's stages, raising what a stage raises: its image-table
    row, from the candidate ``row``, its voxel columns and its preview."""
    item = Item(_seed(row), Path(path))
    for stage in options.stages(str(row["modality"])):
        (item,) = stage.process(item).items
    return Published(item.row, item.voxels, item.preview)


def _seed(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**row, "image_path": published_path(row["dataset_id"], row["source_path"])}
