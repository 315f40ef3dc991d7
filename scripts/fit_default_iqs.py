"""Fit the IQS model shipped with the package (openmind_data/quality/iqs_default.json).

The shipped model is calibrated on the synthetic collection, with the ratings a rater who knew
the truth would give (clean 1; the quality ladder's severities 1, 2, 3 rated 2.33, 3.67, 5).
It knows the toolkit's synthetic degradations, not a human rater's taste: calibrate it on your
own ratings, or on OpenMind's released scores, with ``openmind quality calibrate``.

The collection uses seed 1 and six copies of each recipe (the quality ladder in T1w, T2w and
FLAIR, twice each), so the tests, which render their own ladders from other seeds, do not
grade the model on the images it was fitted to.

    python scripts/fit_default_iqs.py [--work DIR] [--out openmind_data/quality/iqs_default.json]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from openmind_data.crawl import crawl
from openmind_data.dwi import run_dwi
from openmind_data.masks import MaskOptions, run_masks
from openmind_data.quality import calibrate, measure_quality, read_ratings
from openmind_data.synth import SynthConfig, synthesize

VERSION = "1.0.0"
DESCRIPTION = (
    "Fitted by scripts/fit_default_iqs.py on the synthetic collection (seed 1, 6 copies) with "
    "truth ratings: clean 1, degradation severities 1-3 rated 2.33-5. References per modality "
    "from that collection. Calibrate on real ratings for real data."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="Working folder (default: a temporary one).")
    parser.add_argument("--out", type=Path, default=Path("openmind_data/quality/iqs_default.json"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--copies", type=int, default=6, help="Copies of the five recipes.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        sources = work / "sources"
        collection = synthesize(
            sources, SynthConfig(seed=1, copies=args.copies), workers=args.workers, overwrite=True
        )
        index = crawl(sources, workers=args.workers)
        maps = run_dwi(index.candidates, sources, work / "dwi", workers=args.workers)
        masked = run_masks(
            index.candidates,
            sources,
            work / "masks",
            MaskOptions(brain="template"),
            derived=maps.images,
            derived_root=work / "dwi",
            workers=args.workers,
        )
        measured = measure_quality(
            masked.images, masked.voxels, work / "masks", workers=args.workers
        )
        measured.write(work / "quality")
        ratings_path = work / "ratings.csv"
        with ratings_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["image_path", "rating"])
            writer.writeheader()
            writer.writerows(collection.quality_ratings())
        fit = calibrate(
            measured.images,
            read_ratings(ratings_path),
            name="openmind-iqs",
            version=VERSION,
            description=DESCRIPTION,
        )
        path = fit.model.save(args.out)
        for key, value in fit.counts().items():
            print(f"{key}: {value}")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
