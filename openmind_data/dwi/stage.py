"""The DWI stage: one candidate series in, up to three image rows (MD, FA, mean b0) out.

A series that cannot be used becomes one row of the exclusion table (stage ``dwi``) with the
reason its check gave; a series with b0 volumes but too few directions for a tensor still gives
its mean b0, and its FA and MD are rows of the exclusion table under their own image ids.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from openmind_data.durable import write_atomic
from openmind_data.dwi.gradients import read_gradients, select_volumes, validate_gradients
from openmind_data.dwi.maps import Step, compute_maps, load_series, software
from openmind_data.dwi.options import DwiOptions
from openmind_data.errors import InvalidInputError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.exclusions import exclusion_row
from openmind_data.ids import file_sha256, image_id
from openmind_data.modalities import DWI_DERIVED
from openmind_data.nifti import encode_nifti
from openmind_data.stages.base import Item, Outcome

__all__ = [
    "DERIVED_SUFFIXES",
    "Diffusion",
    "DwiOutcome",
    "derived_path",
    "process_series",
    "write_outcome",
]

log = logging.getLogger(__name__)

#: Name endings of the derived images, after the series' own entities (BEP016-style tensor
#: parameter maps; the mean b0 is the series' reference image, as QSIPrep names it).
DERIVED_SUFFIXES: dict[str, str] = {
    "md": "model-tensor_param-md_dwimap",
    "fa": "model-tensor_param-fa_dwimap",
    "mean_b0": "desc-meanb0_dwiref",
}
#: The steps each derived image depends on.
_DEPENDS: dict[str, frozenset[str]] = {
    "mean_b0": frozenset({"gradients", "mean_b0"}),
    "fa": frozenset(
        {
            "gradients",
            "mean_b0",
            "mask",
            "gibbs",
            "denoise",
            "tensor_fit",
            "clip",
            "bvec_orientation",
        }
    ),
}
_DEPENDS["md"] = _DEPENDS["fa"]


@dataclass
class DwiOutcome:
    """What one series gave: image records with their arrays, and exclusion records."""

    images: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, NDArray[np.float32]] = field(default_factory=dict)  # by image id
    excluded: list[dict[str, Any]] = field(default_factory=list)
    like: Any = None  # the nibabel image whose grid the arrays share
    seconds: dict[str, float] = field(default_factory=dict)


def derived_path(dataset_id: str, source_path: str, derivation: str) -> str:
    """Where a derived image goes in the released layout, beside its series' name.

    >>> derived_path("ds000004", "sub-01/dwi/sub-01_dwi.nii.gz", "fa")
    'ds000004/sub-01/dwi/sub-01_model-tensor_param-fa_dwimap.nii.gz'
    """
    folder, name = posixpath.split(source_path)
    stem = name.removesuffix(".gz").removesuffix(".nii")
    stem = stem.removesuffix("_dwi")
    return posixpath.join(dataset_id, folder, f"{stem}_{DERIVED_SUFFIXES[derivation]}.nii.gz")


@dataclass(frozen=True)
class Diffusion:
    """The DWI stage (:mod:`openmind_data.stages`): a series item (``root`` its dataset) to an
    item per derived map, float32 in the series' grid, with the series' SHA-256; what could not
    be made is in the exclusion rows."""

    options: DwiOptions = field(default_factory=DwiOptions)
    name: str = "dwi"

    def process(self, item: Item) -> Outcome:
        assert item.root is not None and item.source is not None
        outcome = process_series(item.row, item.root, self.options)
        maps = Outcome(excluded=list(outcome.excluded))
        if outcome.images:
            checksum = file_sha256(item.source)
            maps.items = [
                Item(
                    {**record, "source_sha256": checksum},
                    source=item.source,
                    root=item.root,
                    like=outcome.like,
                    data=outcome.arrays[record["image_id"]],
                )
                for record in outcome.images
            ]
        return maps


def process_series(
    row: Mapping[str, Any],
    dataset_root: str | Path,
    options: DwiOptions,
    *,
    mask: NDArray[np.bool_] | None = None,
) -> DwiOutcome:
    """Validate, mask and fit one DWI candidate row of the crawl's table (paths in it are
    relative to ``dataset_root``). Never raises for bad input: it becomes an exclusion record."""
    outcome = DwiOutcome()
    try:
        _process(row, Path(dataset_root), options, mask, outcome)
    except InvalidInputError as error:
        outcome.images.clear()
        outcome.arrays.clear()
        outcome.excluded = [exclusion_row(row, error.reason, error.detail, stage="dwi")]
    return outcome


def _process(
    row: Mapping[str, Any],
    root: Path,
    options: DwiOptions,
    mask: NDArray[np.bool_] | None,
    outcome: DwiOutcome,
) -> None:
    source = str(row["source_path"])
    where = root / source
    if not row.get("bval_path") or not row.get("bvec_path"):
        raise InvalidInputError(where, R.MISSING_GRADIENTS, "the row names no .bval or .bvec file")
    clock = time.perf_counter()
    image, raw, slope, inter = load_series(where)
    outcome.seconds["load"] = time.perf_counter() - clock
    outcome.like = image

    bvals, bvecs = read_gradients(root / row["bval_path"], root / row["bvec_path"])
    gradients = validate_gradients(
        bvals, bvecs, raw.shape[3], where=where, b0_threshold=options.b0_threshold
    )
    selection = select_volumes(gradients, options.max_bval)
    spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
    maps = compute_maps(
        raw, slope, inter, spacing, gradients, selection, options, where=str(where), mask=mask
    )
    del raw
    outcome.seconds |= maps.seconds
    steps = [
        Step(
            "gradients",
            "validate",
            {
                "bval": row["bval_path"],
                "bvec": row["bvec_path"],
                "volumes": len(bvals),
                "b0_volumes": int(gradients.is_b0.sum()),
                "shells": gradients.shells(),
                "repairs": list(gradients.repairs),
            },
        ),
        *maps.steps,
    ]
    arrays: dict[str, NDArray[np.float32] | None] = {
        "mean_b0": maps.mean_b0,
        "fa": maps.fa,
        "md": maps.md,
    }
    if maps.fa is None:
        detail = (
            "no diffusion-weighted volumes: only the mean b0 is made"
            if not gradients.is_dw.any()
            else f"{selection.directions} distinct direction(s), tensor design rank "
            f"{selection.rank} of 6, in shells {list(selection.shells)}: only the mean b0 is made"
        )
        for derivation in ("fa", "md"):
            outcome.excluded.append(
                exclusion_row(
                    row,
                    R.TOO_FEW_DIRECTIONS,
                    detail,
                    stage="dwi",
                    image_id=image_id(row["dataset_id"], source, derivation),
                )
            )
    elif (
        options.orientation == "exclude"
        and maps.orientation is not None
        and maps.orientation.verdict == "suspect"
    ):
        check = maps.orientation
        raise InvalidInputError(
            where,
            R.SUSPECT_ORIENTATION,
            f"fibre coherence {check.coherence:.3f} as given, {check.best_coherence:.3f} with "
            f"{check.best_frame}",
        )
    for derivation, array in arrays.items():
        if array is None:
            continue
        new_id = image_id(row["dataset_id"], source, derivation)
        outcome.arrays[new_id] = array
        outcome.images.append(_record(row, derivation, new_id, array, steps))


def _record(
    row: Mapping[str, Any],
    derivation: str,
    new_id: str,
    array: NDArray[np.float32],
    steps: list[Step],
) -> dict[str, Any]:
    tools = software()
    provenance = list(row.get("provenance") or [])
    provenance += [
        {
            "step": f"dwi.{s.step}",
            "method": s.method,
            "parameters": json.dumps(s.parameters, sort_keys=True),
            "software": tools,
        }
        for s in steps
        if s.step in _DEPENDS[derivation]
    ]
    return {
        **row,
        "image_id": new_id,
        "derivation": derivation,
        "derived_from": f"{row['dataset_id']}/{row['source_path']}",
        "image_path": derived_path(row["dataset_id"], row["source_path"], derivation),
        "modality": DWI_DERIVED[derivation],
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "provenance": provenance,
    }


def write_outcome(outcome: DwiOutcome, out: str | Path) -> list[Path]:
    """Write each derived image to ``out / image_path``; returns the paths written."""
    written = []
    for record in outcome.images:
        path = Path(out) / record["image_path"]
        write_atomic(path, encode_nifti(outcome.arrays[record["image_id"]], outcome.like))
        written.append(path)
    return written
