"""Fit the IQS model shipped with the package (openmind_data/quality/iqs_default.json).

The weights come from a non-negative logistic regression on two sets of rated images:

- ABIDE's human ratings: MRIQC's metrics of 1,101 T1w scans from 17 sites with up to three
  raters each, as ``mriqc-learn`` ships them (the target: the share of a scan's raters who
  excluded it, a "doubtful" counting half; each scan measured as a build measures it: the
  acquisition's metrics against its own site, the artefacts against all of ABIDE);
- anchors for what ABIDE's raters never saw: the synthetic collection's quality ladder (seed
  1, six copies) measured by the toolkit, a clean image's target 0, a severity's s/3 (severe:
  1), each image against its dataset and modality. ABIDE has few badly blurred, ghosted or
  moved scans, so on its own it cannot say how bad those are (its fit gives blur at most +1.4
  log-odds).

DS030 is never used here: it is the held-out test (benchmarks/quality_ratings.py).

The references, the prior an image is measured against when it has too few peers:

- T1w (and the pooled ``*``): ABIDE's, robust statistics of its 1,101 scans (ghosting, which
  MRIQC does not measure on T1w, as for the other modalities). The toolkit's
  metrics follow MRIQC's definitions (openmind_data/quality/metrics.py), and on a real clean
  head land where MRIQC's do (README: "Image quality").
- every other modality: no human ratings exist for it here. Its medians come from the
  toolkit's measurements of the clean images of the synthetic collection, its scales from the
  larger of that collection's spread and ABIDE's (a population of real scanners varies at
  least as much as ABIDE's T1w scanners do).

    python scripts/fit_default_iqs.py [--work DIR [--reuse]] [--out FILE]

``--out`` defaults to the shipped file, openmind_data/quality/iqs_default.json.

``--work DIR`` keeps the synthetic measurements (DIR/quality/quality.parquet, DIR/ratings.csv)
for ``benchmarks/quality_ratings.py --anchors DIR``; ``--reuse`` fits from those kept in DIR
instead of measuring again (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

from fit_synthetic_iqs import COPIES, SEED, measure_synthetic

from openmind_data.quality import FitSettings, MriqcTable, fit_model, read_mriqc_table
from openmind_data.quality.fit import probability_of_rating, references_of
from openmind_data.quality.model import POOLED, IqsModel, Reference

VERSION = "2.1.0"
ANCHOR_WEIGHT = 1.0  # of each synthetic image, against 1 for each ABIDE scan


def anchored_fit(
    abide: MriqcTable,
    anchors: Sequence[Mapping[str, Any]],
    ratings: Mapping[str, float],
    settings: FitSettings,
    *,
    name: str = "openmind-iqs",
    version: str = VERSION,
) -> IqsModel:
    """The shipped recipe: ``abide``'s raters plus the synthetic ``anchors`` (toolkit rows,
    ``ratings`` their truth by image_path, 1-5)."""
    real = references_of(abide.rows, settings.min_images)
    clean = [r for r in anchors if ratings.get(r["image_path"]) == 1.0]
    synthetic = {
        modality: {
            column: Reference(r.median, max(r.scale, _scale(real, column)), r.images)
            for column, r in metrics.items()
        }
        for modality, metrics in references_of(clean, settings.min_images).items()
    }
    # ABIDE's where it has the metric; the synthetic collection's for the rest (ghosting, which
    # MRIQC does not measure on T1w, and every other modality).
    references = {
        m: synthetic.get(m, {}) | real.get(m, {}) for m in sorted(synthetic.keys() | real.keys())
    }
    # Each set is measured in its own units against its own peers: the synthetic collection's
    # T1w are the toolkit's, not MRIQC's, so they are a modality of their own while fitting.
    synthetic_rows = [
        {
            **r,
            "modality": f"synthetic {r['modality']}",
            "dataset_id": f"synthetic {r['dataset_id']}",
        }
        for r in anchors
    ]
    fitting = references | {f"synthetic {m}": metrics for m, metrics in synthetic.items()}
    rows = [*abide.rows, *synthetic_rows]
    targets = [*abide.targets()] + [
        (len(abide.rows) + i, probability_of_rating(ratings[r["image_path"]]), ANCHOR_WEIGHT)
        for i, r in enumerate(anchors)
        if r["image_path"] in ratings
    ]
    model = fit_model(
        rows, targets, name=name, version=version, references=fitting, settings=settings
    )
    return replace(model, references=references)


def _scale(real: Mapping[str, Mapping[str, Reference]], column: str) -> float:
    """ABIDE's spread of a metric, or 0 for one MRIQC does not measure on T1w (ghosting)."""
    reference = real[POOLED].get(column)
    return 0.0 if reference is None else reference.scale


def read_anchors(work: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """A measured synthetic collection kept by ``--work``."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    with (work / "ratings.csv").open() as handle:
        ratings = {r["image_path"]: float(r["rating"]) for r in csv.DictReader(handle)}
    return pq.read_table(work / "quality" / "quality.parquet").to_pylist(), ratings


def abide_table() -> MriqcTable:
    path = distribution("mriqc-learn").locate_file("mriqc_learn/datasets/abide.tsv")
    return read_mriqc_table(Path(str(path)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="Working folder (default: a temporary one).")
    parser.add_argument("--out", type=Path, default=Path("openmind_data/quality/iqs_default.json"))
    parser.add_argument("--reuse", action="store_true", help="Fit from --work's measurements.")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.reuse and args.work is None:
        parser.error("--reuse needs --work DIR")
    abide = abide_table()
    settings = FitSettings()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        if not args.reuse:
            measure_synthetic(work, workers=args.workers)
        anchors, ratings = read_anchors(work)
    model = anchored_fit(abide, anchors, ratings, settings)
    model = replace(
        model,
        description=(
            "Weights: a non-negative logistic fit to ABIDE's human ratings (mriqc-learn's "
            "abide.tsv: MRIQC's metrics of 1,101 T1w scans, 17 sites, up to three raters; "
            "target the share of raters excluding a scan, doubtful counting half; FWHM, SNR, "
            "CNR and FBER against the scan's site, the artefact measures against all of "
            "ABIDE) and to the synthetic quality ladder's truth as anchors for severe "
            "degradations. References: T1w from ABIDE; other modalities' medians from "
            "the synthetic collection's clean images, scales at least ABIDE's. By "
            "scripts/fit_default_iqs.py."
        ),
        fitted_on={
            "human_ratings": "mriqc-learn abide.tsv",
            "rated_images": len(abide.targets()),
            "sites": len({r["dataset_id"] for r in abide.rows}),
            "target": "share of raters excluding, doubtful counting half",
            "anchors": f"synthetic collection, seed {SEED}, {COPIES} copies: "
            f"{len(anchors)} images, weight {ANCHOR_WEIGHT} each",
            "metrics": list(settings.metrics),
            "references": {
                "T1w, *": "ABIDE",
                "others": "synthetic collection's clean images, scales at least ABIDE's",
            },
        },
    )
    for column, weights in model.weights.items():
        print(f"{column}: {[round(w, 3) for w in weights]} (bound {model.bound(column):.2f})")
    print(f"intercept: {model.intercept:.3f}")
    print(f"wrote {model.save(args.out)}")


if __name__ == "__main__":
    main()
