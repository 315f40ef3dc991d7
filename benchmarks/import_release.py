"""Import benchmark: ``import_release`` from a local copy and from a loopback Hub, against the
I/O floor, and what a filtered import downloads.

A synthetic collection (DWI off) is built with ``--nifti-tree``, which writes the release's
layout; that tree is the release. Timed one after the other in this process:

- the I/O floor: for every image and its two masks, ``nib.load``, the voxels as stored and
  ``nib.save`` to ``.nii.gz``: what any tool must do to read the release and write it again;
- ``import local``: ``import_release(tree, out)``, every row, one process;
- ``import hub``: the same from the tree published on the loopback Hub of ``tests/hub_server.py``
  (every file downloaded and checked against its LFS SHA-256);
- ``import hub T1w<=2``: ``--modality T1w --max-iqs 2``: the bytes it downloaded against the
  bytes of the rows it selected, and against the whole repo.

Run from the repository root::

    .venv/bin/python benchmarks/import_release.py --copies 2
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openmind_data.curate import build
from openmind_data.release import METADATA_CSV, tree_file
from openmind_data.release.importer import import_release
from openmind_data.synth import SynthConfig, synthesize
from tests.hub_server import HubServer, patch_endpoint

REPO = "bench/OpenMind"


def floor(tree: Path, rows: list[dict[str, str]], scratch: Path) -> float:
    start = time.perf_counter()
    for row in rows:
        for column in ("image_path", "anat_mask_path", "anon_mask_path"):
            image = nib.load(tree_file(tree, row[column]))
            np.asanyarray(image.dataobj)
            nib.save(image, scratch / "floor.nii.gz")
    return time.perf_counter() - start


def hub_import(server: HubServer, out: Path, **filters: object) -> tuple[float, dict[str, int]]:
    server.bytes_served.clear()
    start = time.perf_counter()
    import_release(REPO, out, **filters)  # type: ignore[arg-type]
    return time.perf_counter() - start, dict(server.bytes_served)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--resolution", default="small")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        config = SynthConfig(copies=args.copies, resolution=args.resolution, diffusion=False)
        collection = synthesize(scratch / "src", config, workers=2)
        tree = scratch / "tree"
        build(collection.root, scratch / "built", nifti_tree=tree)
        with (tree / METADATA_CSV).open() as file:
            rows = list(csv.DictReader(file))
        total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
        io_floor = floor(tree, rows, scratch)
        start = time.perf_counter()
        import_release(tree, scratch / "local")
        local = time.perf_counter() - start
        from huggingface_hub import HfApi  # noqa: PLC0415

        with HubServer(scratch / "hub") as server, pytest.MonkeyPatch.context() as patch:
            patch_endpoint(patch, server.endpoint)  # huggingface_hub and datasets to loopback
            api = HfApi(endpoint=server.endpoint, token=server.token)
            api.create_repo(REPO, repo_type="dataset")
            api.upload_folder(folder_path=tree, repo_id=REPO, repo_type="dataset")
            hub, _ = hub_import(server, scratch / "hub-all")
            _, served = hub_import(server, scratch / "hub-t1w", modalities=["T1w"], max_iqs=2.0)
        chosen = [
            r for r in rows if r["modality"] == "T1w" and float(r["image_quality_score"]) <= 2
        ]
        selected = sum(
            tree_file(tree, r[c]).stat().st_size
            for r in chosen
            for c in ("image_path", "anat_mask_path", "anon_mask_path")
        )
        csv_size = (tree / METADATA_CSV).stat().st_size
        fetched = sum(served.values())
        print(f"images: {len(rows)} ({args.resolution}), release {total / 2**20:.1f} MiB")
        print(f"I/O floor          {io_floor:8.1f} s")
        print(f"import local       {local:8.1f} s   {local / io_floor:5.2f}x the floor")
        print(f"import hub         {hub:8.1f} s   {hub / io_floor:5.2f}x the floor")
        print(
            f"import hub T1w<=2  {len(chosen)} of {len(rows)} rows: downloaded "
            f"{fetched / 2**20:.2f} MiB = {fetched / (selected + csv_size):.3f}x the selected "
            f"files + CSV, {fetched / total:.3f}x the release"
        )


if __name__ == "__main__":
    main()
