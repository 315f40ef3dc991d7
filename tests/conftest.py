"""Shared fixtures. The synthetic collection is made once per session: it takes seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openmind_data.crawl import CrawlResult, crawl
from openmind_data.curate import BuildResult, build, make_executor
from openmind_data.masks import run_masks
from openmind_data.stages import StageResult
from openmind_data.synth import Collection, SynthConfig, synthesize


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the phantom cache inside the test session unless the caller chose one."""
    if "OPENMIND_CACHE" not in os.environ:
        os.environ["OPENMIND_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def collection(tmp_path_factory: pytest.TempPathFactory, _cache: None) -> Collection:
    """The default collection: what `make demo` synthesizes."""
    return synthesize(tmp_path_factory.mktemp("collection"), SynthConfig(seed=0), workers=2)


@pytest.fixture(scope="session")
def crawled(collection: Collection) -> CrawlResult:
    """The default collection crawled, once for every module that needs it."""
    return crawl(collection.root)


@pytest.fixture(scope="session")
def masked(
    collection: Collection, crawled: CrawlResult, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, StageResult]:
    """The default collection's anatomical images through the masks stage: (folder, result)."""
    out = tmp_path_factory.mktemp("masks")
    return out, run_masks(crawled.candidates, collection.root, out, workers=2)


@pytest.fixture(scope="session")
def built(
    collection: Collection, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BuildResult, Path]:
    """The default collection built with two local processes, with the released layout: (the
    build's result, the layout's folder). Shared by every module: copy it before changing it."""
    out = tmp_path_factory.mktemp("built") / "openmind"
    tree = out.parent / "nifti"
    executor = make_executor(workers=2)
    try:
        return build(collection.root, out, executor=executor, nifti_tree=tree), tree
    finally:
        executor.close()


@pytest.fixture(scope="session")
def tiny_config() -> SynthConfig:
    return SynthConfig(seed=7, resolution="tiny", subjects=2, quality_levels=1)


def file_digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (symlinks by their target string)."""
    import hashlib

    digests = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            digests[rel] = "link:" + str(path.readlink())
        elif path.is_file():
            digests[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests
