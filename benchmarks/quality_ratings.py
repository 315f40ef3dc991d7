"""The IQS against human ratings: MRIQC's tables of ABIDE and DS030, from ``mriqc-learn``.

ABIDE (1,101 T1w scans, 17 sites, up to three raters) is the training set; DS030 (265 scans,
two sites, one rater) is held out: nothing is fitted or chosen on it. "Excluded" is a mean
rating below 0. Printed:

- leave-one-site-out on ABIDE: for each site, a model fitted on the 16 others scores it as a
  build scores one dataset of a collection: the table scored is the whole of ABIDE, so the
  site's modality peers are every ABIDE scan and its dataset peers its own scans (for the
  acquisition's metrics; ``peers.py``); the AUC per site, their mean, and the AUC of all
  held-out scores pooled (the figure for a filter applied across datasets);
- DS030: the AUC and the accuracy (IQS >= 3, i.e. p(exclude) >= 0.5, counts as "exclude") of
  a model fitted on all of ABIDE with ``--knots``, ``--cap``, ``--ridge``, ``--prior-images``,
  ``--metrics`` and ``--dataset-metrics``, and of the shipped model
  (``openmind_data/quality/iqs_default.json``), beside MRIQC's classifier (76% accuracy
  leave-one-site-out on ABIDE and 76% on DS030; Esteban et al. 2017).

With ``--anchors DIR`` (a synthetic collection measured by ``scripts/fit_default_iqs.py --work
DIR``) every fit is the shipped recipe, ABIDE's raters plus the synthetic anchors; without it,
ABIDE's raters alone.

Run from the repository root (mriqc-learn is installed by ``make install``)::

    .venv/bin/python scripts/fit_default_iqs.py --work anchors --out /tmp/iqs.json
    .venv/bin/python benchmarks/quality_ratings.py --anchors anchors
    .venv/bin/python benchmarks/quality_ratings.py --knots 0 --cap 8 --abide-only
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from openmind_data.quality import (
    FitSettings,
    MriqcTable,
    auc,
    calibrate_mriqc,
    load_model,
    read_mriqc_table,
    score_mriqc,
)
from openmind_data.quality.model import IqsModel

MRIQC_ACCURACY = 0.76
Fit = Callable[[MriqcTable], IqsModel]


def mriqc_learn_table(name: str) -> Path:
    """A table ``mriqc-learn`` ships (found without importing the package)."""
    try:
        path = Path(str(distribution("mriqc-learn").locate_file(f"mriqc_learn/datasets/{name}")))
    except PackageNotFoundError as error:
        raise SystemExit("install mriqc-learn (make install does)") from error
    return path


def scores_of(table: MriqcTable, model: IqsModel) -> list[float]:
    return [float(s) for s in score_mriqc(table, model).column("image_quality_score").to_pylist()]


def leave_one_site_out(abide: MriqcTable, fit: Fit) -> dict[str, object]:
    excluded = abide.excluded()
    sites = sorted({row["dataset_id"] for row in abide.rows})
    held_out: dict[int, float] = {}
    per_site: dict[str, float] = {}
    for site in sites:
        train = [i for i, row in enumerate(abide.rows) if row["dataset_id"] != site]
        test = [i for i, row in enumerate(abide.rows) if row["dataset_id"] == site]
        model = fit(abide.take(train))
        scores = scores_of(abide.take(test + train), model)[: len(test)]
        held_out.update(zip(test, scores, strict=True))
        labels = [bool(excluded[i]) for i in test]
        if 0 < sum(labels) < len(labels):
            per_site[site] = auc(labels, [held_out[i] for i in test])
    order = sorted(held_out)
    return {
        "per_site": {k: round(v, 3) for k, v in per_site.items()},
        "mean_site_auc": round(sum(per_site.values()) / len(per_site), 3),
        "pooled_auc": round(
            auc([bool(excluded[i]) for i in order], [held_out[i] for i in order]), 3
        ),
    }


def held_out(ds030: MriqcTable, model: IqsModel) -> dict[str, float]:
    labels = [bool(e) for e in ds030.excluded()]
    scores = scores_of(ds030, model)
    hits = sum((s >= 3.0) == label for s, label in zip(scores, labels, strict=True))
    return {
        "auc": round(auc(labels, scores), 3),
        "accuracy": round(hits / len(labels), 3),
        "predicted_excluded": sum(s >= 3.0 for s in scores),
        "excluded": sum(labels),
        "images": len(labels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = FitSettings()
    parser.add_argument("--knots", type=float, nargs="+", default=list(defaults.knots))
    parser.add_argument("--cap", type=float, default=defaults.cap)
    parser.add_argument("--ridge", type=float, default=defaults.ridge)
    parser.add_argument("--prior-images", type=int, default=defaults.prior_images)
    parser.add_argument("--metrics", nargs="+", default=list(defaults.metrics))
    parser.add_argument(
        "--dataset-metrics",
        nargs="*",
        default=list(defaults.dataset_metrics),
        help="the metrics referenced against the site (none: the modality only)",
    )
    parser.add_argument("--anchors", type=Path, help="fit with these synthetic anchors too")
    parser.add_argument("--abide-only", action="store_true", help="do not score DS030")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    settings = FitSettings(
        knots=tuple(args.knots),
        cap=args.cap,
        ridge=args.ridge,
        prior_images=args.prior_images,
        metrics=tuple(args.metrics),
        dataset_metrics=tuple(args.dataset_metrics),
    )
    abide = read_mriqc_table(mriqc_learn_table("abide.tsv"))
    fit: Fit = lambda table: calibrate_mriqc(table, name="abide", settings=settings).model  # noqa: E731
    if args.anchors is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
        from fit_default_iqs import anchored_fit, read_anchors  # noqa: PLC0415

        anchors, ratings = read_anchors(args.anchors)
        fit = lambda table: anchored_fit(table, anchors, ratings, settings)  # noqa: E731
    figures: dict[str, object] = {"settings": settings.__dict__, "anchors": bool(args.anchors)}
    figures["abide_leave_one_site_out"] = leave_one_site_out(abide, fit)
    print("ABIDE leave-one-site-out:", json.dumps(figures["abide_leave_one_site_out"]))
    if not args.abide_only:
        ds030 = read_mriqc_table(mriqc_learn_table("ds030.tsv"))
        fitted = fit(abide)
        figures["ds030_fitted_on_abide"] = held_out(ds030, fitted)
        figures["ds030_shipped_model"] = held_out(ds030, load_model())
        figures["mriqc_classifier_accuracy"] = MRIQC_ACCURACY
        print("DS030, fitted on ABIDE here:", json.dumps(figures["ds030_fitted_on_abide"]))
        print("DS030, shipped model:      ", json.dumps(figures["ds030_shipped_model"]))
        print(f"MRIQC's classifier: accuracy {MRIQC_ACCURACY:.2f} on DS030")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
