"""Bytes read by a filtered streaming load against the bytes of the rows it selects.

A filter on the image quality score goes to the Parquet reader, which skips every row group
whose statistics rule it out; shards are sorted by IQS, so the rows a threshold keeps sit in few
row groups. The reference is an unfiltered streaming read of the same dataset in the same run.

Bytes are what this process read from files (``rchar`` in ``/proc/self/io``: Linux), so they
count the Parquet footers, the card and everything else ``datasets`` opens on the way.
"Selected bytes" attribute each row group's stored bytes to its rows evenly.

    .venv/bin/python benchmarks/load.py                       # builds ~135 images, 4 MiB groups
    .venv/bin/python benchmarks/load.py --folder openmind     # a folder you built
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from openmind_data.curate import BuildOptions, ShardOptions, build, make_executor
from openmind_data.synth import SynthConfig, synthesize

MIB = 1024**2
TARGET = 1.3


def read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io: this benchmark needs Linux")


def measured(read: Callable[[], int]) -> tuple[int, int, float]:
    """(rows, bytes read, seconds) of one pass."""
    start, clock = read_bytes(), time.perf_counter()
    rows = read()
    return rows, read_bytes() - start, time.perf_counter() - clock


def stream(folder: Path, filters: list[Any] | None) -> int:
    options: dict[str, Any] = {"filters": filters} if filters else {}
    rows = 0
    for split in ("train", "validation"):
        for _ in datasets.load_dataset(str(folder), split=split, streaming=True, **options):
            rows += 1
    return rows


def shards(folder: Path) -> list[Path]:
    return sorted((folder / "data").glob("*/*-*-of-*.parquet"))


def selected_bytes(folder: Path, threshold: float) -> tuple[int, int, int, int]:
    """(selected rows, their bytes, all rows, all shard bytes), from the row groups."""
    chosen = chosen_bytes = rows = 0
    total = 0
    for path in shards(folder):
        total += path.stat().st_size
        parquet = pq.ParquetFile(path)
        scores = parquet.read(columns=["image_quality_score"]).column(0).to_pylist()
        start = 0
        for index in range(parquet.metadata.num_row_groups):
            group = parquet.metadata.row_group(index)
            kept = sum(
                s is not None and s >= threshold for s in scores[start : start + group.num_rows]
            )
            chosen += kept
            stored = sum(group.column(c).total_compressed_size for c in range(group.num_columns))
            chosen_bytes += stored * kept // group.num_rows
            start += group.num_rows
        rows += parquet.metadata.num_rows
    return chosen, chosen_bytes, rows, total


def make_folder(scratch: Path, copies: int, row_group_mb: float) -> Path:
    config = SynthConfig(copies=copies, resolution="small", diffusion=False, seed=5)
    root = synthesize(scratch / "collection", config, workers=2).root
    options = BuildOptions(
        shards=ShardOptions(row_group_bytes=int(row_group_mb * MIB), shard_bytes=int(64 * MIB))
    )
    executor = make_executor(workers=2)
    try:
        return build(root, scratch / "openmind", options, executor=executor).out
    finally:
        executor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, help="a built dataset folder (default: build one)")
    parser.add_argument("--copies", type=int, default=3, help="recipe copies (~45 images each)")
    parser.add_argument("--row-group-mb", type=float, default=4.0)
    parser.add_argument("--share", type=float, default=0.1, help="share of rows to select")
    parser.add_argument("--keep", type=Path, help="build into this folder and keep it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="openmind-load-bench-") as tmp:
        folder = args.folder or make_folder(args.keep or Path(tmp), args.copies, args.row_group_mb)
        scores = sorted(
            s
            for s in pq.read_table(folder / "metadata" / "images.parquet")
            .column("image_quality_score")
            .to_pylist()
            if s is not None
        )
        # The worst share of the images (the best end is full of ties at 1.0).
        threshold = scores[int(len(scores) * (1 - args.share))]
        chosen, chosen_bytes, rows, total = selected_bytes(folder, threshold)
        groups = sum(pq.ParquetFile(p).metadata.num_row_groups for p in shards(folder))
        print(
            f"dataset        {rows} rows in {len(shards(folder))} shards, {groups} row groups, "
            f"{total / MIB:.1f} MiB"
        )
        print(
            f"filter         image_quality_score >= {threshold:.3f}: {chosen} rows "
            f"({chosen / rows:.1%}), {chosen_bytes / MIB:.1f} MiB of row groups"
        )
        stream(folder, None)  # warm: imports, the card, the OS cache; not counted
        all_rows, all_bytes, all_s = measured(lambda: stream(folder, None))
        filters = [("image_quality_score", ">=", threshold)]
        kept_rows, kept_bytes, kept_s = measured(lambda: stream(folder, filters))
        assert all_rows == rows and kept_rows == chosen, (all_rows, rows, kept_rows, chosen)
        print(
            f"unfiltered     read {all_bytes / MIB:8.1f} MiB = {all_bytes / total:.2f}x the "
            f"shards, {all_s:.1f} s"
        )
        print(
            f"filtered       read {kept_bytes / MIB:8.1f} MiB = {kept_bytes / chosen_bytes:.2f}x "
            f"the selected rows (target <= {TARGET}x), {kept_bytes / all_bytes:.1%} of the "
            f"unfiltered read, {kept_s:.1f} s"
        )


if __name__ == "__main__":
    main()
