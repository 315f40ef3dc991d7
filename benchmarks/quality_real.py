"""The shipped IQS on real heads, clean and degraded: Colin27 and pydeface's mean head.

Each head (tests/real_heads.py: Colin27 from Debian's mricron-data, fetched by ``make``; the
mean head from pydeface's wheel) is degraded by noise, blur, a bias field, ghosting and motion
at severities 1-3 (``real_heads.DEGRADATIONS``). Every copy goes through the toolkit as a CPU
build takes it: its own masks (``--brain``, default ``auto``), the metrics, the shipped model,
scored alone (no peers). Printed per head: the clean score, each kind's scores by severity with
Spearman's rho, and the metric that drives the severe case; then the issue's bars (clean <= 2,
severe >= 4, rho >= 0.9) as counts; then the cost of the metrics and the score of each clean
head against loading it with nibabel (best of 3).

    .venv/bin/python benchmarks/quality_real.py [--brain auto|template|deepbet] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy.stats import spearmanr
from timing import best

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from real_heads import DEGRADATIONS, colin, degraded, have_colin, masked, pydeface_heads

from openmind_data.executors import map_ordered
from openmind_data.quality import image_quality_metrics, load_model

Case = tuple[str, str | None, int, str]


def _heads() -> dict[str, Any]:
    heads = {"pydeface-mean": pydeface_heads()[0]}
    if have_colin():
        heads["colin27"] = colin()[0]
    return heads


def _measure(case: Case) -> tuple[Case, dict[str, float | None]]:
    name, kind, severity, backend = case
    head = _heads()[name]
    if kind is not None:
        head = degraded(head, kind, severity)
    m = masked(head, "T1w", brain=backend)
    metrics = image_quality_metrics(
        m.data, m.anatomy, m.anon, m.brain, modality="T1w", spacing=head.spacing
    )
    return case, metrics


def _cost() -> dict[str, float]:
    """Metrics and score of each clean head over its masks, against loading it with nibabel
    (``np.asanyarray(nib.load(path).dataobj)``); best of 3."""
    model = load_model()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, head in sorted(_heads().items()):
            path = Path(tmp) / f"{name}.nii.gz"
            nib.save(head.image(), path)
            m = masked(head, "T1w", brain="template")

            def quality(m: Any = m, head: Any = head) -> None:
                metrics = image_quality_metrics(
                    m.data, m.anatomy, m.anon, m.brain, modality="T1w", spacing=head.spacing
                )
                model.score(metrics, "T1w")

            ratio = best(quality, 3) / best(lambda p=path: np.asanyarray(nib.load(p).dataobj), 3)
            out[name] = round(ratio, 2)
            print(f"{name}: metrics and score {ratio:.2f}x the load")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brain", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = load_model()
    names = sorted(_heads())
    cases: list[Case] = [(n, None, 0, args.brain) for n in names]
    cases += [(n, k, s, args.brain) for n in names for k in DEGRADATIONS for s in (1, 2, 3)]
    measured = dict(map_ordered(_measure, cases, workers=args.workers, desc="heads", unit="image"))
    figures: dict[str, Any] = {"model": model.label, "brain": args.brain, "heads": {}}
    bars = {"clean <= 2": [0, 0], "severe >= 4": [0, 0], "rho >= 0.9": [0, 0]}
    for name in names:
        clean = model.score(measured[(name, None, 0, args.brain)], "T1w") or 0.0
        head: dict[str, Any] = {"clean": round(clean, 2)}
        bars["clean <= 2"][0] += clean <= 2.0
        bars["clean <= 2"][1] += 1
        print(f"{name}: clean {clean:.2f}")
        for kind in DEGRADATIONS:
            metrics = [measured[(name, kind, s, args.brain)] for s in (1, 2, 3)]
            scores = [clean] + [model.score(m, "T1w") or 0.0 for m in metrics]
            rho = float(spearmanr(range(4), scores).statistic)
            parts = model.contributions(metrics[-1], "T1w")
            driver = max(parts, key=parts.__getitem__)
            head[kind] = {"scores": [round(s, 2) for s in scores], "rho": round(rho, 2)}
            bars["severe >= 4"][0] += scores[-1] >= 4.0
            bars["severe >= 4"][1] += 1
            bars["rho >= 0.9"][0] += rho >= 0.9
            bars["rho >= 0.9"][1] += 1
            print(
                f"  {kind:9s} "
                + " ".join(f"{s:.2f}" for s in scores)
                + f"  rho {rho:+.2f}  severe driven by {driver} ({parts[driver]:.2f})"
            )
        figures["heads"][name] = head
    figures["bars"] = {k: f"{a} of {b}" for k, (a, b) in bars.items()}
    figures["cost"] = _cost()
    print(json.dumps(figures["bars"]))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
