"""Fit an IQS model to the synthetic collection's truth ratings, for comparison with the shipped
one (which is fitted on ABIDE's human ratings: scripts/fit_default_iqs.py).

A rater who knew the truth rates the synthetic collection: clean 1, the quality ladder's
severities 1, 2, 3 rated 2.33, 3.67, 5. The collection uses seed 1 and six copies of each
recipe (the quality ladder in T1w, T2w and FLAIR, twice each), so the tests, which render their
own ladders from other seeds, are not graded on the images a model was fitted to.
:func:`measure_synthetic` is also how the shipped model gets its references for the modalities
ABIDE does not have.

    python scripts/fit_synthetic_iqs.py --out iqs_synthetic.json [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from openmind_data.crawl import crawl
from openmind_data.dwi import run_dwi
from openmind_data.masks import MaskOptions, run_masks
from openmind_data.quality import FitSettings, calibrate, measure_quality, read_ratings
from openmind_data.synth import SynthConfig, synthesize

SEED, COPIES = 1, 6


def measure_synthetic(
    work: Path, *, copies: int = COPIES, workers: int = 2
) -> tuple[pa.Table, Path]:
    """The synthetic collection measured by the toolkit (template brain masks), and the truth
    ratings' file (image_path, rating); kept in ``work`` (quality/quality.parquet,
    ratings.csv) and re-used from there when a run finds them."""
    table, ratings = work / "quality" / "quality.parquet", work / "ratings.csv"
    if table.exists() and ratings.exists():
        return pq.read_table(table), ratings
    sources = work / "sources"
    collection = synthesize(
        sources, SynthConfig(seed=SEED, copies=copies), workers=workers, overwrite=True
    )
    index = crawl(sources, workers=workers)
    maps = run_dwi(index.candidates, sources, work / "dwi", workers=workers)
    masked = run_masks(
        index.candidates,
        sources,
        work / "masks",
        MaskOptions(brain="template"),
        derived=maps.images,
        derived_root=work / "dwi",
        workers=workers,
    )
    measured = measure_quality(masked.images, masked.voxels, work / "masks", workers=workers)
    table.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(measured.images, table)
    with ratings.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image_path", "rating"])
        writer.writeheader()
        writer.writerows(collection.quality_ratings())
    return measured.images, ratings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="Working folder (default: a temporary one).")
    parser.add_argument("--out", type=Path, default=Path("iqs_synthetic.json"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--copies", type=int, default=COPIES, help="Copies of the recipes.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        images, ratings = measure_synthetic(
            args.work or Path(scratch), copies=args.copies, workers=args.workers
        )
        fit = calibrate(
            images,
            read_ratings(ratings),
            name="openmind-iqs-synthetic",
            version="2",
            settings=FitSettings(),
            description="Fitted by scripts/fit_synthetic_iqs.py on the synthetic collection's "
            f"truth ratings (seed {SEED}, {args.copies} copies).",
        )
    for key, value in fit.counts().items():
        print(f"{key}: {value}")
    print(f"wrote {fit.model.save(args.out)}")


if __name__ == "__main__":
    main()
