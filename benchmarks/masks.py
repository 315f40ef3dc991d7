"""Masks benchmark: anatomy and anonymization masks against loading and saving the image.

Per image of a synthetic collection, side by side in one process:

- masks: ``openmind_data.masks.foreground`` (anatomy, anonymization and padding masks, and
  whether the image is a brain extract) on the image's voxels;
- reference: ``nib.load(path).get_fdata(dtype=float32)`` then ``nib.save`` of the same image
  to ``.nii.gz`` (nibabel's default compression level).

The issue's target: masks <= reference for each image. The weights-free brain mask
(``brain_masker("template")``: registration of the MNI152-based head model) is timed too, and
reported, not compared. Each figure is the best of ``--repeat`` runs.

The collection is the project's generator at ``--resolution`` (``small`` is the demo's ~2.4 mm
grids; ``realistic`` is ~1 mm, about 7 M voxels an image).

Run from the repository root::

    .venv/bin/python benchmarks/masks.py --resolution small --repeat 3 --brain
    .venv/bin/python benchmarks/masks.py --collection DIR --repeat 2   # e.g. `openmind synth
                                                                       # DIR --resolution realistic`
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from timing import best

from openmind_data.masks import brain_masker, foreground
from openmind_data.synth import SynthConfig, load_truth, synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", default="small", choices=["tiny", "small", "realistic"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--brain", action="store_true", help="also time the template brain mask")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--collection", type=Path, help="use this collection (made by synth)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openmind-masks-bench-") as tmp:
        if args.collection is not None:
            collection = load_truth(args.collection)
        else:
            config = SynthConfig(resolution=args.resolution, diffusion=False, quality=False)
            collection = synthesize(Path(tmp) / "collection", config, workers=2)
        images = [f for f in collection.files("image") if f["modality"] != "DWI"]
        masker = brain_masker("template") if args.brain else None
        rows = []
        for record in images:
            path = collection.root / record["path"]
            image = nib.load(path)
            data = image.get_fdata(dtype=np.float32)
            zooms = image.header.get_zooms()

            def reference(path: Path = path) -> None:
                loaded = nib.load(path)
                loaded.get_fdata(dtype=np.float32)
                nib.save(loaded, Path(tmp) / "copy.nii.gz")

            masks_s = best(lambda data=data, zooms=zooms: foreground(data, zooms), args.repeat)
            reference_s = best(reference, args.repeat)
            row = {
                "image": record["path"],
                "voxels": int(data.size),
                "masks_s": round(masks_s, 4),
                "load_save_s": round(reference_s, 4),
                "ratio": round(masks_s / reference_s, 3),
            }
            if masker is not None:
                row["brain_s"] = round(
                    best(lambda data=data, image=image: masker(data, image.affine), 1), 3
                )
            rows.append(row)
            print(
                f"{row['image'][:60]:60s} {row['voxels']:>9d} vox  masks {masks_s:.3f} s  "
                f"load+save {reference_s:.3f} s  ratio {row['ratio']:.2f}"
                + (f"  brain {row['brain_s']:.2f} s" if "brain_s" in row else "")
            )
    ratios = [r["ratio"] for r in rows]
    summary = {
        "collection": str(args.collection) if args.collection else args.resolution,
        "images": len(rows),
        "median_ratio": round(statistics.median(ratios), 3),
        "worst_ratio": round(max(ratios), 3),
        "images_over_target": sum(r > 1.0 for r in ratios),
    }
    if masker is not None:
        summary["median_brain_s"] = round(statistics.median(r["brain_s"] for r in rows), 2)
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "images": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
