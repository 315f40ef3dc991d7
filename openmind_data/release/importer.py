"""``import_release(source, out)``: OpenMind's release in, the toolkit's dataset folder out.

The release's ``openneuro_metadata.csv`` is read first and filtered (modality, released IQS,
dataset), so only the selected rows' images and masks are ever fetched. Rows go through the
import's unit (:mod:`~openmind_data.release.unit`) in chunks: while one chunk is processed the
next one downloads. Finished units are journaled exactly as a build's are, and the folder is
written from the journal by the build's own :func:`~openmind_data.curate.folder.write_folder`:
one row per image with its masks as NIfTI columns, the metadata tables, the card and, on
request, the released layout again.

Killed at any moment, the same call resumes: journaled images are neither downloaded nor
processed again, files downloaded but not yet journaled are reused (checked against their
checksums), and a Hub release's downloads are removed once they are journaled.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from openmind_data.crawl import CrawlResult
from openmind_data.curate.folder import write_folder
from openmind_data.curate.journal import Journal, candidate_key
from openmind_data.curate.run import BuildOptions, FolderRun, UnitBatch
from openmind_data.curate.unit import UnitResult
from openmind_data.errors import ConfigError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.exclusions import exclusion_row
from openmind_data.executors import Executor, SerialExecutor, WorkerDied
from openmind_data.modalities import modality_names
from openmind_data.quality import load_model
from openmind_data.release.source import Fetched, Release, open_release
from openmind_data.release.table import ReleaseRows, read_release_csv
from openmind_data.release.unit import RECOMPUTABLE, ImportJob, ImportOptions, import_image
from openmind_data.schema import (
    EXCLUDED_SCHEMA,
    IGNORED_SCHEMA,
    IMAGE_SCHEMA,
    SCHEMA_VERSION,
    SOURCES_SCHEMA,
    table_from_records,
)

__all__ = ["ImportResult", "import_release"]

log = logging.getLogger(__name__)

_OPENNEURO = re.compile(r"^ds\d{6}$")


@dataclass
class ImportResult(FolderRun):
    """What an import wrote and did: the ``release`` it read, ``selected`` rows of its table."""

    release: str
    selected: int

    def summary(self) -> dict[str, Any]:
        return {"release": self.release, "selected": self.selected, **self.counts()}


def import_release(
    source: str | Path,
    out: str | Path,
    *,
    modalities: Sequence[str] | None = None,
    max_iqs: float | None = None,
    datasets: Sequence[str] | None = None,
    options: ImportOptions | None = None,
    build: BuildOptions | None = None,
    executor: Executor | None = None,
    fresh: bool = False,
    nifti_tree: str | Path | None = None,
    download_workers: int = 8,
    progress: bool = False,
) -> ImportResult:
    """Import the release at ``source`` (a local copy, or a Hub repo ``ORG/NAME[@revision]``)
    into the dataset folder ``out``, keeping the rows of ``modalities`` (the toolkit's names),
    ``datasets`` (OpenNeuro ids) and a released IQS of at most ``max_iqs``.

    ``options.recompute`` names stages made again from the voxels (``masks``, ``quality``);
    otherwise the release's masks and scores are kept (see :mod:`~openmind_data.release.unit`
    for when its masks are not). ``build`` gives the folder's settings (shards, split, IQS
    model); ``executor`` runs the units; ``fresh`` discards an earlier import's journal.
    """
    options = options or ImportOptions()
    build = build or BuildOptions()
    executor = executor or SerialExecutor()
    _check(modalities, options, max_iqs)
    out = Path(out)
    release = open_release(source, out / ".import", workers=download_workers)
    _check_separate(out, source, nifti_tree)
    where = f"{release.name}/{release.csv_path}"
    licence = release.license()
    table = read_release_csv(release.read(release.csv_path), where, license=licence)
    _check_datasets(datasets, table, where)
    chosen = table.select(modalities, max_iqs, datasets)
    keys = {
        _where(row): candidate_key({**row, "files": files})
        for row, files in zip(chosen.candidates, chosen.files, strict=True)
    }
    fingerprint = {
        "openmind_data": _version(),
        "schema": SCHEMA_VERSION,
        "import": asdict(options),
    }
    with Journal(out, fingerprint).open(fresh=fresh) as journal:
        done = journal.done()
        todo = [
            (row, files)
            for row, files in zip(chosen.candidates, chosen.files, strict=True)
            if done.get(_where(row), ("",))[0] != keys[_where(row)]
        ]
        _run(journal, executor, release, todo, keys, options, build, progress)
        folder = write_folder(
            out,
            _as_crawl(chosen, release.name, licence),
            journal,
            keys,
            build.shards,
            validation=build.validation,
            seed=build.seed,
            roots={},
            iqs_model=load_model(build.iqs_model) if "quality" in options.recompute else None,
            nifti_tree=nifti_tree,
        )
    release.finished()
    return ImportResult(
        out=out,
        release=release.name,
        folder=folder,
        selected=len(chosen.candidates),
        run=len(todo),
        resumed=len(chosen.candidates) - len(todo),
    )


def _check(modalities: Sequence[str] | None, options: ImportOptions, max_iqs: float | None) -> None:
    known = modality_names(published_only=True)
    for name in modalities or ():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown modality {name!r}{hint} (the vocabulary: {known})")
    for stage in options.recompute:
        if stage not in RECOMPUTABLE:
            raise ConfigError(f"--recompute {stage!r}: one of {', '.join(RECOMPUTABLE)}")
    if max_iqs is not None and not 1.0 <= max_iqs <= 5.0:
        raise ConfigError(f"--max-iqs {max_iqs}: the IQS runs from 1 (best) to 5 (worst)")


def _check_datasets(datasets: Sequence[str] | None, table: ReleaseRows, where: str) -> None:
    """A dataset filter names datasets of the release: a typo is an error, not an empty import."""
    known = sorted({row["dataset_id"] for row in [*table.candidates, *table.excluded]})
    for name in datasets or ():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where} lists no dataset {name!r}{hint}")


def _check_separate(out: Path, source: str | Path, tree: str | Path | None) -> None:
    """Nothing is written into a local release, nor read from the folder being written."""
    if not Path(source).is_dir():
        return
    origin = Path(source).resolve()
    for target in [out.resolve()] + ([Path(tree).resolve()] if tree is not None else []):
        if target == origin or origin in target.parents or target in origin.parents:
            raise ConfigError(
                f"{target}: the output must lie outside the release it is imported from "
                f"(overlaps {origin})"
            )


def _where(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row["dataset_id"], row["source_path"])


def _version() -> str:
    from openmind_data import __version__  # noqa: PLC0415 - a cycle at import time

    return __version__


def _chunks(
    items: list[tuple[dict[str, Any], dict[str, str]]], size: int
) -> Iterator[list[tuple[dict[str, Any], dict[str, str]]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run(
    journal: Journal,
    executor: Executor,
    release: Release,
    todo: list[tuple[dict[str, Any], dict[str, str]]],
    keys: Mapping[tuple[str, str], str],
    options: ImportOptions,
    build: BuildOptions,
    progress: bool,
) -> None:
    """Fetch and process ``todo`` chunk by chunk, the next chunk downloading meanwhile; each
    chunk's units are journaled before its downloads are let go."""
    bar = tqdm(total=len(todo), desc="import", unit="image", disable=None if progress else True)
    chunks = list(_chunks(todo, max(build.journal_units, 4 * executor.workers)))

    def fetch(chunk: list[tuple[dict[str, Any], dict[str, str]]]) -> Fetched:
        return release.fetch(sorted({path for _, files in chunk for path in files.values()}))

    with ThreadPoolExecutor(max_workers=1) as downloads:
        pending: Future[Fetched] | None = downloads.submit(fetch, chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            assert pending is not None
            fetched = pending.result()
            following = chunks[index + 1] if index + 1 < len(chunks) else None
            pending = downloads.submit(fetch, following) if following else None
            batch = UnitBatch()
            jobs: list[ImportJob] = []
            for row, files in chunk:
                job = _job(row, files, fetched, release, options)
                if isinstance(job, ImportJob):
                    jobs.append(job)
                else:
                    batch.add(row, keys[_where(row)], job, "")
                    bar.update()
            for job_index, outcome in executor.imap_unordered(import_image, jobs):
                row = jobs[job_index].row
                result = (
                    UnitResult(
                        excluded=[
                            exclusion_row(row, R.PROCESSING_ERROR, outcome.detail, stage="import")
                        ]
                    )
                    if isinstance(outcome, WorkerDied)
                    else outcome
                )
                batch.add(row, keys[_where(row)], result, _root(jobs[job_index]))
                bar.update()
                if len(batch.units) >= build.journal_units or batch.size >= build.journal_bytes:
                    batch.commit(journal)
            batch.commit(journal)
            release.release_files(path for _, files in chunk for path in files.values())
    bar.close()


def _job(
    row: dict[str, Any],
    files: Mapping[str, str],
    fetched: Fetched,
    release: Release,
    options: ImportOptions,
) -> ImportJob | UnitResult:
    """The unit's job for one row; a missing or corrupt image is an exclusion here, a missing
    or corrupt mask is left out of the job (the unit makes its own, saying why)."""
    image = files["image"]
    if image in fetched.problems:
        reason, detail = fetched.problems[image]
        return UnitResult(excluded=[exclusion_row(row, reason, detail, stage="import")])
    local = {
        column: str(fetched.local[path]) for column, path in files.items() if path in fetched.local
    }
    missing = {
        column: fetched.problems[path][1]
        for column, path in files.items()
        if path in fetched.problems
    }
    return ImportJob(
        row=row,
        files=local,
        sha256=fetched.sha256.get(image),
        release=release.name,
        options=options,
        missing=missing,
    )


def _root(job: ImportJob) -> str:
    """The local folder standing for the image's dataset, so exclusion details quote paths
    from the dataset id on rather than this machine's folders."""
    image = job.files["image"]
    return image[: len(image) - len(job.row["source_path"]) - 1]


def _as_crawl(chosen: ReleaseRows, release: str, licence: str | None) -> CrawlResult:
    """The release's table in the shape the folder writer takes from a crawl."""
    datasets = sorted({row["dataset_id"] for row in chosen.candidates})
    sources = [
        {
            "dataset_id": dataset,
            "license": licence,
            "license_raw": licence,
            "references_and_links": (
                [f"https://openneuro.org/datasets/{dataset}"] if _OPENNEURO.match(dataset) else []
            ),
            "how_to_acknowledge": f"Imported from the OpenMind release {release}.",
        }
        for dataset in datasets
    ]
    return CrawlResult(
        candidates=table_from_records(chosen.candidates, IMAGE_SCHEMA),
        excluded=table_from_records(chosen.excluded, EXCLUDED_SCHEMA),
        ignored=IGNORED_SCHEMA.empty_table(),
        sources=table_from_records(sources, SOURCES_SCHEMA),
    )
