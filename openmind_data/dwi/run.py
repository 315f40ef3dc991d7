"""``run_dwi``: every DWI candidate of a crawl index through the diffusion stage, its maps
written under ``out``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

import pyarrow as pa
import pyarrow.compute as pc

from openmind_data.crawl.api import find_datasets
from openmind_data.dwi.options import DwiOptions
from openmind_data.dwi.stage import Diffusion
from openmind_data.errors import ConfigError
from openmind_data.nifti import encode_nifti
from openmind_data.stages import Item, Outcome, Running, StageResult, run_pipeline

__all__ = ["MapFiles", "run_dwi"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapFiles:
    """The files of the DWI command: each map as float32 NIfTI at its ``image_path``."""

    name: str = "dwi"

    def process(self, item: Item) -> Outcome:
        assert item.data is not None, "map files follow the diffusion stage"
        return Outcome([item], files={item.row["image_path"]: encode_nifti(item.data, item.like)})


def run_dwi(
    candidates: pa.Table,
    roots: str | Path | Sequence[str | Path],
    out: str | Path,
    options: DwiOptions | None = None,
    **running: Unpack[Running],
) -> StageResult:
    """Turn the DWI rows of ``candidates`` (the crawl's table) into images under ``out``, run
    as ``running`` says (:class:`~openmind_data.stages.Running`: the executor, the journal).

    ``roots`` are the folders the crawl was given; each row's ``dataset_id`` names its dataset.
    Output does not depend on the executor: rows come back in the candidates' order.
    """
    options = options or DwiOptions()
    if isinstance(roots, str | Path):
        roots = [roots]
    datasets = {path.name: path for path in find_datasets(roots)}
    series = candidates.filter(pc.equal(pc.cast(candidates["modality"], pa.string()), "DWI"))
    rows = series.to_pylist()
    missing = sorted({r["dataset_id"] for r in rows} - datasets.keys())
    if missing:
        raise ConfigError(f"datasets {missing} of the index are not under {list(map(str, roots))}")
    items = [
        Item(row, datasets[row["dataset_id"]] / row["source_path"], datasets[row["dataset_id"]])
        for row in rows
    ]
    result = run_pipeline(
        (Diffusion(options), MapFiles()),
        items,
        name="dwi",
        out=out,
        unit="series",
        **running,
    )
    log.info(
        "dwi: %d series -> %d images, %d exclusion rows",
        len(rows),
        result.images.num_rows,
        result.excluded.num_rows,
    )
    return result
