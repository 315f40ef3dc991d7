"""The load stage: an item's file read once into its voxels, checked as an image to publish."""

from __future__ import annotations

from dataclasses import dataclass

from openmind_data.nifti import as_3d, check_voxels, read_stored, scaled
from openmind_data.stages.base import Item, Outcome

__all__ = ["Load"]


@dataclass(frozen=True)
class Load:
    """Reads ``item.source``: its stored voxels (3D, trailing singleton axes dropped with a
    provenance step), their scaling and, unless the row has one (a DWI map's is its series'),
    the file's SHA-256. A file that cannot be read, or
    whose voxels are not finite or all the same, is excluded at stage ``load``."""

    name: str = "load"

    def process(self, item: Item) -> Outcome:
        assert item.source is not None
        image, stored_raw, scaling, checksum = read_stored(item.source)
        raw, squeezed = as_3d(stored_raw, item.source)
        data = scaled(raw, scaling)
        check_voxels(data, item.where)
        item.like, item.raw, item.data, item.scaling = image, raw, data, scaling
        row = item.row
        item.row = {
            **row,
            "source_sha256": row.get("source_sha256") or checksum,
            "provenance": [*(row.get("provenance") or []), *([squeezed] if squeezed else [])],
        }
        return Outcome([item])
