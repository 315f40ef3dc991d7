"""``run_dwi``: every DWI candidate of a crawl index through the stage, in parallel processes."""

from __future__ import annotations

import logging
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from openmind_data.crawl.api import find_datasets
from openmind_data.dwi.options import DwiOptions
from openmind_data.dwi.stage import process_series, write_outcome
from openmind_data.errors import ConfigError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.exclusions import exclusion_row
from openmind_data.parallel import run_jobs
from openmind_data.schema import EXCLUDED_SCHEMA, IMAGE_SCHEMA, table_from_records, write_table

__all__ = ["DwiResult", "run_dwi"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DwiResult:
    images: pa.Table  # image schema: one row per derived image, files under ``out``
    excluded: pa.Table  # exclusion schema, stage 'dwi'

    def counts(self) -> dict[str, object]:
        return {
            "dwi images": self.images.num_rows,
            "dwi images_by_modality": dict(
                sorted(Counter(self.images.column("modality").to_pylist()).items())
            ),
            "dwi excluded": self.excluded.num_rows,
            "dwi excluded_by_reason": dict(
                sorted(Counter(self.excluded.column("reason").to_pylist()).items())
            ),
        }

    def write(self, out: str | Path) -> dict[str, Path]:
        paths = {
            "images": Path(out) / "dwi.parquet",
            "excluded": Path(out) / "dwi.excluded.parquet",
        }
        write_table(self.images, paths["images"])
        write_table(self.excluded, paths["excluded"])
        return paths


def run_dwi(
    candidates: pa.Table,
    roots: str | Path | Sequence[str | Path],
    out: str | Path,
    options: DwiOptions | None = None,
    *,
    workers: int = 1,
    progress: bool = False,
) -> DwiResult:
    """Turn the DWI rows of ``candidates`` (the crawl's table) into images under ``out``.

    ``roots`` are the folders the crawl was given; each row's ``dataset_id`` names its dataset.
    Output does not depend on ``workers``: rows come back in the candidates' order.
    """
    options = options or DwiOptions()
    if isinstance(roots, str | Path):
        roots = [roots]
    datasets = {path.name: str(path) for path in find_datasets(roots)}
    series = candidates.filter(pc.equal(pc.cast(candidates["modality"], pa.string()), "DWI"))
    rows = series.to_pylist()
    missing = sorted({r["dataset_id"] for r in rows} - datasets.keys())
    if missing:
        raise ConfigError(f"datasets {missing} of the index are not under {list(map(str, roots))}")
    jobs = [(row, datasets[row["dataset_id"]], str(out), options) for row in rows]
    results = run_jobs(_one, jobs, workers=workers, desc="dwi", unit="series", progress=progress)
    result = DwiResult(
        images=table_from_records(_flatten(r[0] for r in results), IMAGE_SCHEMA),
        excluded=table_from_records(_flatten(r[1] for r in results), EXCLUDED_SCHEMA),
    )
    log.info(
        "dwi: %d series -> %d images, %d exclusion rows",
        len(rows),
        result.images.num_rows,
        result.excluded.num_rows,
    )
    return result


def _one(
    job: tuple[Mapping[str, Any], str, str, DwiOptions],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    row, root, out, options = job
    try:
        outcome = process_series(row, root, options)
        write_outcome(outcome, out)
    except Exception as error:  # noqa: BLE001 - one series must not stop the others; recorded
        log.debug("dwi: %s failed:\n%s", row["source_path"], traceback.format_exc())
        detail = f"{type(error).__name__}: {error}"
        return [], [exclusion_row(row, R.PROCESSING_ERROR, detail, stage="dwi")]
    return outcome.images, outcome.excluded


def _flatten(groups: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [item for group in groups for item in group]
