"""Crawl benchmark: openmind's crawl against pybids and bids2table on one synthetic collection.

What is compared. Each tool does the same job on the same folder of BIDS datasets, in one
process: find every NIfTI image and resolve its sidecar metadata through BIDS inheritance.

- openmind: ``openmind_data.crawl.crawl([root], workers=1)``; ``result.candidates`` has one row
  per candidate image with its resolved sidecar fields (it also reads each image's header and
  sorts out exclusions, which the references do not do).
- pybids: per dataset folder, ``BIDSLayout(ds, validate=False, indexer=BIDSLayoutIndexer(...))``
  (which indexes every sidecar into its database), then ``layout.get_metadata(path)`` for every
  file of ``layout.get(extension=[".nii", ".nii.gz"], return_type="file")``.
- bids2table (2.x, its documented Python API): ``find_bids_datasets`` on the root (top level
  only), ``batch_index_dataset`` (``max_workers=0``: the main process), then
  ``load_bids_metadata`` (inheritance on) for every ``.nii``/``.nii.gz`` row of the index.

How. The collection comes from the project's generator (``openmind_data.synth``, tiny
resolution, no quality ladder); ``--collection DIR`` reuses one made earlier (or generates into
DIR). Every file under the datasets is counted (``truth/`` is not part of the collection), and
that count is the one denominator of files per second for all tools. Each tool is timed with
``time.perf_counter`` around the whole job, once, or best of ``--repeat N``. All runs read a
page cache that is already warm (the collection was just written or just walked).

Broken inputs. The collection holds deliberately broken files (zero-byte and truncated images, a
dangling symlink, invalid JSON and non-UTF-8 sidecars and tables). pybids raises on an invalid
JSON sidecar, so its indexer ignores every file the ground truth (``truth/ground_truth.json``)
marks ``role == "excluded"``, on top of its default ignores. bids2table skips invalid JSON by
itself but raises ``UnicodeDecodeError`` on a non-UTF-8 sidecar; those images are counted as
metadata errors and the run goes on. bids2table's per-path ``lru_cache``s are cleared before
each repeat (as in a fresh process); its BIDS schema is loaded once before timing.

pybids is slow (minutes on 20,000 files); ``--pybids-sample K`` times it on the first K datasets
only and extrapolates to the whole collection by file count, and the output says so.

Run (from the repository root, with the ``bench`` extra installed); the first run generates the
collection (about 11 minutes on two cores), later runs with the same DIR reuse it::

    .venv/bin/pip install -c constraints.txt -e '.[bench]'
    .venv/bin/python benchmarks/crawl.py --collection /tmp/openmind-bench --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from openmind_data.crawl import crawl as openmind_crawl
from openmind_data.synth import SynthConfig, synthesize

try:
    import bids
    from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE
except ImportError:
    bids = None
    DEFAULT_LOCATIONS_TO_IGNORE = set()

try:
    import bids2table as b2t2  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:
    b2t2 = None

TRUTH_FILE = "truth/ground_truth.json"
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
DATASET_PATTERN = re.compile(r"ds\d{6}")
TARGET_FILES = 20_000
# Twelve copies of the five recipes (60 datasets) with 102 subjects each give 20,256 files.
# Generation writes about 31 files a second with two workers (11 minutes for these; images are
# three quarters of the files and each costs ~0.15 s of CPU), so generate once into
# --collection DIR and reuse it.
DEFAULT_COPIES = 12
DEFAULT_SUBJECTS = 102


@dataclass
class Outcome:
    """What one run of a tool produced (counts only, to check the tools did the same work)."""

    images: int
    with_metadata: int
    metadata_errors: int = 0
    error_examples: list[str] = field(default_factory=list)


@dataclass
class ToolResult:
    name: str
    available: bool
    seconds: float | None = None
    all_seconds: list[float] = field(default_factory=list)
    files_per_second: float | None = None
    images: int | None = None
    with_metadata: int | None = None
    metadata_errors: int | None = None
    error_examples: list[str] = field(default_factory=list)
    extrapolated: bool = False
    note: str = ""


# -- the collection ------------------------------------------------------------------------------


def prepare_collection(
    root: Path, copies: int, subjects: int, workers: int
) -> tuple[dict[str, Any], float | None]:
    """Reuse the collection at ``root`` if it has a ground truth, else generate one there."""
    truth_path = root / TRUTH_FILE
    if truth_path.is_file():
        truth: dict[str, Any] = json.loads(truth_path.read_text())
        print(f"reusing the collection at {root} (config {truth['config']})")
        return truth, None
    config = SynthConfig(seed=0, resolution="tiny", copies=copies, subjects=subjects, quality=False)
    print(f"generating {config} into {root} with {workers} workers ...", flush=True)
    start = time.perf_counter()
    collection = synthesize(root, config, workers=workers, progress=True)
    seconds = time.perf_counter() - start
    print(f"generated in {seconds:.1f} s")
    return collection.truth, seconds


def count_files(root: Path) -> tuple[int, dict[str, int]]:
    """Every non-folder entry under the datasets (dangling symlinks too), and per dataset."""
    per_dataset: dict[str, int] = {}
    for dataset in list_datasets(root):
        n = 0
        for _, _, names in os.walk(dataset):
            n += len(names)
        per_dataset[dataset.name] = n
    return sum(per_dataset.values()), per_dataset


def list_datasets(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and DATASET_PATTERN.fullmatch(p.name))


def broken_files(truth: dict[str, Any]) -> dict[str, list[str]]:
    """Paths (relative to their dataset) the ground truth marks excluded, per dataset."""
    out: dict[str, list[str]] = {}
    for record in truth["files"]:
        if record["role"] == "excluded":
            dataset, _, rel = record["path"].partition("/")
            out.setdefault(dataset, []).append(rel)
    return out


# -- the tools -----------------------------------------------------------------------------------


def run_openmind(root: Path) -> Outcome:
    result = openmind_crawl([root], workers=1)
    rows = result.candidates.num_rows
    return Outcome(images=rows, with_metadata=rows)


def run_pybids(datasets: Sequence[Path], broken: dict[str, list[str]]) -> Outcome:
    assert bids is not None
    images = with_metadata = 0
    for dataset in datasets:
        # Patterns match "/<path relative to the dataset>"; the defaults are only applied by
        # pybids when no ignore list is given, so they are repeated here.
        ignore: list[Any] = [
            *DEFAULT_LOCATIONS_TO_IGNORE,
            *(re.compile("^/" + re.escape(rel) + "$") for rel in broken.get(dataset.name, [])),
        ]
        indexer = bids.BIDSLayoutIndexer(validate=False, ignore=ignore)
        layout = bids.BIDSLayout(dataset, validate=False, indexer=indexer)
        for path in layout.get(extension=list(NIFTI_EXTENSIONS), return_type="file"):
            images += 1
            with_metadata += bool(layout.get_metadata(path))
    return Outcome(images=images, with_metadata=with_metadata)


def clear_bids2table_caches() -> None:
    """Empty bids2table's per-path lru_caches, so a repeat does what a fresh process does."""
    for name in ("bids2table._indexing", "bids2table._metadata", "bids2table._entities"):
        module = sys.modules.get(name)
        for value in vars(module).values() if module else ():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


def run_bids2table(root: Path) -> Outcome:
    assert b2t2 is not None
    # Top-level datasets only (as the other tools): maxdepth=1 does not descend into them, and
    # truth/ (whose mask folders look like datasets) is never entered.
    roots = sorted(b2t2.find_bids_datasets(root, exclude=["truth"], maxdepth=1))
    images = with_metadata = errors = 0
    examples: list[str] = []
    for table in b2t2.batch_index_dataset(roots, max_workers=0):
        for dataset_root, rel, ext in zip(
            table.column("root").to_pylist(),
            table.column("path").to_pylist(),
            table.column("ext").to_pylist(),
            strict=True,
        ):
            if ext not in NIFTI_EXTENSIONS:
                continue
            images += 1
            try:
                with_metadata += bool(b2t2.load_bids_metadata(Path(dataset_root) / rel))
            except (UnicodeDecodeError, OSError) as error:
                errors += 1
                if len(examples) < 3:
                    examples.append(f"{rel}: {type(error).__name__}: {error}")
    return Outcome(images, with_metadata, errors, examples)


def time_tool(
    name: str, job: Callable[[], Outcome], repeat: int, before: Callable[[], None] | None = None
) -> ToolResult:
    """Best wall time of ``repeat`` runs; a failing tool is reported and the others go on."""
    result = ToolResult(name=name, available=True)
    outcome = None
    for i in range(repeat):
        if before is not None:
            before()
        print(f"  {name}: run {i + 1}/{repeat} ...", end="", flush=True)
        start = time.perf_counter()
        try:
            outcome = job()
        except Exception as error:  # noqa: BLE001 - report and go on with the other tools
            print(" failed")
            traceback.print_exc()
            result.available = False
            result.note = f"failed: {type(error).__name__}: {error}"
            return result
        seconds = time.perf_counter() - start
        print(f" {seconds:.2f} s", flush=True)
        result.all_seconds.append(seconds)
    assert outcome is not None
    result.seconds = min(result.all_seconds)
    result.images = outcome.images
    result.with_metadata = outcome.with_metadata
    result.metadata_errors = outcome.metadata_errors
    result.error_examples = outcome.error_examples
    return result


# -- output --------------------------------------------------------------------------------------


def print_table(results: Sequence[ToolResult], total_files: int) -> None:
    header = f"{'tool':<11} {'seconds':>9} {'files/s':>9} {'images':>7} {'w/meta':>7} {'errors':>6}"
    print()
    print(f"{total_files} files, one process per tool (best of the runs)")
    print(header)
    print("-" * len(header))
    for r in results:
        if r.seconds is None:
            print(f"{r.name:<11} {r.note}")
            continue
        star = "*" if r.extrapolated else " "
        print(
            f"{r.name:<11} {r.seconds:>8.2f}{star} {r.files_per_second:>9.0f} "
            f"{r.images:>7} {r.with_metadata:>7} {r.metadata_errors:>6}"
        )
    if any(r.extrapolated for r in results):
        print("* extrapolated from a sample of datasets (see above)")


def ratios(results: Sequence[ToolResult]) -> dict[str, float]:
    """How many times faster openmind is than each reference (their seconds / ours)."""
    by_name = {r.name: r for r in results}
    ours = by_name.get("openmind")
    out: dict[str, float] = {}
    if ours is None or ours.seconds is None:
        return out
    for r in results:
        if r.name != "openmind" and r.seconds is not None:
            out[f"openmind_vs_{r.name}"] = r.seconds / ours.seconds
    return out


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("openmind-toolkit", "pybids", "bids2table", "pyarrow"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = None
    return out


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time openmind's crawl against pybids and bids2table on a synthetic "
        "BIDS collection.",
    )
    parser.add_argument(
        "--collection",
        type=Path,
        help="reuse the collection in DIR (made by openmind synth), or generate into DIR "
        "when it is empty or absent; default: a temporary folder, deleted at the end",
        metavar="DIR",
    )
    parser.add_argument(
        "--copies",
        type=int,
        default=DEFAULT_COPIES,
        help="copies of the five dataset recipes, when generating (%(default)s)",
    )
    parser.add_argument(
        "--subjects",
        type=int,
        default=DEFAULT_SUBJECTS,
        help="subjects per dataset, when generating (%(default)s)",
    )
    parser.add_argument(
        "--synth-workers", type=int, default=2, help="processes for generation (%(default)s)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs (%(default)s)")
    parser.add_argument(
        "--pybids-sample",
        type=int,
        metavar="K",
        help="time pybids on the first K datasets only and extrapolate by file count",
    )
    parser.add_argument(
        "--tools",
        nargs="+",
        choices=("openmind", "pybids", "bids2table"),
        default=["openmind", "pybids", "bids2table"],
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.pybids_sample is not None and args.pybids_sample < 1:
        parser.error("--pybids-sample must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="openmind-bench-") as scratch:
        root = (args.collection or Path(scratch) / "collection").resolve()
        return benchmark(args, root)


def benchmark(args: argparse.Namespace, root: Path) -> int:
    truth, synth_seconds = prepare_collection(root, args.copies, args.subjects, args.synth_workers)
    total_files, per_dataset = count_files(root)
    datasets = list_datasets(root)
    roles = Counter(record["role"] for record in truth["files"])
    subjects = len(
        {(r["path"].partition("/")[0], r["subject"]) for r in truth["files"] if r.get("subject")}
    )
    print(
        f"collection: {root}\n  {total_files} files in {len(datasets)} datasets "
        f"({subjects} subjects with images; ground truth lists {len(truth['files'])} files: "
        f"{dict(sorted(roles.items()))})"
    )
    if total_files < TARGET_FILES:
        print(f"  note: fewer than the {TARGET_FILES} files this benchmark is meant for")

    notes: list[str] = []
    broken = broken_files(truth)
    results: list[ToolResult] = []

    print("timing (one process each):")
    if "openmind" in args.tools:
        results.append(time_tool("openmind", lambda: run_openmind(root), args.repeat))

    if "bids2table" in args.tools:
        if b2t2 is None:
            results.append(ToolResult("bids2table", False, note="bids2table not installed"))
        else:
            b2t2.get_arrow_schema()  # the one-off schema load, outside the timing
            results.append(
                time_tool(
                    "bids2table",
                    lambda: run_bids2table(root),
                    args.repeat,
                    before=clear_bids2table_caches,
                )
            )
            notes.append(
                "bids2table: non-UTF-8 sidecars raise UnicodeDecodeError from "
                "load_bids_metadata (invalid JSON is skipped silently); such images are "
                "counted as metadata errors"
            )

    if "pybids" in args.tools:
        if bids is None:
            results.append(ToolResult("pybids", False, note="pybids not installed"))
        else:
            sample = datasets[: args.pybids_sample] if args.pybids_sample else datasets
            n_ignored = sum(len(broken.get(d.name, [])) for d in sample)
            note = (
                f"pybids: its indexer ignores the {n_ignored} files the ground truth marks "
                "excluded (broken inputs; pybids raises on invalid JSON sidecars), on top of "
                "its default ignores"
            )
            print(f"  {note}")
            notes.append(note)
            result = time_tool("pybids", lambda: run_pybids(sample, broken), args.repeat)
            if len(sample) < len(datasets) and result.seconds is not None:
                sample_files = sum(per_dataset[d.name] for d in sample)
                scale = total_files / sample_files
                result.extrapolated = True
                result.note = (
                    f"timed on {len(sample)} of {len(datasets)} datasets ({sample_files} files, "
                    f"{result.seconds:.2f} s, {result.images} images) and extrapolated by file "
                    f"count (x{scale:.2f})"
                )
                print(f"  pybids {result.note}")
                notes.append("pybids " + result.note)
                result.seconds *= scale
                result.all_seconds = [s * scale for s in result.all_seconds]
                if result.images is not None and result.with_metadata is not None:
                    result.images = round(result.images * scale)
                    result.with_metadata = round(result.with_metadata * scale)
            results.append(result)

    for r in results:
        if r.seconds is not None:
            r.files_per_second = total_files / r.seconds
    print_table(results, total_files)
    speedups = ratios(results)
    for name, value in speedups.items():
        other = name.removeprefix("openmind_vs_")
        print(
            f"openmind vs {other}: {value:.2f}x ({other} time / openmind time; "
            "above 1 means openmind is faster)"
        )
    if not speedups:
        print("no ratios: the openmind crawl did not run")
    for r in results:
        for example in r.error_examples:
            print(f"  {r.name} error example: {example}")

    if args.json is not None:
        report = {
            "collection": {
                "root": str(root),
                "files": total_files,
                "datasets": len(datasets),
                "subjects": subjects,
                "truth_roles": dict(roles),
                "config": truth["config"],
                "generation_seconds": synth_seconds,
                "generation_workers": args.synth_workers if synth_seconds is not None else None,
            },
            "repeat": args.repeat,
            "results": [asdict(r) for r in results],
            "ratios": speedups,
            "notes": notes,
            "versions": versions(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
