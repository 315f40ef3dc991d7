"""Quality benchmark: the metrics and the IQS of an image against loading it with nibabel.

Per image of a synthetic collection, side by side in one process:

- quality: ``image_quality_metrics`` over the image's masks (the voxels as stored, as the
  stage reads them) and the shipped model's ``score``;
- reference, two ways: the cheapest load, ``np.asanyarray(nib.load(path).dataobj)`` (the
  voxels in their stored type: decompression and parsing only), and the usual one,
  ``nib.load(path).get_fdata()`` (float64).

The issue's target: quality <= the load, for each image; the ratios are against the cheapest
load. The masks (template brain mask) are made first and not timed. Each figure is the best of
``--repeat`` runs.

Images the masks stage would exclude (a defacing that would cut the brain) are left out. The
figures against human ratings are ``benchmarks/quality_ratings.py``'s; on real heads,
``benchmarks/quality_real.py``'s.

The collection is the project's generator at ``--resolution`` (``small`` is the demo's ~2.4 mm
grids; ``realistic`` is ~1 mm, about 7 M voxels an image).

Run from the repository root::

    .venv/bin/python benchmarks/quality.py --resolution small --repeat 5
    .venv/bin/python benchmarks/quality.py --collection DIR --repeat 3
    # DIR made by `openmind synth DIR --resolution realistic`
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from timing import best

from openmind_data.errors import InvalidInputError
from openmind_data.masks import MaskOptions, brain_masker, mask_image
from openmind_data.quality import image_quality_metrics, load_model
from openmind_data.synth import SynthConfig, load_truth, synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", default="small", choices=["tiny", "small", "realistic"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--collection", type=Path, help="use this collection (made by synth)")
    args = parser.parse_args()
    model = load_model()
    masker = brain_masker("template")
    with tempfile.TemporaryDirectory(prefix="openmind-quality-bench-") as tmp:
        if args.collection is not None:
            collection = load_truth(args.collection)
        else:
            config = SynthConfig(resolution=args.resolution, diffusion=False)
            collection = synthesize(Path(tmp) / "collection", config, workers=2)
        rows = []
        for record in collection.files("image"):
            if record["modality"] == "DWI" or record.get("reason"):
                continue
            path = collection.root / record["path"]
            image = nib.load(path)
            stored = np.asanyarray(image.dataobj)
            zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
            try:
                masked = mask_image(
                    stored,
                    image.affine,
                    zooms,
                    MaskOptions(brain="template"),
                    masker,
                    where=str(path),
                )
            except InvalidInputError as error:  # excluded by the masks stage: not measured
                print(f"{record['path'][:58]:58s} excluded: {error.reason}")
                continue
            modality = record["modality"]

            def quality(
                data: Any = stored, m: Any = masked, zooms: Any = zooms, modality: str = modality
            ) -> None:
                metrics = image_quality_metrics(
                    data, m.anatomy, m.anon, m.brain, modality=modality, spacing=zooms
                )
                model.score(metrics, modality)

            quality_s = best(quality, args.repeat)
            load_s = best(lambda p=path: np.asanyarray(nib.load(p).dataobj), args.repeat)
            fdata_s = best(lambda p=path: nib.load(p).get_fdata(), args.repeat)
            row = {
                "image": record["path"],
                "voxels": int(stored.size),
                "quality_s": round(quality_s, 4),
                "load_s": round(load_s, 4),
                "get_fdata_s": round(fdata_s, 4),
                "ratio": round(quality_s / load_s, 3),
                "ratio_get_fdata": round(quality_s / fdata_s, 3),
            }
            rows.append(row)
            print(
                f"{row['image'][:58]:58s} {row['voxels']:>9d} vox  quality {quality_s:.3f} s  "
                f"load {load_s:.3f} s  get_fdata {fdata_s:.3f} s  ratio {row['ratio']:.2f}"
            )
    ratios = [r["ratio"] for r in rows]
    summary = {
        "collection": str(args.collection) if args.collection else args.resolution,
        "images": len(rows),
        "median_ratio": round(statistics.median(ratios), 3),
        "worst_ratio": round(max(ratios), 3),
        "images_over_target": sum(r > 1.0 for r in ratios),
        "median_ratio_get_fdata": round(statistics.median(r["ratio_get_fdata"] for r in rows), 3),
    }
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "images": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
