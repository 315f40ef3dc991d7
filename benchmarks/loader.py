"""Random-crop samples per second per worker, for four ways of feeding 3D SSL pretraining, on the
same images in the same run (one process each: the rate of one DataLoader worker):

1. ``OpenMindStream`` from Parquet: every volume decoded, reoriented, resampled and z-scored
   each time it is read (one crop per volume, and ``--crops-per-volume`` crops).
2. ``OpenMindStream`` from its blosc2 cache (volumes preprocessed once beforehand).
3. A naive MONAI pipeline on ``.nii.gz`` files: LoadImaged, EnsureChannelFirstd, Orientationd,
   Spacingd, NormalizeIntensityd, RandSpatialCropd; one crop per load.
4. nnssl's approach, re-implemented minimally here: volumes preprocessed once into blosc2 arrays
   laid out as nnU-Net/nnssl lay them out (a block fits the L1 cache, a chunk the L3 cache, zstd
   level 8, one thread), a random crop read by slicing.

Images: the MNI152 T1 template that nilearn ships (197 x 233 x 189 at 1 mm), with a random
bias field and noise, stored as int16 in RAS, LPS or LAS order at 1.0 or 1.2 mm, so reorientation
and resampling do real work.

    .venv/bin/python benchmarks/loader.py                  # 160^3 crops
    .venv/bin/python benchmarks/loader.py --step-seconds 0.9 --batch 2
"""

from __future__ import annotations

import argparse
import hashlib
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from openmind_data.nifti import decode_nifti
from openmind_ssl.data import OpenMindStream, Preprocessing, StreamOptions, preprocess

ORIENTATIONS = {"RAS": (1, 1, 1), "LPS": (-1, -1, 1), "LAS": (-1, 1, 1)}
L1, L3 = 32 * 1024, 8 * 1024**2


def make_images(count: int, folder: Path, seed: int) -> list[dict[str, Any]]:
    """NIfTI files and their shard rows: (image, anatomy mask) pairs in varied layouts."""
    from nilearn.datasets import load_mni152_template  # noqa: PLC0415

    template = np.asarray(load_mni152_template(resolution=1).dataobj, dtype=np.float32)
    rng = np.random.default_rng(seed)
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        name = list(ORIENTATIONS)[index % len(ORIENTATIONS)]
        spacing = 1.0 if index % 2 == 0 else 1.2
        grid = np.indices((8, 8, 8)).reshape(3, -1).T.astype(np.float32)
        bias = 1 + 0.2 * np.sin(grid @ rng.normal(size=3) / 4).reshape(8, 8, 8)
        field = torch.nn.functional.interpolate(
            torch.from_numpy(bias.astype(np.float32))[None, None],
            size=template.shape,
            mode="trilinear",
        )[0, 0].numpy()
        data = template * field + rng.normal(0, 2, template.shape).astype(np.float32)
        flips = ORIENTATIONS[name]
        for axis, sign in enumerate(flips):
            if sign < 0:
                data = np.flip(data, axis)
        affine = np.diag([spacing * s for s in flips] + [1.0])
        image = nib.Nifti1Image(np.clip(data, -32000, 32000).astype(np.int16), affine)
        anatomy = nib.Nifti1Image((data > 10).astype(np.uint8), affine)
        stem = folder / f"img{index:02d}"
        nib.save(image, f"{stem}.nii.gz")
        nib.save(anatomy, f"{stem}_anat.nii.gz")
        payload = Path(f"{stem}.nii.gz").read_bytes()
        rows.append(
            {
                "image_id": f"img{index:02d}",
                "dataset_id": "bench",
                "modality": "T1w",
                "image_quality_score": 1.0 + index % 4,
                "license": "CC0-1.0",
                "source_sha256": hashlib.sha256(payload).hexdigest(),
                "image": {"bytes": payload, "path": None},
                "anat_mask": {"bytes": Path(f"{stem}_anat.nii.gz").read_bytes(), "path": None},
                "anon_mask": None,
                "files": (f"{stem}.nii.gz", f"{stem}_anat.nii.gz"),
            }
        )
    return rows


def write_shard(rows: list[dict[str, Any]], folder: Path) -> Path:
    shard = folder / "data" / "T1w" / "train-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "files"} for r in rows])
    pq.write_table(table, shard, row_group_size=2, compression="none")
    return shard


def rate(samples: Iterator[Any], count: int) -> float:
    """Samples per second over ``count`` samples, after one to warm up."""
    next(samples)
    start = time.perf_counter()
    for _ in range(count):
        next(samples)
    return count / (time.perf_counter() - start)


def endless(make: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    while True:
        yield from make()


def monai_samples(rows: list[dict[str, Any]], crop: int) -> Iterator[Any]:
    from monai.transforms import (  # noqa: PLC0415
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        RandSpatialCropd,
        Spacingd,
    )

    keys = ["image", "anat"]
    pipeline = Compose(
        [
            LoadImaged(keys=keys, image_only=True),
            EnsureChannelFirstd(keys=keys),
            Orientationd(keys=keys, axcodes="RAS"),
            Spacingd(keys=keys, pixdim=(1.0, 1.0, 1.0), mode=("bilinear", "nearest")),
            NormalizeIntensityd(keys="image"),
            RandSpatialCropd(keys=keys, roi_size=(crop,) * 3, random_size=False),
        ]
    )
    pipeline.set_random_state(0)
    files = [{"image": r["files"][0], "anat": r["files"][1]} for r in rows]
    return endless(lambda: (pipeline(item) for item in files))


def nnssl_layout(shape: tuple[int, ...], itemsize: int, crop: int) -> tuple[tuple[int, ...], ...]:
    """Blocks that fit L1 and chunks that fit L3, no larger than the crop or the volume."""
    block = max(1, int((L1 / itemsize) ** (1 / 3)))
    chunk = max(block, min(crop, int((L3 / itemsize) ** (1 / 3))))
    chunks = tuple(min(chunk, n) for n in shape)
    blocks = tuple(min(block, c) for c in chunks)
    return chunks, blocks


def nnssl_samples(rows: list[dict[str, Any]], folder: Path, crop: int) -> Iterator[Any]:
    import blosc2  # noqa: PLC0415

    blosc2.set_nthreads(1)
    paths = []
    for row in rows:
        volume = preprocess(
            decode_nifti(row["image"]["bytes"]),
            decode_nifti(row["anat_mask"]["bytes"]),
            None,
            Preprocessing(),
        )
        path = folder / f"{row['image_id']}.b2nd"
        cparams = {"codec": blosc2.Codec.ZSTD, "clevel": 8}
        for array, suffix in ((volume.image, ".b2nd"), (volume.anatomy, "_seg.b2nd")):
            chunks, blocks = nnssl_layout(array.shape, array.itemsize, crop)
            blosc2.asarray(
                array,
                urlpath=str(path.with_name(path.stem + suffix)),
                mode="w",
                chunks=chunks,
                blocks=blocks,
                cparams=cparams,
            )
        paths.append(path)
    rng = np.random.default_rng(0)

    def one(path: Path) -> Any:
        """The image and its mask (nnssl reads both: the mask keeps the loss off defaced
        voxels), at one random place."""
        image = blosc2.open(str(path), mode="r")
        mask = blosc2.open(str(path.with_name(path.stem + "_seg.b2nd")), mode="r")
        starts = [int(rng.integers(0, max(1, n - crop + 1))) for n in image.shape]
        window = tuple(slice(s, s + crop) for s in starts)
        return (
            torch.from_numpy(np.ascontiguousarray(image[window]))[None],
            torch.from_numpy(np.ascontiguousarray(mask[window]))[None],
        )

    return endless(lambda: (one(p) for p in paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--crop", type=int, default=160)
    parser.add_argument("--samples", type=int, default=12, help="timed samples per pipeline")
    parser.add_argument("--crops-per-volume", type=int, default=4)
    parser.add_argument("--step-seconds", type=float, help="one training step's time")
    parser.add_argument("--batch", type=int, default=2, help="crops per training step")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker's share
    size = (args.crop,) * 3
    with tempfile.TemporaryDirectory(prefix="openmind-loader-bench-") as tmp:
        scratch = Path(tmp)
        rows = make_images(args.images, scratch / "nifti", seed=0)
        write_shard(rows, scratch / "openmind")
        shape = decode_nifti(rows[0]["image"]["bytes"]).shape
        print(f"images         {len(rows)} of ~{shape} voxels, crops {args.crop}^3, one thread")

        def stream(**changes: Any) -> Iterator[Any]:
            options = StreamOptions(modalities=["T1w"], crop_size=size, shuffle_buffer=0, **changes)
            return endless(lambda: iter(OpenMindStream(scratch / "openmind", options)))

        results = {}
        results["parquet, 1 crop/volume"] = rate(stream(crops_per_volume=1), args.samples)
        results[f"parquet, {args.crops_per_volume} crops/volume"] = rate(
            stream(crops_per_volume=args.crops_per_volume), args.samples
        )
        cache = scratch / "cache"
        start = time.perf_counter()
        for _ in OpenMindStream(
            scratch / "openmind",
            StreamOptions(modalities=["T1w"], crop_size=(1, 1, 1), crops_per_volume=1, cache=cache),
        ):
            pass
        built = time.perf_counter() - start
        results["cache (blosc2)"] = rate(stream(crops_per_volume=1, cache=cache), args.samples)
        results["naive MONAI"] = rate(monai_samples(rows, args.crop), args.samples)
        (scratch / "nnssl").mkdir()
        results["nnssl-style blosc2"] = rate(
            nnssl_samples(rows, scratch / "nnssl", args.crop), args.samples
        )
        for name, value in results.items():
            print(f"{name:28} {value:7.2f} samples/s per worker")
        print(f"(the cache took {built:.1f} s to build for {len(rows)} volumes)")
        monai = results["naive MONAI"]
        print(
            f"from Parquet / naive MONAI: {results['parquet, 1 crop/volume'] / monai:.2f}x "
            f"(1 crop/volume), "
            f"{results[f'parquet, {args.crops_per_volume} crops/volume'] / monai:.2f}x "
            f"({args.crops_per_volume} crops/volume); target >= 2x"
        )
        print(
            f"from cache / nnssl-style blosc2: "
            f"{results['cache (blosc2)'] / results['nnssl-style blosc2']:.2f}x; target >= 1x"
        )
        if args.step_seconds:
            need = args.batch / args.step_seconds
            for name, value in results.items():
                print(f"workers for {need:.2f} samples/s ({name}): {math.ceil(need / value)}")
        else:
            print("workers per GPU: pass --step-seconds (the pretraining issue measures it)")


if __name__ == "__main__":
    main()
