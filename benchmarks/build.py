"""Build benchmark: the whole build on 1 and 2 local workers and a 2-worker Dask LocalCluster,
against the I/O floor, with the workers' peak memory.

On one synthetic collection (DWI off, so every candidate is one 3D image):

- ``processes x1``, ``processes x2``: ``build(...)`` with ``ProcessExecutor(1)`` and ``(2)``;
- ``dask x2``: a ``LocalCluster`` of two one-thread worker processes on loopback;
- the I/O floor: for every candidate, ``nib.load(path)``, its voxels as stored
  (``np.asanyarray(img.dataobj)``) and ``nib.save`` of the same image to ``.nii.gz``, timed
  one after the other in this process: what any tool must do to read and rewrite the data.

The issue's targets: 2 workers >= 1.7x one worker (images per second); the whole build on one
worker <= 4x the I/O floor. Peak memory is the largest unique set (USS) of any worker process,
and of the driver, sampled every 100 ms, reported for the first and the second half of the run:
a worker's must not grow with the number of images. The driver's second half includes writing
the folder, whose peak is bounded by the row-group size (~100 MiB of voxels at a time). Every build starts fresh in its own folder; their outputs are
checked to be byte-identical.

Run from the repository root::

    .venv/bin/python benchmarks/build.py --copies 5                        # ~2.4 mm grids
    .venv/bin/python benchmarks/build.py --copies 5 --resolution realistic # ~1 mm grids
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import psutil

from openmind_data.crawl import crawl
from openmind_data.curate import BuildOptions, DaskExecutor, Executor, ProcessExecutor, build
from openmind_data.synth import SynthConfig, load_truth, synthesize

MIB = 1 << 20


class PeakMemory:
    """The largest unique set (USS: the memory a process alone holds, not the pages a forked
    worker shares with its parent) of this process and each descendant, sampled in a thread,
    split at the run's half-way time."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (time, pid, rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self.start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.end = time.perf_counter()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.interval):
            now = time.perf_counter()
            for child in me.children(recursive=True):
                try:
                    self.samples.append((now, child.pid, child.memory_full_info().uss))
                except psutil.Error:
                    continue
            self.samples.append((now, me.pid, me.memory_full_info().uss))

    def peaks(self, pids: Callable[[int], bool]) -> tuple[float, float]:
        """(peak MiB of the busiest worker in the first half, in the second half)."""
        half = (self.start + self.end) / 2
        first = [rss for t, pid, rss in self.samples if pids(pid) and t < half]
        second = [rss for t, pid, rss in self.samples if pids(pid) and t >= half]
        return max(first, default=0) / MIB, max(second, default=0) / MIB


def timed_build(root: Path, out: Path, make: Callable[[], Executor], label: str) -> dict[str, Any]:
    executor = make()
    me = os.getpid()
    try:
        with PeakMemory() as memory:
            start = time.perf_counter()
            result = build(root, out, BuildOptions(), executor=executor)
            seconds = time.perf_counter() - start
    finally:
        executor.close()
    worker_first, worker_second = memory.peaks(lambda pid: pid != me)
    driver_first, driver_second = memory.peaks(lambda pid: pid == me)
    units = result.run
    print(
        f"{label:<14} {units} images in {seconds:7.1f} s = {units / seconds:5.2f} images/s; "
        f"peak worker {worker_first:6.0f} -> {worker_second:6.0f} MiB, "
        f"driver {driver_first:6.0f} -> {driver_second:6.0f} MiB (first -> second half)",
        flush=True,
    )
    return {
        "label": label,
        "images": units,
        "seconds": seconds,
        "images_per_second": units / seconds,
        "peak_worker_mib": [worker_first, worker_second],
        "peak_driver_mib": [driver_first, driver_second],
        "digest": _digest(out),
    }


def _digest(out: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file() and ".build" not in p.parts):
        digest.update(path.relative_to(out).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def io_floor(root: Path, scratch: Path) -> tuple[int, float]:
    """(images, seconds) of loading and saving every candidate with bare nibabel."""
    candidates = crawl(root).candidates.to_pylist()
    scratch.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    for i, row in enumerate(candidates):
        path = root / row["dataset_id"] / row["source_path"]
        start = time.perf_counter()
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
        nib.save(nib.Nifti1Image(data, image.affine, image.header), scratch / f"{i}.nii.gz")
        seconds += time.perf_counter() - start
    return len(candidates), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=5, help="recipe copies (~45 images each)")
    parser.add_argument("--resolution", default="small", choices=["tiny", "small", "realistic"])
    parser.add_argument("--collection", type=Path, help="use this collection (made by synth)")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask run")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    # The build logs where its time went (crawl, units, folder).
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("openmind_data.curate.run").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="openmind-build-bench-") as tmp:
        scratch = Path(tmp)
        if args.collection is not None:
            root = load_truth(args.collection).root
        else:
            config = SynthConfig(
                copies=args.copies, resolution=args.resolution, diffusion=False, seed=3
            )
            root = synthesize(scratch / "collection", config, workers=2).root
        images, floor = io_floor(root, scratch / "floor")
        print(f"I/O floor      {images} images in {floor:7.1f} s (nibabel load + save, serial)")
        runs = [
            timed_build(root, scratch / "p1", lambda: ProcessExecutor(1), "processes x1"),
            timed_build(root, scratch / "p2", lambda: ProcessExecutor(2), "processes x2"),
        ]
        if not args.no_dask:
            from distributed import LocalCluster  # noqa: PLC0415

            def dask() -> Executor:
                cluster = LocalCluster(
                    n_workers=2,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
                return DaskExecutor(cluster, owns_cluster=True)

            runs.append(timed_build(root, scratch / "dask", dask, "dask x2"))
    one, two = runs[0], runs[1]
    figures = {
        "images": images,
        "resolution": args.resolution,
        "io_floor_seconds": floor,
        "runs": runs,
        "speedup_2_workers": two["images_per_second"] / one["images_per_second"],
        "build_over_io_floor": one["seconds"] / floor,
        "identical_outputs": len({r["digest"] for r in runs}) == 1,
    }
    print(
        f"2 workers / 1 worker: {figures['speedup_2_workers']:.2f}x (target >= 1.7x); "
        f"build on 1 worker / I/O floor: {figures['build_over_io_floor']:.1f}x (target <= 4x); "
        f"outputs identical across executors: {figures['identical_outputs']}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
