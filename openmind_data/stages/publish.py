"""The publish stage: an item's voxel columns as NIfTI bytes, and its preview."""

from __future__ import annotations

from dataclasses import dataclass

from openmind_data.nifti import encode_mask, encode_nifti
from openmind_data.planes import Volume, preview_png
from openmind_data.release.layout import mask_paths
from openmind_data.stages.base import Item, Outcome

__all__ = ["MASK_COLUMNS", "Publish"]

#: Voxel column -> the field of :class:`~openmind_data.masks.stage.MaskedImage` it holds.
MASK_COLUMNS = {"anat_mask": "anatomy", "anon_mask": "anon", "brain_mask": "brain"}


@dataclass(frozen=True)
class Publish:
    """The bytes of a masked item: ``image`` in its stored type and scaling, each mask made as
    uint8 0/1 with its ``*_mask_path`` beside the image's path, and the three-plane preview."""

    name: str = "publish"

    def process(self, item: Item) -> Outcome:
        masked = item.masked
        assert masked is not None, "publish runs after the masks stage"
        paths = mask_paths(item.row["image_path"])
        item.voxels = {"image": encode_nifti(item.stored(), item.like, scaling=item.scaling)}
        for column, name in MASK_COLUMNS.items():
            mask = getattr(masked, name)
            if mask is not None:
                item.voxels[column] = encode_mask(mask, item.like)
                item.row[f"{column}_path"] = paths[f"{column}_path"]
        planes = Volume.from_arrays(
            masked.data,
            item.like.affine,
            {"anatomy": masked.anatomy, "anonymization": masked.anon, "brain": masked.brain},
        )
        item.preview = preview_png(planes)
        return Outcome([item])
