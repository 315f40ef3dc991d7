"""The quality stage: MRIQC's metrics of one image over its masks (the ``iqm_*`` columns).

The score is not made here: the IQS measures each image against its peers, so it is given once
every image of a table is measured (:func:`~openmind_data.quality.run.score_table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.nifti import read_stored, scaled
from openmind_data.quality.metrics import image_quality_metrics
from openmind_data.stages.base import Item, Outcome

__all__ = ["Quality"]


@dataclass(frozen=True)
class Quality:
    """The metrics of an item the masks stage masked in this pass, or, with ``masks_root``, of
    an item's file (``item.source``) and the masks an earlier masks run wrote there (its
    ``*_mask_path`` columns, which must include the anatomy mask)."""

    masks_root: Path | None = None
    name: str = "quality"

    def process(self, item: Item) -> Outcome:
        if item.masked is not None:
            masked = item.masked
            volumes = (masked.data, masked.anatomy, masked.anon, masked.brain)
            spacing = item.spacing
        else:
            volumes, spacing = self._read(item)
        metrics = image_quality_metrics(
            *volumes, modality=str(item.row["modality"]), spacing=spacing
        )
        item.row = {**item.row, **metrics}
        return Outcome([item])

    def _read(self, item: Item) -> tuple[tuple[Any, ...], tuple[float, ...]]:
        assert item.source is not None and self.masks_root is not None
        image, raw, scaling, _ = read_stored(item.source)
        data = scaled(raw, scaling)
        masks: dict[str, Any] = {}
        for column in ("anat_mask_path", "anon_mask_path", "brain_mask_path"):
            if item.row.get(column):
                path = self.masks_root / item.row[column]
                mask = read_stored(path).raw
                if mask.shape != data.shape[:3]:
                    raise InvalidInputError(
                        path,
                        R.PROCESSING_ERROR,
                        f"mask shape {mask.shape} is not the image's {data.shape}",
                    )
                masks[column] = mask > 0
        if "anat_mask_path" not in masks:
            raise InvalidInputError(
                item.source, R.PROCESSING_ERROR, "no anatomy mask: run the masks stage"
            )
        anatomy = masks["anat_mask_path"]
        anon = masks.get("anon_mask_path", np.zeros_like(anatomy))
        spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
        return (data, anatomy, anon, masks.get("brain_mask_path")), spacing
