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

``--real`` instead measures every brain backend side by side on the real heads of
``tests/real_heads.py`` (pydeface's mean T1 head and Colin27 from Debian's mricron-data, under
every variation): brain Dice against Colin27's brain (ch2bet closed by 4 mm, and ch2bet as it
is), seconds per image on this machine, and, through the whole masks stage with each backend,
the defacing verdict, the share of the facial surface removed (measured from the truth brain
where there is one) and the share of the brain kept. ``--contrasts`` adds each backend's Dice on
one image of every contrast of the synthetic collection (deepbet was trained on T1w only; the
synthetic heads are MNI152-made, so this shows robustness to contrast, not real accuracy).

Run from the repository root::

    .venv/bin/python benchmarks/masks.py --resolution small --repeat 3 --brain
    .venv/bin/python benchmarks/masks.py --real --backends template,deepbet --contrasts
    .venv/bin/python benchmarks/masks.py --real --backends hd-bet --variations as-stored
    .venv/bin/python benchmarks/masks.py --collection DIR --repeat 2   # e.g. `openmind synth
                                                                       # DIR --resolution realistic`
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from timing import best

from openmind_data.masks import brain_masker, foreground
from openmind_data.synth import SynthConfig, load_truth, synthesize


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def real_heads(
    backends: list[str], variations: list[str] | None, device: str
) -> list[dict[str, object]]:
    """Every backend on every real head and variation: Dice, seconds, the stage's verdicts."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import real_heads as rh  # noqa: PLC0415 (the tests' own real heads)

    from openmind_data.errors import InvalidInputError  # noqa: PLC0415
    from openmind_data.masks import MaskOptions, face_removed, mask_image  # noqa: PLC0415

    raw_bet = None
    if rh.have_colin():
        raw_bet = np.asarray(nib.load(rh.MRICRON / "ch2bet.nii.gz").dataobj) > 0
    heads = [h for h in rh.with_faces() if variations is None or h.name.split("/")[1] in variations]
    heads += [rh.pydeface_heads()[1]] + ([rh.colin()[1]] if rh.have_colin() else [])
    rows: list[dict[str, object]] = []
    for backend in backends:
        masker = brain_masker(backend, device=device)
        masker(*_warm())  # networks loaded before the clock starts
        for head in heads:
            row: dict[str, object] = {"backend": backend, "head": head.name}
            start = time.perf_counter()
            brain = masker(head.values, head.affine)
            row["brain_s"] = round(time.perf_counter() - start, 2)
            if head.brain is not None and not head.brain_extract:
                row["dice"] = round(dice(brain, head.brain), 4)
                if raw_bet is not None and head.name == "colin27/as-stored":
                    row["dice_ch2bet_as_is"] = round(dice(brain, raw_bet), 4)
            try:
                out = mask_image(
                    head.values,
                    head.affine,
                    head.spacing,
                    MaskOptions(brain=backend, device=device),
                    masker,
                    where=head.name,
                )
            except InvalidInputError as error:
                row["defacing"] = f"excluded: {error.reason}"
            else:
                row["defacing"] = out.fields["defacing"]
                truth = head.brain if head.brain is not None else out.brain
                if head.face and truth is not None:
                    before = out.anatomy | out.anon
                    removed = face_removed(before, out.anon, truth, head.affine, head.spacing)
                    row["face_removed"] = round(removed, 4)
                    row["brain_kept"] = round(1 - float((out.anon & truth).sum() / truth.sum()), 5)
                if head.anon is not None:
                    row["anon_dice"] = round(dice(out.anon, head.anon), 4)
                    row["unchanged"] = bool(np.array_equal(out.data, head.values))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _warm() -> tuple[np.ndarray, np.ndarray]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import real_heads as rh  # noqa: PLC0415

    head = rh.pydeface_heads()[0]
    return head.values[::4, ::4, ::4], head.affine @ np.diag([4.0, 4.0, 4.0, 1.0])


def contrasts(backends: list[str], device: str) -> list[dict[str, object]]:
    """Each backend's Dice on one image of every contrast of the default synthetic collection."""
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="openmind-masks-bench-") as tmp:
        config = SynthConfig(diffusion=False, quality=False)
        collection = synthesize(Path(tmp) / "collection", config, workers=2)
        seen: dict[str, dict[str, object]] = {}
        for record in collection.files("image"):
            if record["modality"] in seen or "brain" not in record.get("truth_masks", {}):
                continue
            if record.get("is_brain_extract"):
                continue
            if record.get("degradation"):  # the clean image of each contrast
                continue
            seen[str(record["modality"])] = record
        for backend in backends:
            masker = brain_masker(backend, device=device)
            for modality, record in sorted(seen.items()):
                image = nib.load(collection.root / str(record["path"]))
                truth_path = collection.root / record["truth_masks"]["brain"]
                truth = np.asarray(nib.load(truth_path).dataobj) > 0
                start = time.perf_counter()
                mask = masker(image.get_fdata(dtype=np.float32), image.affine)
                row = {
                    "backend": backend,
                    "modality": modality,
                    "dice_synthetic": round(dice(mask, truth), 4),
                    "brain_s": round(time.perf_counter() - start, 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true", help="brain backends on the real heads")
    parser.add_argument("--backends", default="template,deepbet", help="comma-separated")
    parser.add_argument("--variations", help="comma-separated (default: all)")
    parser.add_argument("--contrasts", action="store_true", help="and on synthetic contrasts")
    parser.add_argument("--device", default="cpu", help="for the learned maskers: cpu | cuda")
    parser.add_argument("--resolution", default="small", choices=["tiny", "small", "realistic"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--brain", action="store_true", help="also time the template brain mask")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--collection", type=Path, help="use this collection (made by synth)")
    args = parser.parse_args()
    if args.real or args.contrasts:
        backends = args.backends.split(",")
        variations = args.variations.split(",") if args.variations else None
        rows = real_heads(backends, variations, args.device) if args.real else []
        rows += contrasts(backends, args.device) if args.contrasts else []
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        return
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
