"""``crawl(roots)``: many BIDS datasets in, the candidate table and its companions out."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from openmind_data.crawl.dataset import DatasetCrawl, crawl_dataset
from openmind_data.errors import ConfigError
from openmind_data.executors import map_ordered
from openmind_data.schema import (
    EXCLUDED_SCHEMA,
    IGNORED_SCHEMA,
    IMAGE_SCHEMA,
    SOURCES_SCHEMA,
    read_table,
    table_from_records,
    write_table,
)

__all__ = ["CrawlResult", "companion_paths", "crawl", "find_datasets", "read_index"]

log = logging.getLogger(__name__)


def find_datasets(roots: Iterable[str | Path]) -> list[Path]:
    """BIDS datasets under ``roots``: a root that is a dataset, or the datasets directly in it
    (as in a mirror of OpenNeuro). Sorted by folder name; the name is the dataset id."""
    found: list[Path] = []
    for root in roots:
        path = Path(root)
        if not path.is_dir():
            raise ConfigError(f"{path}: not a folder")
        if (path / "dataset_description.json").exists():
            found.append(path)
            continue
        inside = sorted(
            child
            for child in path.iterdir()
            if child.is_dir()
            and not child.name.startswith(".")
            and (child / "dataset_description.json").exists()
        )
        if not inside:
            raise ConfigError(
                f"{path}: no BIDS dataset here (no dataset_description.json in it "
                "or in the folders directly inside it)"
            )
        found.extend(inside)
    names = Counter(p.name for p in found)
    clashes = sorted(name for name, n in names.items() if n > 1)
    if clashes:
        raise ConfigError(
            f"several datasets share the folder name {clashes}; dataset ids must "
            "be unique across roots"
        )
    return sorted(found, key=lambda p: p.name)


@dataclass(frozen=True)
class CrawlResult:
    """The crawl's four tables (schemas in :mod:`openmind_data.schema`)."""

    candidates: pa.Table
    excluded: pa.Table
    ignored: pa.Table
    sources: pa.Table

    def counts(self) -> dict[str, object]:
        return {
            "datasets": self.sources.num_rows,
            "candidates": self.candidates.num_rows,
            "candidates_by_modality": dict(
                sorted(Counter(self.candidates.column("modality").to_pylist()).items())
            ),
            "excluded": self.excluded.num_rows,
            "excluded_by_reason": dict(
                sorted(Counter(self.excluded.column("reason").to_pylist()).items())
            ),
            "ignored": self.ignored.num_rows,
            "ignored_by_rule": dict(
                sorted(Counter(self.ignored.column("rule").to_pylist()).items())
            ),
        }

    def write(self, index: str | Path) -> dict[str, Path]:
        """Write ``index`` and its companions (see :func:`companion_paths`)."""
        paths = companion_paths(index)
        Path(index).parent.mkdir(parents=True, exist_ok=True)
        for key, table in (
            ("candidates", self.candidates),
            ("excluded", self.excluded),
            ("ignored", self.ignored),
            ("sources", self.sources),
        ):
            write_table(table, paths[key])
        return paths


def companion_paths(index: str | Path) -> dict[str, Path]:
    """``index.parquet`` -> itself, ``index.excluded.parquet``, ``index.ignored.parquet`` and
    ``index.sources.parquet``."""
    path = Path(index)
    stem = path.name.removesuffix(".parquet")
    return {
        "candidates": path,
        **{
            key: path.with_name(f"{stem}.{key}.parquet")
            for key in ("excluded", "ignored", "sources")
        },
    }


def read_index(index: str | Path) -> CrawlResult:
    paths = companion_paths(index)
    return CrawlResult(
        candidates=read_table(paths["candidates"], IMAGE_SCHEMA),
        excluded=read_table(paths["excluded"], EXCLUDED_SCHEMA),
        ignored=read_table(paths["ignored"], IGNORED_SCHEMA),
        sources=read_table(paths["sources"], SOURCES_SCHEMA),
    )


def crawl(
    roots: str | Path | Sequence[str | Path],
    *,
    workers: int = 1,
    licenses: Iterable[str] | None = None,
    progress: bool = False,
) -> CrawlResult:
    """Crawl every dataset under ``roots`` (header-only; nothing is written into them).

    ``workers`` processes crawl datasets in parallel; the output does not depend on it.
    ``licenses``, when given, lists the SPDX licence ids a dataset must carry for its images to
    be candidates.
    """
    if isinstance(roots, str | Path):
        roots = [roots]
    datasets = find_datasets(roots)
    allowed = frozenset(licenses) if licenses is not None else None
    jobs = [(str(path), path.name, allowed) for path in datasets]
    results = map_ordered(
        _crawl, jobs, workers=workers, desc="crawl", unit="dataset", progress=progress
    )
    result = CrawlResult(
        candidates=table_from_records((r for d in results for r in d.candidates), IMAGE_SCHEMA),
        excluded=table_from_records((r for d in results for r in d.excluded), EXCLUDED_SCHEMA),
        ignored=table_from_records((r for d in results for r in d.ignored), IGNORED_SCHEMA),
        sources=table_from_records((d.source for d in results), SOURCES_SCHEMA),
    )
    log.info(
        "crawled %d datasets under %s: %d candidates, %d excluded, %d ignored",
        len(datasets),
        ", ".join(os.fspath(r) for r in roots),
        result.candidates.num_rows,
        result.excluded.num_rows,
        result.ignored.num_rows,
    )
    return result


def _crawl(job: tuple[str, str, frozenset[str] | None]) -> DatasetCrawl:
    return crawl_dataset(*job)
