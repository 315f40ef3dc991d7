"""Where a release is: a local copy, or a Hub dataset repo whose files are fetched on demand.

Both answer the same three questions: the bytes of a small file (the CSV, the card), where the
files the CSV names can be read here (:meth:`fetch`), and when a fetched file may go
(:meth:`release_files`). The CSV may sit at the root or one folder down, and the paths it gives
are relative to the ``OpenMind/`` folder beside it where there is one, else to its own folder
(:mod:`~openmind_data.release.layout`).

A Hub repo is pinned to one commit when it is opened, so every file comes from the same
revision however long the import runs. Only the files asked for are downloaded, in parallel,
each checked against the SHA-256 its LFS pointer records (a regular file against its git blob
id); a downloaded file is kept under the import's folder until its image is journaled, so a
killed import fetches nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import shutil
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from tqdm import tqdm

from openmind_data.crawl.normalize import normalize_license
from openmind_data.dataset_folder import parse_repo, repo_not_found
from openmind_data.errors import ConfigError, DownloadError
from openmind_data.exclusions import ExclusionReason as R
from openmind_data.release.layout import IMAGES_FOLDER, METADATA_CSV

__all__ = [
    "Fetched",
    "HubRelease",
    "LocalRelease",
    "Release",
    "open_release",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_PATHS_PER_CALL = 500


@dataclass
class Fetched:
    """Files of the release readable here: path (relative to the images folder) -> local file
    and, where the release records it, its SHA-256; and the files that could not be had, with
    an exclusion reason and a detail."""

    local: dict[str, Path] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    problems: dict[str, tuple[str, str]] = field(default_factory=dict)


class Release(Protocol):
    #: How provenance, messages and the card name it: a local copy by its folder's name (never
    #: this machine's path), a Hub repo as ``ORG/NAME@commit``.
    name: str

    def read(self, path: str) -> bytes:
        """A small file of the release by its path from the release's root."""
        ...

    @property
    def csv_path(self) -> str: ...

    def license(self) -> str | None:
        """The licence the release's card declares (SPDX where known), else None."""
        ...

    def fetch(self, paths: Sequence[str]) -> Fetched: ...

    def release_files(self, paths: Iterable[str]) -> None:
        """``paths`` (as :meth:`fetch` took them) are no longer needed here."""
        ...

    def finished(self) -> None:
        """Every fetched file is journaled: what was downloaded for the import can go."""
        ...


def open_release(source: str | Path, downloads: str | Path, *, workers: int = 8) -> Release:
    """A local copy (a folder that exists) or a Hub repo, addressed as any dataset is
    (:func:`~openmind_data.dataset_folder.parse_repo`); a Hub release downloads into
    ``downloads``."""
    if Path(source).is_dir():
        return LocalRelease(Path(source))
    repo_id, revision = parse_repo(str(source))
    return HubRelease(repo_id, revision, Path(downloads), workers=workers)


def _card_license(card: bytes) -> str | None:
    """``license`` of a card's YAML header."""
    text = card.decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    header = text[3:].split("\n---", 1)[0]
    try:
        data = yaml.safe_load(header)
    except yaml.YAMLError:
        return None
    value = data.get("license") if isinstance(data, dict) else None
    return normalize_license(value) if isinstance(value, str) else None


def _images_prefix(csv_path: str, folders: set[str]) -> str:
    """The folder the CSV's paths are relative to, as a prefix of release paths."""
    here = posixpath.dirname(csv_path)
    inner = posixpath.join(here, IMAGES_FOLDER) if here else IMAGES_FOLDER
    chosen = inner if inner in folders else here
    return f"{chosen}/" if chosen else ""


class LocalRelease:
    """A release on this machine's disk (a clone, a download, a tree the toolkit wrote)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = root.resolve().name
        found = [root / METADATA_CSV] if (root / METADATA_CSV).is_file() else []
        if not found:
            found = sorted(root.glob(f"*/{METADATA_CSV}"))
        if len(found) != 1:
            where = "none" if not found else ", ".join(str(p) for p in found)
            raise ConfigError(
                f"{root}: expected one {METADATA_CSV} at the root or one folder down, found {where}"
            )
        self._csv = found[0].relative_to(root).as_posix()
        folders = {p.relative_to(root).as_posix() for p in found[0].parent.iterdir() if p.is_dir()}
        self.prefix = _images_prefix(self._csv, folders)
        self.images = root / self.prefix

    @property
    def csv_path(self) -> str:
        return self._csv

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def license(self) -> str | None:
        card = self.root / posixpath.dirname(self._csv) / "README.md"
        return _card_license(card.read_bytes()) if card.is_file() else None

    def fetch(self, paths: Sequence[str]) -> Fetched:
        out = Fetched()
        for path in paths:
            local = self.images / path
            if local.is_file():
                out.local[path] = local
            else:
                out.problems[path] = (R.MISSING_FILE, f"{self.name} holds no {self.prefix}{path}")
        return out

    def release_files(self, paths: Iterable[str]) -> None:
        """A local copy is the user's: nothing is removed."""

    def finished(self) -> None:
        pass


class HubRelease:
    """A Hub dataset repo, pinned to the commit ``revision`` resolves to when opened."""

    def __init__(
        self, repo_id: str, revision: str | None, downloads: Path, *, workers: int = 8
    ) -> None:
        from huggingface_hub import HfApi  # noqa: PLC0415
        from huggingface_hub.errors import (  # noqa: PLC0415
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        self.repo_id = repo_id
        self.api = HfApi()
        self.downloads = downloads
        self.workers = workers
        try:
            info = self.api.dataset_info(repo_id, revision=revision)
        except RevisionNotFoundError as error:
            raise ConfigError(f"{repo_id}: no revision {revision!r}") from error
        except RepositoryNotFoundError as error:
            raise repo_not_found(repo_id) from error
        if info.sha is None:
            raise ConfigError(f"{repo_id}: the Hub gave no commit for {revision or 'main'}")
        self.commit: str = info.sha
        self.name = f"{repo_id}@{self.commit[:12]}"
        self._csv, folders = self._locate()
        self.prefix = _images_prefix(self._csv, folders)

    def _listing(self, folder: str | None) -> tuple[set[str], set[str]]:
        from huggingface_hub.hf_api import RepoFolder  # noqa: PLC0415

        files: set[str] = set()
        folders: set[str] = set()
        for entry in self.api.list_repo_tree(
            self.repo_id, path_in_repo=folder, repo_type="dataset", revision=self.commit
        ):
            (folders if isinstance(entry, RepoFolder) else files).add(entry.path)
        return files, folders

    def _locate(self) -> tuple[str, set[str]]:
        """The CSV's path (the root, else one folder down) and the folders beside it; the
        listing is one level at a time, never the repo's hundreds of thousands of files."""
        files, folders = self._listing(None)
        if METADATA_CSV in files:
            return METADATA_CSV, folders
        for folder in sorted(folders):
            inner_files, inner_folders = self._listing(folder)
            path = f"{folder}/{METADATA_CSV}"
            if path in inner_files:
                return path, inner_folders
        raise ConfigError(f"{self.name}: no {METADATA_CSV} at the root or one folder down")

    @property
    def csv_path(self) -> str:
        return self._csv

    def _download(self, path: str, *, force: bool = False) -> Path:
        import httpx  # noqa: PLC0415 - huggingface_hub's transport
        from huggingface_hub import hf_hub_download  # noqa: PLC0415

        try:
            return Path(
                hf_hub_download(
                    self.repo_id,
                    path,
                    repo_type="dataset",
                    revision=self.commit,
                    local_dir=self.downloads,
                    force_download=force,
                    tqdm_class=_Quiet,  # the import's own bar counts images, not files
                )
            )
        except (OSError, httpx.HTTPError) as error:  # the Hub's answers; the network's failures
            raise DownloadError(
                f"{self.name}: {path}: download failed ({error}); run the import again to resume"
            ) from error

    def read(self, path: str) -> bytes:
        return self._download(path).read_bytes()

    def license(self) -> str | None:
        card = posixpath.join(posixpath.dirname(self._csv), "README.md")
        from huggingface_hub.errors import EntryNotFoundError  # noqa: PLC0415

        try:
            return _card_license(self.read(card))
        except DownloadError as error:
            if isinstance(error.__cause__, EntryNotFoundError):
                return None
            raise

    def fetch(self, paths: Sequence[str]) -> Fetched:
        import httpx  # noqa: PLC0415

        out = Fetched()
        try:
            infos = self._infos([self.prefix + p for p in paths])
        except (OSError, httpx.HTTPError) as error:
            raise DownloadError(
                f"{self.name}: the file listing failed ({error}); run the import again to resume"
            ) from error
        wanted = []
        for path in paths:
            info = infos.get(self.prefix + path)
            if info is None:
                out.problems[path] = (R.MISSING_FILE, f"{self.name} holds no {self.prefix}{path}")
            else:
                wanted.append((path, info))
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for path, outcome in zip(
                [p for p, _ in wanted], pool.map(self._fetch_one, wanted), strict=True
            ):
                if isinstance(outcome, Path):
                    out.local[path] = outcome
                    sha = infos[self.prefix + path].lfs
                    if sha is not None:
                        out.sha256[path] = sha.sha256
                else:
                    out.problems[path] = outcome
        return out

    def _infos(self, paths: Sequence[str]) -> dict[str, Any]:
        from huggingface_hub.hf_api import RepoFile  # noqa: PLC0415

        found: dict[str, Any] = {}
        for start in range(0, len(paths), _PATHS_PER_CALL):
            chunk = list(paths[start : start + _PATHS_PER_CALL])
            for entry in self.api.get_paths_info(
                self.repo_id, chunk, repo_type="dataset", revision=self.commit
            ):
                if isinstance(entry, RepoFile):
                    found[entry.path] = entry
        return found

    def _fetch_one(self, item: tuple[str, Any]) -> Path | tuple[str, str]:
        path, info = item
        for attempt in range(2):
            local = self._download(self.prefix + path, force=attempt > 0)
            if _matches(local, info):
                return local
            log.warning("%s: %s does not match its checksum; downloading again", self.name, path)
        local.unlink(missing_ok=True)
        expected = info.lfs.sha256 if info.lfs is not None else info.blob_id
        return (R.CHECKSUM_MISMATCH, f"{self.name}: {self.prefix}{path} is not {expected}")

    def release_files(self, paths: Iterable[str]) -> None:
        for path in paths:
            (self.downloads / (self.prefix + path)).unlink(missing_ok=True)

    def finished(self) -> None:
        shutil.rmtree(self.downloads, ignore_errors=True)


class _Quiet(tqdm):  # type: ignore[type-arg]
    """A progress bar that never shows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _matches(local: Path, info: Any) -> bool:
    """A downloaded file against its LFS pointer's SHA-256 (or a regular file's git blob id)."""
    if info.lfs is not None:
        digest = hashlib.sha256()
        expected = info.lfs.sha256
    else:
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(b"blob %d\0" % local.stat().st_size)
        expected = info.blob_id
    for chunk in _chunks(local):
        digest.update(chunk)
    return bool(digest.hexdigest() == expected)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk
