"""DWI benchmark: the whole stage against a bare dipy fit plus a bare nibabel read and write.

What is compared, on the same series in the same run:

- stage: ``process_series`` (load, validate the gradient table, mean b0, median_otsu mask,
  slab-wise WLS tensor fit, clipping, b-vector orientation check) then ``write_outcome`` (three
  gzipped float32 NIfTI files).
- reference: ``nib.load(path).get_fdata()`` (read), ``TensorModel(gtab).fit(data, mask=mask)``
  with dipy's default WLS (fit; ``mask`` is the stage's own, made outside the timing), and
  ``nib.save`` of FA, MD and the mean b0 as ``.nii.gz`` (write).

The issue's target: stage time <= 1.5 x (read + fit + write). Series are simulated by the
project's generator (``openmind_data.synth.diffusion``: the MNI152 head, tensors with known FA and
MD, b0 SNR 30), int16 like most scanners' output, 2.2 x 2.2 x 2.5 mm, 100 x 100 x 60 voxels, one
b0 plus 32 or 99 directions at b=1000. Each is timed best of ``--repeat``.

Memory: ``--memory`` also runs the stage on a 128 x 128 x 80 x 200 series in a child process and
prints its peak resident memory beside the series' own size (int16 on disk, float32 and float64
in memory), and the same for the reference (which reads the series as float64, as dipy's
examples do).

Run from the repository root::

    .venv/bin/python benchmarks/dwi.py --repeat 3 --memory
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from dipy.core.gradients import gradient_table
from dipy.reconst.dti import TensorModel
from numpy.typing import NDArray

from openmind_data.dwi import DwiOptions, process_series, write_outcome
from openmind_data.ids import image_id
from openmind_data.synth.builder import save_nifti
from openmind_data.synth.diffusion import simulate_dwi
from openmind_data.synth.geometry import HEAD_CENTRE, NativeGrid


def hemisphere(n: int) -> NDArray[np.float64]:
    """``n`` well-spread unit vectors on a hemisphere (a Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1 - i / n
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def make_series(root: Path, shape: tuple[int, int, int], directions: int) -> dict[str, Any]:
    """Simulate a series into a one-subject dataset under ``root``; returns its crawl row."""
    spacing = (2.2, 2.2, 2.5)
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = HEAD_CENTRE + np.array([0, 0, 20]) - affine[:3, :3] @ (np.array(shape) - 1) / 2
    grid = NativeGrid(shape, affine)
    bvals = np.concatenate([[0.0], np.full(directions, 1000.0)])
    bvecs = np.vstack([np.zeros(3), hemisphere(directions)])
    series = simulate_dwi(
        grid, np.eye(4), "small_64D", np.random.default_rng(0), table=(bvals, bvecs)
    )
    folder = root / "sub-01" / "dwi"
    folder.mkdir(parents=True, exist_ok=True)
    save_nifti(folder / "sub-01_dwi.nii.gz", series.data, affine, "int16", True)
    (folder / "sub-01_dwi.bval").write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    (folder / "sub-01_dwi.bvec").write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in row) for row in bvecs.T) + "\n"
    )
    source = "sub-01/dwi/sub-01_dwi.nii.gz"
    return {
        "image_id": image_id(root.name, source),
        "dataset_id": root.name,
        "source_path": source,
        "bval_path": "sub-01/dwi/sub-01_dwi.bval",
        "bvec_path": "sub-01/dwi/sub-01_dwi.bvec",
        "modality": "DWI",
        "provenance": [],
    }


def best(job: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = job()
        times.append(time.perf_counter() - start)
    return min(times), value


def run_stage(row: dict[str, Any], root: Path, out: Path) -> Any:
    outcome = process_series(row, root, DwiOptions())
    if outcome.excluded:
        raise SystemExit(f"the stage excluded the benchmark series: {outcome.excluded}")
    write_outcome(outcome, out)
    return outcome


def reference(
    path: Path, root: Path, mask: NDArray[np.bool_], out: Path
) -> tuple[float, float, float]:
    start = time.perf_counter()
    image = nib.load(path)
    data = image.get_fdata()
    read = time.perf_counter() - start
    stem = str(path).removesuffix(".nii.gz")
    bvals, bvecs = np.loadtxt(f"{stem}.bval"), np.loadtxt(f"{stem}.bvec").T
    start = time.perf_counter()
    fit = TensorModel(gradient_table(bvals, bvecs=bvecs)).fit(data, mask=mask)
    fa, md = fit.fa, fit.md
    fitted = time.perf_counter() - start
    start = time.perf_counter()
    for name, volume in (("fa", fa), ("md", md), ("b0", data[..., 0])):
        nib.save(nib.Nifti1Image(volume.astype(np.float32), image.affine), out / f"{name}.nii.gz")
    written = time.perf_counter() - start
    return read, fitted, written


def timing(workdir: Path, directions: int, repeat: int) -> dict[str, Any]:
    root = workdir / f"ds{directions:06d}"
    row = make_series(root, (100, 100, 60), directions)
    path = root / row["source_path"]
    stage_time, outcome = best(lambda: run_stage(row, root, workdir / "stage"), repeat)
    fa_id = next(r["image_id"] for r in outcome.images if r["derivation"] == "fa")
    mask = outcome.arrays[fa_id] > 0  # what the stage fitted
    parts = [reference(path, root, mask, workdir) for _ in range(repeat)]
    read, fitted, written = (min(p[i] for p in parts) for i in range(3))
    ref = read + fitted + written
    return {
        "series": f"100x100x60x{directions + 1} int16",
        "masked_voxels": int(mask.sum()),
        "stage_s": round(stage_time, 3),
        "stage_parts_s": {k: round(v, 3) for k, v in outcome.seconds.items()},
        "reference_read_s": round(read, 3),
        "reference_fit_s": round(fitted, 3),
        "reference_write_s": round(written, 3),
        "ratio": round(stage_time / ref, 3),
    }


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, root: str) -> None:
    """Run one job on the large series and print peak resident memory (MiB) as JSON."""
    import dipy.reconst.dti  # noqa: F401, PLC0415  imports count toward the baseline

    rows = json.loads((Path(root) / "row.json").read_text())
    # A child inherits its parent's high-water mark across fork and exec; reset it (Linux).
    Path("/proc/self/clear_refs").write_text("5")
    baseline = peak_mib()
    if kind == "stage":
        run_stage(rows, Path(root), Path(root) / "out")
    else:
        path = Path(root) / rows["source_path"]
        image = nib.load(path)
        data = image.get_fdata()
        stem = str(path).removesuffix(".nii.gz")
        bvals, bvecs = np.loadtxt(f"{stem}.bval"), np.loadtxt(f"{stem}.bvec").T
        mask = data[..., 0] > np.percentile(data[..., 0], 60)
        TensorModel(gradient_table(bvals, bvecs=bvecs)).fit(data, mask=mask).fa  # noqa: B018
    peak = peak_mib()
    print(json.dumps({"baseline_mib": round(baseline), "peak_mib": round(peak)}))


def memory(workdir: Path) -> dict[str, Any]:
    shape, volumes = (128, 128, 80), 200
    root = workdir / "ds000200"
    row = make_series(root, shape, volumes - 1)
    (root / "row.json").write_text(json.dumps(row))
    voxels = int(np.prod(shape)) * volumes
    out: dict[str, Any] = {
        "series": f"{'x'.join(map(str, shape))}x{volumes}",
        "int16_mib": round(voxels * 2 / 2**20),
        "float32_mib": round(voxels * 4 / 2**20),
        "float64_mib": round(voxels * 8 / 2**20),
    }
    for kind in ("stage", "reference"):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--child", kind, str(root)],
            check=True,
            capture_output=True,
            text=True,
        )
        out[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        out[kind]["seconds"] = round(time.perf_counter() - start, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also the 128x128x80x200 series")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    figures: dict[str, Any] = {"timing": []}
    with tempfile.TemporaryDirectory(prefix="openmind-dwi-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "stage").mkdir()
        for directions in (32, 99):
            result = timing(workdir, directions, args.repeat)
            figures["timing"].append(result)
            print(
                f"{result['series']}: stage {result['stage_s']:.2f} s vs read "
                f"{result['reference_read_s']:.2f} + fit {result['reference_fit_s']:.2f} + write "
                f"{result['reference_write_s']:.2f} s -> ratio {result['ratio']:.2f} "
                f"(target <= 1.5); stage parts {result['stage_parts_s']}"
            )
        if args.memory:
            mem = memory(workdir)
            figures["memory"] = mem
            print(
                f"{mem['series']} (int16 {mem['int16_mib']} MiB, float32 {mem['float32_mib']} "
                f"MiB, float64 {mem['float64_mib']} MiB): stage peak {mem['stage']['peak_mib']} "
                f"MiB (after imports {mem['stage']['baseline_mib']}) in "
                f"{mem['stage']['seconds']} s; reference peak {mem['reference']['peak_mib']} MiB "
                f"in {mem['reference']['seconds']} s"
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
